"""The exception tree: messages name where the problem is; the tree matches its docstring."""

from __future__ import annotations

import inspect

from atoll import errors


def test_input_error_names_source_row_column() -> None:
    err = errors.InputError("not a phone number", source="orders.csv", row=17, column="phone")
    assert str(err) == "orders.csv row 17, column 'phone': not a phone number"
    assert (err.source, err.row, err.column, err.reason) == (
        "orders.csv",
        17,
        "phone",
        "not a phone number",
    )
    assert str(errors.InputError("bad", column="x")) == "column 'x': bad"
    assert str(errors.InputError("bad")) == "bad"


def test_every_error_derives_from_atoll_error_and_is_drawn() -> None:
    doc = errors.__doc__ or ""
    for name, obj in vars(errors).items():
        if (
            inspect.isclass(obj)
            and issubclass(obj, Exception)
            and obj.__module__ == errors.__name__
        ):
            assert issubclass(obj, errors.AtollError)
            assert name in doc, f"{name} missing from the tree drawn in atoll.errors"
            assert name in errors.__all__


def test_subclass_relationships() -> None:
    assert issubclass(errors.SchemaError, errors.InputError)
    assert issubclass(errors.IdentifierError, errors.InputError)
    assert issubclass(errors.IntegrityError, errors.DataError)
    assert issubclass(errors.RemoteProtocolError, errors.ProtocolError)
    assert issubclass(errors.DecryptionError, errors.CryptoError)
    assert str(errors.DecryptionError()) == "decryption failed"
