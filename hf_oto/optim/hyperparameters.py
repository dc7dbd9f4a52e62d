"""The one check of the OTO hyperparameters, shared by `HSPG` and `OTOTrainingArguments`.

`hyperparameter_problems` takes values under HSPG's argument names and returns one phrase per problem,
naming each value by the caller's name for it (``lam`` for HSPG, ``oto_lambda`` for the Trainer), so both
front doors refuse the same inputs with the same words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .saliency import SALIENCIES, Saliency

VARIANTS = ("adamw", "sgd")
"""HSPG's base directions: AdamW moments, or SGD with heavy-ball momentum."""
MAX_PROJECTION_DEADLINE = 0.8
"""The last projection happens by this fraction of training: at least 20% of the steps remain to adapt."""
DEFAULT_PROJECTION_DEADLINE = MAX_PROJECTION_DEADLINE
"""By default the target is reached as late as allowed: the most steps to choose the groups well."""
DEFAULT_SALIENCY = "taylor"


def is_number(value: Any) -> bool:
    """A real int or float (bool and numeric strings are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite_at_least(value: Any, low: float, strict: bool) -> bool:
    return is_number(value) and math.isfinite(value) and (value > low if strict else value >= low)


def _in_unit_interval(value: Any) -> bool:
    """In [0, 1)."""
    return is_number(value) and 0.0 <= value < 1.0


def n_p_from_number(value: Any) -> Any:
    """``n_p`` as HSPG takes it: a float fraction in (0, 1), or an int number of whole steps (others unchanged,
    for `hyperparameter_problems` to refuse)."""
    if not is_number(value) or not math.isfinite(value):
        return value
    if 0.0 < value < 1.0:
        return float(value)
    if value >= 0 and float(value).is_integer():
        return int(value)
    return value


def _n_p_ok(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return value >= 0
    return isinstance(value, float) and 0.0 < value < 1.0


def _betas_problem(value: Any) -> str | None:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        return "must be a pair (beta1, beta2)"
    if not all(_in_unit_interval(beta) for beta in value):
        return "must both be in [0, 1)"
    return None


_RULES: dict[str, tuple[Any, str]] = {
    "lr": (lambda v: _finite_at_least(v, 0.0, strict=True), "must be a finite number > 0"),
    "group_lr": (lambda v: _finite_at_least(v, 0.0, strict=False), "must be a finite number ≥ 0"),
    "lam": (lambda v: _finite_at_least(v, 0.0, strict=False), "must be a finite number ≥ 0"),
    "epsilon": (_in_unit_interval, "must be a number in [0, 1)"),
    "n_p": (_n_p_ok, "must be an int number of steps (≥ 0) or a float fraction in (0, 1) of the total steps"),
    "eps": (lambda v: _finite_at_least(v, 0.0, strict=True), "must be a finite number > 0"),
    "weight_decay": (lambda v: _finite_at_least(v, 0.0, strict=False), "must be a finite number ≥ 0"),
    "momentum": (_in_unit_interval, "must be a number in [0, 1)"),
    "target_group_sparsity": (lambda v: v is None or _in_unit_interval(v), "must be None or a number in [0, 1)"),
    "projection_deadline": (
        lambda v: is_number(v) and 0.0 < v <= MAX_PROJECTION_DEADLINE,
        f"must be in (0, {MAX_PROJECTION_DEADLINE}]: at least {1 - MAX_PROJECTION_DEADLINE:.0%} of the steps must "
        "remain after the last projection",
    ),
    "variant": (lambda v: v in VARIANTS, f"must be one of {list(VARIANTS)}"),
    "saliency": (
        lambda v: isinstance(v, Saliency) or (isinstance(v, str) and v in SALIENCIES),
        f"must be one of {sorted(SALIENCIES)} or a hf_oto.optim.Saliency instance",
    ),
}


def hyperparameter_problems(values: Mapping[str, Any], names: Mapping[str, str] | None = None) -> list[str]:
    """One phrase per invalid value in `values` (keys: HSPG's argument names; ``group_lr`` is a param group's
    lr, which may be 0). `names` maps a key to the name the caller shows, e.g. ``{"lam": "oto_lambda"}``."""
    names = names or {}
    problems = []
    for key, value in values.items():
        shown = names.get(key, "lr" if key == "group_lr" else key)
        if key == "betas":
            problem = _betas_problem(value)
            if problem:
                problems.append(f"{shown}={value!r} {problem}")
            continue
        check, requirement = _RULES[key]
        if not check(value):
            problems.append(f"{shown}={value!r} {requirement}")
    return problems


def check_hyperparameters(values: Mapping[str, Any], names: Mapping[str, str] | None = None, where: str = "") -> None:
    """Raise `ValueError` listing every problem `hyperparameter_problems` finds (prefixed with `where`)."""
    problems = hyperparameter_problems(values, names)
    if problems:
        raise ValueError(where + "; ".join(problems) + ".")
