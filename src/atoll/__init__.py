"""Atoll: a privacy-preserving marketing clean room."""

__version__ = "0.1.0"
