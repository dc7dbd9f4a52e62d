"""Stateless grouped operations and HSPG's grouped AdamW/SGD steps: the one home of the per-group math.

A parameter slice holds ``G`` groups along one dimension ``dim`` (group ``g`` owns chunk ``g`` of it). The
first functions compute per-group sums, norms and scalings of such tensors, optionally stacked over layers
along a new leading dimension ``L``; `hf_oto.groups` (norms, zeroing) and the optimizer's layout
(`hf_oto.optim.layout`) both use them, so the grouped math exists once.

The update functions below (`adamw_update`, `sgd_update`) are the base optimizers' steps, bit-compatible with
`torch.optim.AdamW` / `torch.optim.SGD`, with HSPG's per-group multiplier of the carried part
(``x ← multiplier·x + step``) and, on projecting steps, the half-space inner products accumulated on the way.
They hold no state: moments live in the optimizer's ``state``, per-step quantities in a `StepPlan`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .layout import GroupLayout, Unit


def grouped(tensor: Tensor, dim: int, num_groups: int) -> Tensor:
    """`tensor` viewed with dimension `dim` unflattened into ``(num_groups, chunk)``."""
    return tensor.unflatten(dim, (num_groups, -1))


def group_broadcast_shape(ndim: int, dim: int, num_groups: int, layers: int | None = None) -> list[int]:
    """Shape of a per-group factor that broadcasts against `grouped` of an `ndim`-dimensional tensor.

    With `layers`, the tensor is stacked along a new leading dimension and the factor is ``(layers, G)``.
    """
    if layers is None:
        shape = [1] * (ndim + 1)
        shape[dim] = num_groups
        return shape
    shape = [1] * (ndim + 2)
    shape[0], shape[dim + 1] = layers, num_groups
    return shape


def stacked_group_sum(values: Tensor, dim: int, num_groups: int) -> Tensor:
    """Per-group sums, float32 ``(L, G)``, of `values` shaped ``(L, *param_shape)`` with groups along ``dim``.

    Dimensions before the grouped one are reduced first (a fast, vectorized column reduction), then the rest.
    """
    if dim:
        values = values.sum(dim=tuple(range(1, dim + 1)), dtype=torch.float32)
    return values.reshape(values.shape[0], num_groups, -1).sum(2, dtype=torch.float32)


def group_sq_norms(tensor: Tensor, dim: int, num_groups: int) -> Tensor:
    """Squared L2 norm of each of the `num_groups` groups of `tensor` along `dim`, float32 ``(G,)``.

    A DTensor sharded on dim 0 (FSDP2) is summed from its local shard and all-reduced: every rank must call.
    """
    if is_sharded(tensor):
        local, offset = local_shard(tensor)
        values = local.detach().float()
        partial = sharded_group_sum((values * values).unsqueeze(0), dim, num_groups, tensor.shape[0], offset)[0]
        torch.distributed.all_reduce(partial, group=tensor.device_mesh.get_group())
        return partial
    values = tensor.detach().float()
    return stacked_group_sum((values * values).unsqueeze(0), dim, num_groups)[0]


def is_sharded(tensor: Tensor) -> bool:
    """Whether `tensor` is a DTensor (FSDP2 parameters are DTensors sharded on dim 0). Without importing
    `torch.distributed.tensor` (a second of import time): no DTensor exists until that module is loaded."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def local_shard(tensor: Tensor) -> tuple[Tensor, int]:
    """This rank's shard of a DTensor sharded on dim 0 (an alias: in-place changes reach the DTensor) and the
    global index of its first row. Raises `NotImplementedError` for any other placement."""
    from torch.distributed.tensor import Shard

    placements = tuple(tensor.placements)
    if len(placements) != 1 or not isinstance(placements[0], Shard) or placements[0].dim != 0:
        raise NotImplementedError(
            f"HSPG supports parameters sharded on dim 0 over one mesh dimension (FSDP2 fully_shard); got placements "
            f"{placements}. Use fully_shard on a 1-D mesh, or DDP."
        )
    local = tensor.to_local()
    mesh = tensor.device_mesh
    rows_per_rank = -(-tensor.shape[0] // mesh.size())  # torch.chunk semantics: ceil, the last shard smaller
    offset = min(mesh.get_local_rank() * rows_per_rank, tensor.shape[0])
    if local.shape[0] != max(min(rows_per_rank, tensor.shape[0] - offset), 0):
        raise NotImplementedError(
            f"unexpected shard of a {tuple(tensor.shape)} parameter: {tuple(local.shape)} rows at offset {offset}."
        )
    return local, offset


def row_groups(offset: int, rows: int, global_rows: int, num_groups: int, device: torch.device) -> Tensor:
    """The group of each local row of a dim-0 shard (rows ``offset … offset+rows−1`` of `global_rows`)."""
    return torch.div(
        torch.arange(offset, offset + rows, device=device), global_rows // num_groups, rounding_mode="floor"
    )


def sharded_group_sum(values: Tensor, dim: int, num_groups: int, global_rows: int, offset: int) -> Tensor:
    """Like `stacked_group_sum`, for stacked local dim-0 shards: this rank's partial per-group sums ``(L, G)``."""
    if dim:  # every group is present along `dim`: the local rows are a partial sum
        return stacked_group_sum(values, dim, num_groups)
    rows = values.shape[1]
    per_row = values.sum(dim=tuple(range(2, values.dim())), dtype=torch.float32) if values.dim() > 2 else values.float()
    out = torch.zeros(values.shape[0], num_groups, dtype=torch.float32, device=values.device)
    return out.index_add_(1, row_groups(offset, rows, global_rows, num_groups, values.device), per_row)


def scale_groups_(tensor: Tensor, dim: int, num_groups: int, factors: Tensor) -> None:
    """Multiply group ``g`` of `tensor` by ``factors[g]``, in place."""
    factors = factors.to(device=tensor.device, dtype=tensor.dtype)
    grouped(tensor, dim, num_groups).mul_(factors.view(group_broadcast_shape(tensor.dim(), dim, num_groups)))


def add_rows(out: Tensor, rows: list[int], values: Tensor) -> None:
    """``out[rows] += values`` for an ``(L, G)`` accumulator (all rows: a plain in-place add)."""
    if len(rows) == out.shape[0]:
        out += values
    else:
        out.index_add_(0, torch.tensor(rows, device=out.device), values)


def runs(items: Sequence, sizes: Sequence[int], budget: float) -> list[list]:
    """Consecutive runs of `items` whose `sizes` sum to at most `budget` (an item larger than it runs alone)."""
    out, run, total = [], [], 0
    for item, size in zip(items, sizes, strict=True):
        if run and total + size > budget:
            out.append(run)
            run, total = [], 0
        run.append(item)
        total += size
    if run:
        out.append(run)
    return out


def chunks(rows: list[tuple], budget: float, split: bool) -> list[list[tuple]]:
    """Consecutive runs of `rows` (tuples of tensors shaped alike, then scalars) of at most `budget` entries.

    With `split`, a row larger than the budget is cut into flat pieces (its tensors are purely elementwise).
    """
    pieces = []
    for row in rows:
        numel = row[0].numel()
        if split and numel > budget and all(t.is_contiguous() for t in row if torch.is_tensor(t)):
            step = int(budget)
            pieces += [
                tuple(t.view(-1)[start : start + step] if torch.is_tensor(t) else t for t in row)
                for start in range(0, numel, step)
            ]
        else:
            pieces.append(row)
    return runs(pieces, [piece[0].numel() for piece in pieces], budget)


class StepPlan:
    """Per-step quantities read from the current point before it changes (built by `HSPG`)."""

    def __init__(self) -> None:
        self.norms_squared: Tensor | None = None
        """Flat ``(N,)`` squared group norms at the current point."""
        self.candidates: Tensor | None = None
        """Target mode: bool per group, the groups being driven to zero this step."""
        self.final = False
        """True on the last projection step: every candidate is projected."""
        self.projecting = False
        self.multipliers: dict[tuple[int, int], Tensor] = {}
        """(unit position, param-group index) -> ``(L, G)`` multiplier of the carried part."""
        self.carry: list[Tensor] = []
        """Per unit, ``(L, G)``: Σ over slices of f·c·‖x_slice‖² (projecting steps only)."""
        self.dot: list[Tensor] = []
        """Per unit, ``(L, G)``: Σ over slices of wᵀx, accumulated during the update (projecting steps only)."""


def unit_norms_squared(layout: GroupLayout, num_groups: int) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """Flat ``(N,)`` squared group norms, and per unit its per-position ``(P, L, G)`` and total ``(L, G)``."""
    norms_squared = torch.zeros(num_groups, device=layout.device)
    unit_parts = []
    for unit in layout.units:
        sq, nsq = layout.unit_sq_norms(unit)
        norms_squared[unit.index] = nsq.flatten()
        unit_parts.append((sq, nsq))
    return norms_squared, unit_parts


def build_plan(
    layout: GroupLayout,
    param_groups: list[dict],
    variant: str,
    lam: float,
    unit_parts: list[tuple[Tensor, Tensor]],
    shrink: Tensor | None,
    projecting: bool,
) -> StepPlan:
    """The multipliers of the carried part and, on projecting steps, the carried inner products.

    Per unit and param group the multiplier is ``f·c·keep`` with ``f = 1 − lr·wd − lr·λ/‖x_g‖`` (AdamW;
    ``1 − lr·λ/‖x_g‖`` for SGD, whose weight decay is in the direction), ``c`` the candidates' shrink
    (`shrink`, flat, or None) and ``keep`` 0 on zero groups. The trial inner product is accumulated as
    ``Σ f·c·‖x_slice‖²`` here and ``+ wᵀx`` during the update. ``lam=0`` leaves the penalty out.
    """
    plan = StepPlan()
    plan.projecting = projecting
    for unit, (sq, nsq) in zip(layout.units, unit_parts, strict=True):
        inv_norm = torch.where(nsq > 0, nsq.rsqrt(), torch.zeros_like(nsq)) if lam else None
        unit_shrink = shrink[unit.index].view_as(nsq) if shrink is not None else None
        carry = None
        for pg_index, positions in unit.by_param_group.items():
            pg = param_groups[pg_index]
            base = 1.0 - pg["lr"] * pg["weight_decay"] if variant == "adamw" else 1.0
            factor = base - (pg["lr"] * lam) * inv_norm if lam else torch.full_like(nsq, base)
            if unit_shrink is not None:
                factor = factor * unit_shrink
            if projecting:
                part = factor * (sq[positions[0]] if len(positions) == 1 else sq[positions].sum(0))
                carry = part if carry is None else carry + part
            plan.multipliers[unit.position, pg_index] = factor if unit.keep is None else factor * unit.keep
        if projecting:
            plan.carry.append(carry)
            plan.dot.append(torch.zeros_like(nsq))
    return plan


def prox_threshold(layout: GroupLayout, param_groups: list[dict], lam: float) -> None:
    """Stage-1 proximal step: group soft-threshold ``max(0, 1 − lr·λ/‖y_g‖)`` of the post-step point."""
    for unit in layout.units:
        nsq = sum(layout.sq_norms(unit, j, unit.region(j, params)) for j, params in enumerate(unit.params))
        nsq = layout.reduce_(nsq)
        inv_norm = torch.where(nsq > 0, nsq.rsqrt(), torch.zeros_like(nsq))
        for pg_index, positions in unit.by_param_group.items():
            lr = param_groups[pg_index]["lr"]
            factor = (1.0 - lr * lam * inv_norm).clamp_(min=0.0)
            for j in positions:
                layout.scale(unit, j, list(range(unit.layers)), unit.region(j, unit.params[j]), factor)


Items = list[tuple[Tensor, Tensor, dict[str, Any]]]
"""(param, grad, state) for every parameter of one param group that has a gradient."""


def adamw_update(
    layout: GroupLayout, group: dict, pg_index: int, items: Items, plan: StepPlan, grouped_ids: set[int]
) -> None:
    """AdamW moments and update for one param group; grouped params get the HSPG carried-part multiplier."""
    beta1, beta2 = group["betas"]
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    grads = [g for _, g, _ in items]
    exp_avgs = [s["exp_avg"] for _, _, s in items]
    exp_avg_sqs = [s["exp_avg_sq"] for _, _, s in items]
    steps = [s["step"] for _, _, s in items]
    torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    del grads

    rows = {}  # id(param) -> (param, exp_avg, exp_avg_sq, step size, sqrt of the 2nd bias correction)
    for (p, _, state), count in zip(items, [s.item() for s in steps], strict=True):
        rows[id(p)] = (p, state["exp_avg"], state["exp_avg_sq"], -lr / (1 - beta1**count), (1 - beta2**count) ** 0.5)
    plain = [row for key, row in rows.items() if key not in grouped_ids]
    if plain and wd != 0:
        torch._foreach_mul_([row[0] for row in plain], 1 - lr * wd)
    if plan.projecting:
        _adamw_grouped_projecting(layout, eps, pg_index, rows, plan)
        stepped = plain
    else:
        # Grouped params: carried part x ← multiplier·x first, then the same step as every other param.
        for unit, j, present in layout.positions(pg_index, rows):
            params = unit.region(j, [unit.params[j][index] for index in present])
            layout.scale(unit, j, present, params, plan.multipliers[unit.position, pg_index])
        stepped = list(rows.values())
    for chunk in chunks(stepped, layout.chunk_numel, split=True):
        params, ms, vs, sizes, bc2 = (list(column) for column in zip(*chunk, strict=True))
        denom = layout.sqrt(vs)
        torch._foreach_div_(denom, bc2)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, ms, denom, sizes)
        del denom


