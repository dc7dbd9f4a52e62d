"""Save/load conventions for slim models: Auto-class registration and `load_slim`.

Importing hf_oto registers every slim config and model class with the transformers Auto classes, so
`AutoModelFor<Task>.from_pretrained(dir)` loads a slim folder without `trust_remote_code`. Without hf_oto,
the same folder loads with `trust_remote_code=True` through the `auto_map` and the copied code files.

Registration is cheap: configs and models are registered by name, and each class is built (importing its
stock configuration or modeling file, some of which cost seconds) the first time an Auto class looks it up.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import transformers
from transformers import AutoConfig
from transformers.models.auto import configuration_auto, modeling_auto

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


class _Pending:
    """One registration not built yet: `name` is the key's name (a model type, or a config class name)."""

    def __init__(self, name: str, key: Callable[[], Any], value: Callable[[], type]) -> None:
        self.name, self.key, self.value = name, key, value


class _RegisteredOnLookup(dict):
    """The table of registrations (`_extra_content`) of one transformers Auto mapping, holding `_Pending`
    entries besides built ones. A pending entry is built when a lookup names it, or when the whole table is
    listed; looking up a key that only shares its name (a remote-code copy of a class) finds nothing."""

    def __init__(self, entries: dict) -> None:
        super().__init__(entries)
        self.pending: dict[str, _Pending] = {}

    def _build(self, key: Any) -> None:
        name = key if isinstance(key, str) else getattr(key, "__name__", None)
        entry = self.pending.get(name) if isinstance(name, str) else None
        if entry is None or (not isinstance(key, str) and entry.key() is not key):
            return  # not pending, or a different class of the same name (a remote-code copy)
        del self.pending[name]
        super().__setitem__(entry.key(), entry.value())

    def _build_all(self) -> None:
        for entry in list(self.pending.values()):
            self._build(entry.key())

    def __contains__(self, key: Any) -> bool:
        self._build(key)
        return super().__contains__(key)

    def __getitem__(self, key: Any):
        self._build(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._build(key)
        return super().get(key, default)

    def keys(self):
        self._build_all()
        return super().keys()

    def values(self):
        self._build_all()
        return super().values()

    def items(self):
        self._build_all()
        return super().items()

    def __iter__(self):
        self._build_all()
        return super().__iter__()

    def __len__(self) -> int:
        return super().__len__() + len(self.pending)


def _register_pending(mapping: Any, entry: _Pending, register_built: Callable[[Any, type], None]) -> None:
    """Add `entry` to `mapping`'s registrations, or register it built where transformers has no such table."""
    table = getattr(mapping, "_extra_content", None)
    if not isinstance(table, dict):
        register_built(entry.key(), entry.value())
        return
    if not isinstance(table, _RegisteredOnLookup):
        table = mapping._extra_content = _RegisteredOnLookup(table)
    if entry.name not in {getattr(key, "__name__", key) for key in dict.keys(table)}:
        table.pending[entry.name] = entry


def register_auto_classes() -> None:
    """Register ``oto_<type>`` configs and ``OTO<Stock>`` models with the Auto classes (idempotent).

    Each class is built when an Auto class first looks it up, so registering imports no modeling file."""
    global _registered
    if _registered:
        return
    # every stock type, not only the hand-written families: any family whose inferred spec verifies can be slim
    for model_type, config_name in list(configuration_auto.CONFIG_MAPPING_NAMES.items()):
        if model_type.startswith("oto_"):
            continue

        def config_class(config_name: str = config_name) -> type:
            return oto_config_class(getattr(transformers, config_name))

        oto_type = "oto_" + model_type
        _register_pending(
            configuration_auto.CONFIG_MAPPING,
            _Pending(oto_type, lambda oto_type=oto_type: oto_type, config_class),
            lambda key, value: AutoConfig.register(key, value, exist_ok=True),
        )
        for auto_name, mapping_name in _AUTO_CLASSES.items():
            stock_name = getattr(modeling_auto, mapping_name).get(model_type)
            if isinstance(stock_name, (list, tuple)):
                stock_name = stock_name[0]
            if stock_name is None:
                continue
            auto_class = getattr(transformers, auto_name)
            _register_pending(
                auto_class._model_mapping,
                _Pending(
                    OTO_PREFIX + config_name,
                    config_class,
                    lambda stock_name=stock_name: oto_model_class(getattr(transformers, stock_name)),
                ),
                lambda key, value, auto_class=auto_class: auto_class.register(key, value, exist_ok=True),
            )
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
