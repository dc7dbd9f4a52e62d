"""Registry of supported model families, one declarative spec each."""

from __future__ import annotations

from typing import Any

from ..errors import UnsupportedModelError
from .bert import BERT
from .distilbert import DISTILBERT
from .gpt2 import GPT2
from .gpt_neox import GPT_NEOX
from .llama import LLAMA
from .modernbert import MODERNBERT
from .phi3 import PHI3
from .spec import ArchitectureSpec, Fused
from .vit import VIT

SPECS: tuple[ArchitectureSpec, ...] = (BERT, DISTILBERT, LLAMA, VIT, GPT2, GPT_NEOX, PHI3, MODERNBERT)
_BY_MODEL_TYPE = {model_type: spec for spec in SPECS for model_type in spec.model_types}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_BY_MODEL_TYPE)


def base_model_type(config: Any) -> str:
    """The stock `model_type` of a config; slim configs record theirs in `oto_base_model_type`."""
    return getattr(config, "oto_base_model_type", None) or config.model_type


def get_spec(model_or_config: Any) -> ArchitectureSpec:
    """The spec for a model or config, or `UnsupportedModelError` naming the supported types."""
    config = getattr(model_or_config, "config", model_or_config)
    if not isinstance(getattr(config, "model_type", None), str):
        raise UnsupportedModelError(
            f"hf_oto works on transformers models (a PreTrainedModel with a config), got a "
            f"{type(model_or_config).__name__}; pass a model of one of these types: {', '.join(SUPPORTED_MODEL_TYPES)}."
        )
    model_type = base_model_type(config)
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"hf_oto does not support model_type {model_type!r}. Supported model types: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}. To add a family, describe it with an ArchitectureSpec "
            "in hf_oto/architectures/."
        ) from None


__all__ = ["ArchitectureSpec", "Fused", "SPECS", "SUPPORTED_MODEL_TYPES", "base_model_type", "get_spec"]
