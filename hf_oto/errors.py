"""Exceptions raised by hf_oto. Each message names the problem and what to change.

`OTOLoadError` and `ZeroInvarianceError` are defined in the self-contained modeling file (they travel
with saved models) and re-exported here.
"""

from .modeling_oto import OTOLoadError, ZeroInvarianceError


class UnsupportedModelError(ValueError):
    """The model's family has no spec in `hf_oto.architectures`."""


__all__ = ["OTOLoadError", "UnsupportedModelError", "ZeroInvarianceError"]