def _adamw_grouped_projecting(layout: GroupLayout, eps: float, pg_index: int, rows: dict, plan: StepPlan) -> None:
    """Grouped params on a projecting step: the step w also enters the half-space inner products wᵀx.

    The steps of many slice positions are built together (one set of `_foreach_*` kernels per run of
    positions within the chunk budget: all of them in the stacked layout), then applied per position. A
    position that is a region of its parameters (a fused projection) builds and applies the step of that
    region only, so each entry is stepped once.
    """
    positions = list(layout.positions(pg_index, rows))
    sizes_of = [
        sum(t.numel() for t in unit.region(j, [unit.params[j][i] for i in present])) for unit, j, present in positions
    ]
    for run in runs(positions, sizes_of, layout.chunk_numel):
        members = [region_row(unit, j, rows[id(unit.params[j][i])]) for unit, j, present in run for i in present]
        params, ms, vs, sizes, bc2 = (list(column) for column in zip(*members, strict=True))
        # The step w = size·m̂/(√v̂+eps) = m / ((√v/bc2 + eps)/size), built in place of the denominator.
        steps = layout.sqrt(vs)
        torch._foreach_div_(steps, [b * s for b, s in zip(bc2, sizes, strict=True)])
        torch._foreach_add_(steps, [eps / s for s in sizes])
        torch._foreach_reciprocal_(steps)
        torch._foreach_mul_(steps, ms)
        offset = 0
        for unit, j, present in run:
            end = offset + len(present)
            projecting_update(layout, unit, j, present, params[offset:end], steps[offset:end], 1.0, pg_index, plan)
            offset = end


