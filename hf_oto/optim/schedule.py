"""HSPG's schedule as pure functions of the step clock: stage, switch step, deadline, quotas and shrink.

The clock ``t`` counts `step()` calls (and skipped steps). Stage 1 (subgradient) runs for ``t < n_p``, stage 2
(half-space) from ``n_p`` on. In target mode the last projection happens at ``t_last = ⌊deadline·T⌋ − 1``
and exactly ``⌊s·N⌋`` groups are zero from then on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def switch_step(n_p: int | float, total_steps: int | None) -> int | None:
    """``n_p`` in steps: the first step of stage 2 (None while a fractional ``n_p`` has no total to scale)."""
    if isinstance(n_p, int):
        return n_p
    if total_steps is None:
        return None
    return int(math.floor(n_p * total_steps))


def deadline_step(projection_deadline: float, total_steps: int) -> int:
    """``t_last``: the step of the last projection, ``⌊deadline·T⌋ − 1`` (at least 0)."""
    return max(int(math.floor(round(projection_deadline * total_steps, 9))) - 1, 0)


def target_zero_groups(target_group_sparsity: float, num_prunable: int) -> int:
    """``K = ⌊s·N⌋``: how many of the ``N`` prunable groups end at zero."""
    return int(math.floor(round(target_group_sparsity * num_prunable, 9)))


def stage(t: int, switch: int | None) -> int:
    """1 before the switch step (subgradient stage), 2 from it on (half-space stage)."""
    return 2 if switch is not None and t >= switch else 1


def shrink_rate(t: int, switch: int | None, deadline: int | None) -> float:
    """``1 − c_t = 1/(t_last − t + 1)`` inside the projection window, else 0 (for reports)."""
    if deadline is None or switch is None or not switch <= t <= deadline:
        return 0.0
    return 1.0 / (deadline - t + 1)


def candidate_shrink(t: int, deadline: int) -> tuple[float, bool]:
    """The shrink ``c_t = 1 − 1/(t_last − t + 1)`` of a candidate's carried part at step `t`, and whether `t`
    is the final projection step (``c_t = 0``: every remaining candidate is projected)."""
    remaining = max(deadline - t + 1, 1)
    return 1.0 - 1.0 / remaining, remaining == 1


def structure_quotas(counts: Tensor, sparsity: float) -> Tensor:
    """Per-structure zero-group quotas that sum to exactly ``⌊s·N⌋`` (``N = Σ counts``).

    Each structure k gets ``⌊s·N_k⌋``; the few groups left over go to the structures with the largest
    fractional remainders (ties: first structure). Pruning the same fraction of heads and of neurons keeps
    saliencies compared within one kind of group, where norms are comparable.
    """
    counts = counts.double().cpu()
    exact = counts * sparsity
    quotas = torch.floor(exact + 1e-9)
    leftover = int(math.floor(round(sparsity * float(counts.sum()), 9)) - quotas.sum().item())
    if leftover > 0:
        order = torch.sort(-(exact - quotas), stable=True).indices[:leftover]
        quotas[order] += 1
    return quotas.long()


def select_candidates(
    score: Tensor, active: Tensor, zero: Tensor, structure: Tensor, quotas: Tensor, num_structures: int
) -> Tensor:
    """This step's candidates: per structure, the active groups of smallest `score` still needed to reach
    its quota (stable sort: ties go to the lower group index, identically on every process).

    `active`, `zero`: bool per group (zero is restricted to prunable groups); `structure`: each group's
    structure index.
    """
    zeros = torch.bincount(structure[zero], minlength=num_structures)
    need = (quotas.to(zeros.device) - zeros).clamp(min=0)
    saliency = torch.where(active, score, torch.full_like(score, math.inf))
    order = torch.sort(saliency, stable=True).indices
    structure_sorted = structure[order]
    one_hot = torch.nn.functional.one_hot(structure_sorted, num_structures)
    rank_in_structure = (one_hot.cumsum(0) - 1).gather(1, structure_sorted[:, None]).squeeze(1)
    chosen_sorted = rank_in_structure < need[structure_sorted]
    candidates = torch.zeros_like(active)
    candidates[order] = chosen_sorted
    return candidates & active
