"""DeltaNet (delta-rule fast weight programmer): the layer and its naive op."""

from .layer import DeltaNetLayer
from .ops import deltanet_naive

__all__ = ["DeltaNetLayer", "deltanet_naive"]
