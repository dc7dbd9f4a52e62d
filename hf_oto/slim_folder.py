"""Reading a saved slim folder's `config.json`: the one place that checks it is an hf_oto slim model."""

from __future__ import annotations

import json
import os
from typing import Any

from .configuration_oto import oto_fields_problem
from .errors import OTOLoadError


def read_config_json(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a saved model folder (any model), or `OTOLoadError` saying in one line why `folder`
    is not one (missing, not a folder, no or unreadable config.json, not a JSON object)."""
    folder = os.fspath(folder)
    if not os.path.exists(folder):
        raise OTOLoadError(f"{folder} does not exist")
    if not os.path.isdir(folder):
        raise OTOLoadError(f"{folder} is not a folder; pass the folder that save_model / save_pretrained wrote")
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise OTOLoadError(f"{folder} has no config.json; it is not a saved model folder")
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OTOLoadError(
            f"{path} is not valid JSON ({error}); the file is corrupt: restore it or save the model again"
        ) from None
    if not isinstance(config, dict):
        raise OTOLoadError(f"{path} is not a model config (expected a JSON object)")
    return config


def read_slim_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a saved hf_oto slim model, or `OTOLoadError` saying in one line why `folder` is not
    one (`read_config_json`'s reasons, a stock model, missing or inconsistent hf_oto fields)."""
    folder = os.fspath(folder)
    config = read_config_json(folder)
    path = os.path.join(folder, "config.json")
    model_type = str(config.get("model_type", ""))
    if not model_type.startswith("oto_"):
        raise OTOLoadError(
            f"{folder} holds a {model_type or 'unknown'!r} model, not an hf_oto slim model "
            "(load it with transformers' AutoModel classes; train it with OTOTrainer, or slim it with hf_oto.slim_model)"
        )
    problem = oto_fields_problem(config)
    if problem is not None:
        raise OTOLoadError(f"{path}: {problem}")
    return config
