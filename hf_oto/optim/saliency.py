"""Saliency: how HSPG's target mode ranks active groups for removal (the lowest scores go first).

A saliency is a small strategy object passed to `HSPG(saliency=...)`, by name or as an instance. To write
your own, subclass `Saliency`: `scores` ranks the groups; a saliency that learns from gradients also sets
`observes_gradients` and implements `observe`, which HSPG feeds with each step's per-group ``x_gᵀ∇_g f``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

TAYLOR_EMA_DECAY = 0.99
"""Decay of the Taylor-importance moving average: a horizon of ~100 steps, smoothing per-batch noise."""
TAYLOR_WARMUP_STEPS = 200
"""The average starts this many steps before ``n_p`` (its first use): older terms would weigh < 14%."""


class Saliency:
    """Base class: a per-group removal score, plus optional state learned from gradients."""

    name = "custom"
    observes_gradients = False
    """True when `observe` must be fed with per-group ``x_gᵀ∇_g f`` (costs one grouped dot product per step)."""

    def bind(self, group_sizes: Tensor) -> None:
        """Prepare per-group state for the optimizer's groups (called by HSPG once): `group_sizes` is the
        float32 number of entries of each group, flat, on the parameters' device."""

    def wants_observation(self, step: int, switch: int, deadline: int | None) -> bool:
        """Whether HSPG should call `observe` at `step` (switch step `switch`, last projection `deadline`)."""
        return False

    def observe(self, dots: Tensor) -> None:
        """Fold this step's per-group ``x_gᵀ∇_g f`` (flat, float32; 0 for zero and unprunable groups) in."""

    def scores(self, norms_squared: Tensor) -> Tensor:
        """Per-group score, float32 ``(N,)``, from the squared group norms at the current point (flat); lower
        is removed first."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MagnitudeSaliency(Saliency):
    """The size-normalized group norm ``‖x_g‖/√|g|``: small groups by weight go first."""

    name = "magnitude"

    def __init__(self) -> None:
        self.inv_sqrt_size = torch.zeros(0)

    def bind(self, group_sizes: Tensor) -> None:
        self.inv_sqrt_size = group_sizes.rsqrt()

    def scores(self, norms_squared: Tensor) -> Tensor:
        return norms_squared.sqrt() * self.inv_sqrt_size


class TaylorSaliency(Saliency):
    """First-order Taylor estimate of the loss change when a group is removed: ``EMA_t |x_gᵀ∇_g f|``.

    The moving average (decay `TAYLOR_EMA_DECAY`) is updated with each step's gradient from
    `TAYLOR_WARMUP_STEPS` before ``n_p`` to the last projection; zero groups contribute 0.
    """

    name = "taylor"
    observes_gradients = True

    def __init__(self, decay: float = TAYLOR_EMA_DECAY, warmup_steps: int = TAYLOR_WARMUP_STEPS) -> None:
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.importance = torch.zeros(0)

    def bind(self, group_sizes: Tensor) -> None:
        self.importance = torch.zeros(len(group_sizes), device=group_sizes.device)

    def wants_observation(self, step: int, switch: int, deadline: int | None) -> bool:
        return deadline is not None and switch - self.warmup_steps <= step <= deadline

    def observe(self, dots: Tensor) -> None:
        self.importance.lerp_(dots.abs(), 1.0 - self.decay)

    def scores(self, norms_squared: Tensor) -> Tensor:
        return self.importance

    def state_dict(self) -> dict[str, Any]:
        return {"importance": self.importance.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "importance" in state:
            importance = state["importance"]
            self.importance = importance.to(device=self.importance.device, dtype=torch.float32).clone()

    def __repr__(self) -> str:
        return f"TaylorSaliency(decay={self.decay}, warmup_steps={self.warmup_steps})"


SALIENCIES: dict[str, type[Saliency]] = {"taylor": TaylorSaliency, "magnitude": MagnitudeSaliency}
"""The saliencies that can be chosen by name (`OTOTrainingArguments.oto_saliency`, ``HSPG(saliency="...")``)."""


def make_saliency(saliency: str | Saliency) -> Saliency:
    """A fresh `Saliency` for a name in `SALIENCIES`, or the given instance."""
    if isinstance(saliency, Saliency):
        return saliency
    if isinstance(saliency, str) and saliency in SALIENCIES:
        return SALIENCIES[saliency]()
    raise ValueError(
        f"saliency={saliency!r} is unknown; choose one of {sorted(SALIENCIES)} or pass a hf_oto.optim.Saliency instance."
    )
