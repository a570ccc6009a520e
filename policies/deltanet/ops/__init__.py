"""DeltaNet ops (naive reference only)."""

from .naive import deltanet_naive, phi

__all__ = ["deltanet_naive", "phi"]
