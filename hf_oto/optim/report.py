"""The sparsity report: what a `GroupSet` looks like under an optimizer's zero mask, as plain numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .. import groups as group_module  # a module import: hf_oto.groups itself imports this package

if TYPE_CHECKING:
    from ..groups import GroupSet


def norm_summary(values: Tensor) -> dict[str, float | None]:
    """Count, min, max, mean and median of a 1-D tensor (None entries when it is empty)."""
    if values.numel() == 0:
        return {"count": 0, "min": None, "max": None, "mean": None, "median": None}
    return {
        "count": int(values.numel()),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "median": float(values.median()),
    }


def host_snapshot(
    groups: GroupSet, zero: Tensor, prunable: Tensor, candidates: Tensor
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Group norms, zero mask, prunable mask and candidate count on the host, in one device-to-host copy."""
    if not len(groups):
        empty = torch.zeros(0, dtype=torch.bool)
        return torch.zeros(0), empty, empty, 0
    norms = groups.norms().to(zero.device)
    packed = torch.stack([norms, zero.float(), prunable.float()])
    flat = torch.cat([packed.flatten(), candidates.float().reshape(1)]).cpu()
    n = len(groups)
    return flat[:n], flat[n : 2 * n].bool(), flat[2 * n : 3 * n].bool(), int(flat[-1])


def per_layer_counts(groups: GroupSet, zero: Tensor) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Per layer and structure, zero and total groups (query heads and KV groups for attention), and totals."""
    per_layer: dict[Any, dict[str, Any]] = {}
    totals = {"zero_heads": 0, "zero_kv_groups": 0, "zero_ffn_neurons": 0}
    for block, (start, end) in zip(groups.blocks, groups.block_ranges(), strict=True):
        count = int(zero[start:end].sum())
        row = per_layer.setdefault(block.layer, {"layer": block.layer})
        if block.structure == group_module.ATTENTION:
            entry = row.setdefault(
                group_module.ATTENTION, {"zero_kv_groups": 0, "kv_groups": 0, "zero_query_heads": 0, "query_heads": 0}
            )
            entry["zero_kv_groups"] += count
            entry["kv_groups"] += block.num_groups
            entry["zero_query_heads"] += count * block.queries_per_group
            entry["query_heads"] += block.num_groups * block.queries_per_group
            totals["zero_kv_groups"] += count
            totals["zero_heads"] += count * block.queries_per_group
        elif block.structure == group_module.FFN:
            entry = row.setdefault(group_module.FFN, {"zero_neurons": 0, "neurons": 0})
            entry["zero_neurons"] += count
            entry["neurons"] += block.num_groups
            totals["zero_ffn_neurons"] += count
        else:
            entry = row.setdefault(block.structure, {"zero_groups": 0, "groups": 0})
            entry["zero_groups"] += count
            entry["groups"] += block.num_groups
        entry["prunable"] = entry.get("prunable", True) and block.prunable
    return list(per_layer.values()), totals


def sparsity_report(
    groups: GroupSet, zero: Tensor, prunable: Tensor, candidates: Tensor, schedule: dict[str, Any]
) -> dict[str, Any]:
    """A plain dict describing the group sparsity: counts, per-layer zero heads/neurons, norm summaries.

    `zero`: bool per group, the optimizer's zero mask; `prunable`: bool per group; `candidates`: this step's
    candidate count (a 0-d tensor); `schedule`: the optimizer's schedule fields, copied in first.
    """
    norms, zero_cpu, prunable_cpu, candidate_count = host_snapshot(groups, zero, prunable, candidates)
    num_prunable = int(prunable_cpu.sum())
    zero_prunable = int((zero_cpu & prunable_cpu).sum())
    per_layer, totals = per_layer_counts(groups, zero_cpu)
    return {
        **schedule,
        "num_groups": len(groups),
        "num_prunable_groups": num_prunable,
        "zero_groups": int(zero_cpu.sum()),
        "group_sparsity": zero_prunable / num_prunable if num_prunable else 0.0,
        "exactly_zero_groups": int(((norms == 0) & prunable_cpu).sum()),
        "candidates": candidate_count,
        **totals,
        "per_layer": per_layer,
        "zero_group_norms": norm_summary(norms[zero_cpu]),
        "nonzero_group_norms": norm_summary(norms[prunable_cpu & ~zero_cpu]),
    }
