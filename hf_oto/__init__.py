"""hf_oto: Only-Train-Once structured pruning for Hugging Face Transformers.

Train once with HSPG, drive whole attention heads and FFN neurons to exactly zero, and save a physically
slimmer model in Hub format.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .accounting import SlimReport, model_shape
from .architectures import SUPPORTED_MODEL_TYPES, ArchitectureSpec, get_spec
from .errors import OTOLoadError, UnsupportedModelError, ZeroInvarianceError
from .gather import gather_full_model
from .groups import Group, GroupBlock, GroupSet, ParamSlice, build_groups
from .hub import load_slim, register_auto_classes
from .import_hooks import call_after_import
from .optim import HSPG, NonFiniteGradientError, Saliency
from .slim import slim_model

if TYPE_CHECKING:
    from .pipelines import QuestionAnsweringPipeline
    from .trainer import OTOTrainer, OTOTrainingArguments

# Imported on first use: each pulls in seconds of transformers (Trainer, datasets, the pipelines package).
_LAZY = {
    "OTOTrainer": "trainer",
    "OTOTrainingArguments": "trainer",
    "QuestionAnsweringPipeline": "pipelines",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _register_pipeline(_transformers_pipelines: Any) -> None:
    importlib.import_module(".pipelines", __name__)  # which registers the pipeline (also when it imported us)


register_auto_classes()
call_after_import("transformers.pipelines", _register_pipeline)

__version__ = "0.1.0"

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "ArchitectureSpec",
    "Group",
    "GroupBlock",
    "GroupSet",
    "HSPG",
    "NonFiniteGradientError",
    "OTOLoadError",
    "OTOTrainer",
    "OTOTrainingArguments",
    "ParamSlice",
    "QuestionAnsweringPipeline",
    "Saliency",
    "SlimReport",
    "UnsupportedModelError",
    "ZeroInvarianceError",
    "build_groups",
    "gather_full_model",
    "get_spec",
    "load_slim",
    "model_shape",
    "register_auto_classes",
    "slim_model",
]
