"""Self-referential weight matrix: the layer (layer.py) and its ops (ops/)."""

from .layer import SRWMLayer
from .ops import srwm, srwm_naive

__all__ = ["SRWMLayer", "srwm", "srwm_naive"]