def region_row(unit: Unit, j: int, row: tuple) -> tuple:
    """An AdamW row (param, exp_avg, exp_avg_sq, scalars...) cut to position `j`'s region of the parameter."""
    piece = unit.pieces[j]
    return row if piece.whole else (*(piece.region(t) for t in row[:3]), *row[3:])


def region_item(unit: Unit, j: int, item: tuple) -> tuple:
    """A (param, grad, state) item cut to position `j`'s region; the state holds the region of the momentum
    buffer, which exists from the first step for such parameters (`HSPG` creates it eagerly)."""
    piece = unit.pieces[j]
    if piece.whole:
        return item
    param, grad, state = item
    buffer = state.get("momentum_buffer")
    return (
        piece.region(param),
        piece.region(grad),
        {"momentum_buffer": None if buffer is None else piece.region(buffer)},
    )


def projecting_update(
    layout: GroupLayout,
    unit: Unit,
    j: int,
    present: list[int],
    params: list[Tensor],
    steps: list[Tensor],
    alpha: float,
    pg_index: int,
    plan: StepPlan,
) -> None:
    """``x ← multiplier·x + alpha·w`` for one slice position, accumulating ``alpha·wᵀx`` per group first."""
    stacked = layout.stack(params, 2)
    stacked_steps = layout.stack(steps, 3)
    dots = layout.group_dots(unit, j, stacked_steps, stacked)
    add_rows(plan.dot[unit.position], present, dots if alpha == 1.0 else dots * alpha)
    multiplier = plan.multipliers[unit.position, pg_index]
    layout.scale(unit, j, present, params, multiplier, stacked=stacked, addend=stacked_steps, alpha=alpha)


