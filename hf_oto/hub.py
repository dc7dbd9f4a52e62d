"""Save/load conventions for slim models: Auto-class registration and `load_slim`.

Importing hf_oto registers every slim config and model class with the transformers Auto classes, so
`AutoModelFor<Task>.from_pretrained(dir)` loads a slim folder without `trust_remote_code`. Without hf_oto,
the same folder loads with `trust_remote_code=True` through the `auto_map` and the copied code files.
"""

from __future__ import annotations

import json
import os
from typing import Any

import transformers
from transformers import AutoConfig
from transformers.models.auto import modeling_auto

from .architectures import SPECS
from .configuration_oto import OTO_PREFIX, oto_config_class
from .modeling_oto import OTOLoadError, oto_model_class

_AUTO_CLASSES = {
    "AutoModel": "MODEL_MAPPING_NAMES",
    "AutoModelForMaskedLM": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "AutoModelForCausalLM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForSequenceClassification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForTokenClassification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForQuestionAnswering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "AutoModelForMultipleChoice": "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES",
    "AutoModelForImageClassification": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
}
_registered = False


def register_auto_classes() -> None:
    """Register ``oto_<type>`` configs and ``OTO<Stock>`` models with the Auto classes (idempotent)."""
    global _registered
    if _registered:
        return
    for spec in SPECS:
        for model_type in spec.model_types:
            config_name = transformers.models.auto.configuration_auto.CONFIG_MAPPING_NAMES.get(model_type)
            if config_name is None:
                continue
            config_class = oto_config_class(getattr(transformers, config_name))
            AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
            for auto_name, mapping_name in _AUTO_CLASSES.items():
                stock_name = getattr(modeling_auto, mapping_name).get(model_type)
                if isinstance(stock_name, (list, tuple)):
                    stock_name = stock_name[0]
                if stock_name is None:
                    continue
                auto_class = getattr(transformers, auto_name)
                auto_class.register(config_class, oto_model_class(getattr(transformers, stock_name)), exist_ok=True)
    _registered = True


def load_slim(path: str | os.PathLike, task: str | None = None, **kwargs: Any):
    """Load a saved slim model folder with its own task class (e.g. the QA head it was saved with).

    Args:
        path: a folder written by a slim model's `save_pretrained` (or a Hub repo id).
        task: an Auto class name such as ``"AutoModelForQuestionAnswering"``; defaults to the class the
            folder was saved from.
        kwargs: passed to `from_pretrained` (``torch_dtype``, ``device_map``...).
    """
    register_auto_classes()
    config_path = os.path.join(os.fspath(path), "config.json")
    if os.path.isdir(os.fspath(path)):
        if not os.path.isfile(config_path):
            raise OTOLoadError(f"{path} has no config.json; it is not a saved model folder.")
        with open(config_path) as handle:
            config = json.load(handle)
        if not str(config.get("model_type", "")).startswith("oto_"):
            raise OTOLoadError(
                f"{path} holds a {config.get('model_type')!r} model, not an hf_oto slim model; load it with "
                "transformers' AutoModel classes, or slim it first with hf_oto.slim_model."
            )
        architecture = (config.get("architectures") or [None])[0]
    else:  # a Hub repo id: its config names the class it was saved from
        architecture = (getattr(AutoConfig.from_pretrained(path), "architectures", None) or [None])[0]
    if task is not None:
        return getattr(transformers, task).from_pretrained(path, **kwargs)
    if architecture and architecture.startswith(OTO_PREFIX):
        stock = getattr(transformers, architecture[len(OTO_PREFIX) :], None)
        if stock is not None:
            return oto_model_class(stock).from_pretrained(path, **kwargs)
    return transformers.AutoModel.from_pretrained(path, **kwargs)
