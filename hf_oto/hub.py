"""Save/load conventions for slim models: Auto-class registration and `load_slim`.

Importing hf_oto registers every slim config and model class with the transformers Auto classes, so
`AutoModelFor<Task>.from_pretrained(dir)` loads a slim folder without `trust_remote_code`. Without hf_oto,
the same folder loads with `trust_remote_code=True` through the `auto_map` and the copied code files.
"""

from __future__ import annotations

import os
import re
from typing import Any

import transformers
from transformers import AutoConfig
from transformers.models.auto import modeling_auto

from .architectures import SPECS
from .configuration_oto import OTO_PREFIX, oto_config_class
from .modeling_oto import OTOLoadError, oto_model_class
from .slim_folder import read_slim_config

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


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def has_tokenizer(folder: str | os.PathLike) -> bool:
    """Whether a local model folder holds tokenizer files (as `tokenizer.save_pretrained` writes them)."""
    return any(os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_FILES)


def load_slim(path: str | os.PathLike, task: str | None = None, **kwargs: Any):
    """Load a saved slim model folder with its own task class (e.g. the QA head it was saved with).

    Args:
        path: a folder written by a slim model's `save_pretrained` (or a Hub repo id).
        task: an Auto class name such as ``"AutoModelForQuestionAnswering"``; defaults to the class the
            folder was saved from.
        kwargs: passed to `from_pretrained` (``torch_dtype``, ``device_map``...).
    """
    register_auto_classes()
    local = os.fspath(path)
    if os.path.isdir(local):
        config = read_slim_config(local)
        architecture = (config.get("architectures") or [None])[0]
    elif os.path.exists(local) or not _REPO_ID.fullmatch(local):
        problem = "is not a folder" if os.path.exists(local) else "does not exist"
        raise OTOLoadError(
            f"{local} {problem}: pass the folder that save_pretrained / save_model wrote, or a Hub repo id "
            "such as 'user/model'."
        )
    else:  # a Hub repo id: its config names the class it was saved from
        architecture = (getattr(AutoConfig.from_pretrained(path), "architectures", None) or [None])[0]
    if task is not None:
        return getattr(transformers, task).from_pretrained(path, **kwargs)
    if architecture and architecture.startswith(OTO_PREFIX):
        stock = getattr(transformers, architecture[len(OTO_PREFIX) :], None)
        if stock is not None:
            return oto_model_class(stock).from_pretrained(path, **kwargs)
    return transformers.AutoModel.from_pretrained(path, **kwargs)