def sgd_directions(layout: GroupLayout, group: dict, chunk: Items) -> list[Tensor]:
    """torch.optim.SGD's direction ``g + wd·x``, through the heavy-ball buffer when momentum is set."""
    wd, momentum = group["weight_decay"], group["momentum"]
    directions = [g for _, g, _ in chunk]
    if wd != 0:
        params = [p for p, _, _ in chunk]
        out = layout.scratch(params, 0)
        if out is None:
            directions = torch._foreach_add(directions, params, alpha=wd)
        else:
            directions = [torch.add(d, p, alpha=wd, out=o) for d, p, o in zip(directions, params, out, strict=True)]
    if not momentum:
        return directions
    bufs, old, old_directions = [], [], []
    for (_, _, state), direction in zip(chunk, directions, strict=True):
        if state.get("momentum_buffer") is None:
            state["momentum_buffer"] = torch.clone(direction).detach()
        else:
            old.append(state["momentum_buffer"])
            old_directions.append(direction)
        bufs.append(state["momentum_buffer"])
    if old:
        torch._foreach_mul_(old, momentum)
        torch._foreach_add_(old, old_directions)
    return bufs


def sgd_update(
    layout: GroupLayout, group: dict, pg_index: int, items: Items, plan: StepPlan, grouped_ids: set[int]
) -> None:
    """SGD (heavy-ball) update for one param group, torch.optim.SGD semantics plus the HSPG multiplier."""
    lr = group["lr"]
    plain = [item for item in items if id(item[0]) not in grouped_ids]
    for chunk in chunks(plain, layout.chunk_numel, split=False):
        torch._foreach_add_([p for p, _, _ in chunk], sgd_directions(layout, group, chunk), alpha=-lr)
    by_id = {id(item[0]): item for item in items}
    for unit, j, present in layout.positions(pg_index, by_id):
        chunk = [region_item(unit, j, by_id[id(unit.params[j][index])]) for index in present]
        params = [p for p, _, _ in chunk]
        directions = sgd_directions(layout, group, chunk)
        if plan.projecting:
            projecting_update(layout, unit, j, present, params, directions, -lr, pg_index, plan)
        else:
            layout.scale(unit, j, present, params, plan.multipliers[unit.position, pg_index])
            torch._foreach_add_(params, directions, alpha=-lr)
