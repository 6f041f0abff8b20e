"""The spu engine (SecretFlow PSI in a separate interpreter); skipped without ATOLL_SPU_PYTHON."""

from __future__ import annotations

import pyarrow as pa
import pytest

from atoll.errors import ConfigError
from atoll.matching import PsiOptions, get_engine, psi_party, run_local
from atoll.matching.spu import SpuEngine, spu_unavailable_reason

REASON = spu_unavailable_reason()
needs_spu = pytest.mark.skipif(REASON is not None, reason=f"spu engine unavailable: {REASON}")

LEFT = pa.table({"phone": [f"1380013{i:04d}" for i in range(0, 300)] + ["bad"]})
RIGHT = pa.table({"phone": [f"1380013{i:04d}" for i in range(200, 500)]})


def _jobs(opts: PsiOptions) -> tuple[object, object]:
    return (
        psi_party(LEFT, "phone", role="receiver", options=opts),
        psi_party(RIGHT, "phone", role="sender", options=opts),
    )


def test_engine_names_and_unsupported_modes() -> None:
    assert get_engine("spu").name == "spu"
    assert get_engine("spu-kkrt").name == "spu-kkrt"
    with pytest.raises(ConfigError, match="unknown spu protocol"):
        SpuEngine("bogus")
    with pytest.raises(ConfigError, match="plain matching only"):
        SpuEngine().check({"protocol": "labeled-psi"})
    with pytest.raises(ConfigError, match="cardinality"):
        SpuEngine().check({"protocol": "ecdh-psi", "cardinality_only": True})


def test_unset_interpreter_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATOLL_SPU_PYTHON", raising=False)
    assert "ATOLL_SPU_PYTHON is not set" in (spu_unavailable_reason() or "")
    a, b = _jobs(PsiOptions(buckets=2, engine="spu"))
    with pytest.raises(ConfigError, match="not available"):
        run_local(a, b, engine=SpuEngine())  # type: ignore[arg-type]


@needs_spu
@pytest.mark.parametrize("protocol", ["rr22", "kkrt", "ecdh"])
def test_spu_matches_like_the_builtin_engine(protocol: str) -> None:
    name = "spu" if protocol == "rr22" else f"spu-{protocol}"
    a, b = _jobs(PsiOptions(buckets=2, engine=name, reveal="both"))
    mine, theirs = run_local(a, b, engine=get_engine(name))  # type: ignore[arg-type]
    a2, b2 = _jobs(PsiOptions(buckets=2, reveal="both"))
    ref_mine, ref_theirs = run_local(a2, b2)  # type: ignore[arg-type]
    assert mine.matched_rows.tolist() == ref_mine.matched_rows.tolist() == list(range(200, 300))
    assert theirs.matched_rows.tolist() == ref_theirs.matched_rows.tolist()
    assert mine.engine == name
