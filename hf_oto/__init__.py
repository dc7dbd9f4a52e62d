"""hf_oto: Only-Train-Once structured pruning for Hugging Face Transformers.

Train once with HSPG, drive whole attention heads and FFN neurons to exactly zero, and save a physically
slimmer model in Hub format.
"""

from .accounting import SlimReport, model_shape
from .architectures import SUPPORTED_MODEL_TYPES, ArchitectureSpec, get_spec
from .errors import OTOLoadError, UnsupportedModelError, ZeroInvarianceError
from .groups import Group, GroupBlock, GroupSet, ParamSlice, build_groups
from .hub import load_slim, register_auto_classes
from .optim import HSPG, NonFiniteGradientError, Saliency
from .pipelines import QuestionAnsweringPipeline, register_question_answering_pipeline
from .slim import slim_model
from .trainer import OTOTrainer, OTOTrainingArguments

register_auto_classes()
register_question_answering_pipeline()

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
    "get_spec",
    "load_slim",
    "model_shape",
    "register_auto_classes",
    "slim_model",
]
