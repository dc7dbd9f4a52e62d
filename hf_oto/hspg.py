"""Moved: HSPG now lives in `hf_oto.optim` (this module keeps the old import path working)."""

from .optim.hspg import HSPG, NonFiniteGradientError

__all__ = ["HSPG", "NonFiniteGradientError"]
