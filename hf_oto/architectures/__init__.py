"""Registry of supported model families, one declarative spec each."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import UnsupportedModelError
from .bert import BERT
from .distilbert import DISTILBERT
from .gpt2 import GPT2
from .gpt_neox import GPT_NEOX
from .inference import candidate_specs, refusal_reason
from .llama import LLAMA
from .modernbert import MODERNBERT
from .mpnet import MPNET
from .phi3 import PHI3
from .spec import ArchitectureSpec, Fused
from .vit import VIT

SPECS: tuple[ArchitectureSpec, ...] = (BERT, DISTILBERT, LLAMA, MPNET, VIT, GPT2, GPT_NEOX, PHI3, MODERNBERT)
_BY_MODEL_TYPE = {model_type: spec for spec in SPECS for model_type in spec.model_types}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_BY_MODEL_TYPE)


def base_model_type(config: Any) -> str:
    """The stock `model_type` of a config; slim configs record theirs in `oto_base_model_type`."""
    return getattr(config, "oto_base_model_type", None) or config.model_type


_INFERRED: dict[type, ArchitectureSpec | UnsupportedModelError] = {}
"""Per model class: its inferred spec, or why inference failed (inference runs once per class)."""


def hand_written_spec(model_type: str) -> ArchitectureSpec | None:
    """The hand-written spec covering `model_type`, if any."""
    return _BY_MODEL_TYPE.get(model_type)


def _first_verified(model: nn.Module, candidates: list[ArchitectureSpec]) -> ArchitectureSpec:
    """The one candidate, or the first whose attention groups verify on a random copy (a fused projection's row
    layout cannot be read off its shape); the first when none does (its verification then says why)."""
    if len(candidates) == 1:
        return candidates[0]
    from ..verification import check_structure  # verification slims models: imported on use

    return next((spec for spec in candidates if check_structure(model, spec, "attention") is None), candidates[0])


def get_spec(model_or_config: Any) -> ArchitectureSpec:
    """The spec for a model: hand-written for its `model_type`, else inferred from the model (unverified: see
    `hf_oto.verification`). A slim model's spec is rebuilt from the layout saved in its config.

    Raises `UnsupportedModelError` naming the problem."""
    config = getattr(model_or_config, "config", model_or_config)
    if not isinstance(getattr(config, "model_type", None), str):
        raise UnsupportedModelError(
            f"hf_oto works on transformers models (a PreTrainedModel with a config), got a "
            f"{type(model_or_config).__name__}; pass a model such as one of: {', '.join(SUPPORTED_MODEL_TYPES)}."
        )
    model_type = base_model_type(config)
    spec = hand_written_spec(model_type)
    if spec is not None:
        return spec
    layout = getattr(config, "oto_layout", None)
    if isinstance(layout, dict):
        return ArchitectureSpec.from_layout(model_type, layout)
    if not isinstance(model_or_config, nn.Module):
        raise UnsupportedModelError(
            f"model_type {model_type!r} has no hand-written spec (those: {', '.join(SUPPORTED_MODEL_TYPES)}); "
            "hf_oto infers one from the model itself: pass the model, not its config."
        )
    key = type(model_or_config)
    if key not in _INFERRED:
        try:
            _INFERRED[key] = _first_verified(model_or_config, candidate_specs(model_or_config))
        except UnsupportedModelError as error:
            _INFERRED[key] = error
    found = _INFERRED[key]
    if isinstance(found, UnsupportedModelError):
        raise UnsupportedModelError(str(found))
    return found


__all__ = [
    "ArchitectureSpec",
    "Fused",
    "SPECS",
    "SUPPORTED_MODEL_TYPES",
    "base_model_type",
    "get_spec",
    "hand_written_spec",
    "refusal_reason",
]
