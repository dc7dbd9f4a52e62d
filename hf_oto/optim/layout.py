"""How HSPG lays the prunable groups out in memory: blocks, stacked units and the CPU workspace.

Per-group work is vectorized twice over: over the groups of a block (one reshape per parameter slice) and
over layers (same-shaped blocks, e.g. every layer's attention, are stacked into a `Unit` and handled with
one kernel per slice *position*). Two layouts exist, chosen with ``HSPG(layout=...)``:

- ``"stacked"``: temporaries come from the allocator and units hold up to `STACKED_UNIT_NUMEL` entries.
  On a GPU an optimizer step is bound by kernel launches, so fewer, larger kernels win.
- ``"workspace"``: temporaries are views of a reused `Workspace` and work runs in chunks of
  `WORKSPACE_CHUNK_NUMEL` entries. On CPU, fresh allocations cost page faults that outweigh the arithmetic.
- ``"auto"`` (default): ``"workspace"`` on CPU, ``"stacked"`` on accelerators.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .kernels import add_rows, group_broadcast_shape, grouped, stacked_group_sum

LAYOUTS = ("auto", "stacked", "workspace", "sharded")
WORKSPACE_CHUNK_NUMEL = 1 << 22
"""Workspace layout: temporaries live in a reused buffer of this many entries (or the largest grouped param)."""
if TYPE_CHECKING:  # hf_oto.groups imports this package's kernels: no runtime import back
    from ..groups import GroupBlock, ParamSlice

STACKED_UNIT_NUMEL = 1 << 26
"""Stacked layout: same-shaped blocks are stacked up to this many entries: bounded extra memory."""


class Block:
    """A prunable `GroupBlock` as HSPG sees it: its flat group range and, per slice, its param-group index."""

    __slots__ = ("block", "start", "end", "slices", "param_groups")

    def __init__(self, block: GroupBlock, start: int, end: int, param_groups: list[int]) -> None:
        self.block = block
        self.start = start
        self.end = end
        self.slices: list[ParamSlice] = list(block.slices)
        self.param_groups = param_groups

    def signature(self) -> tuple:
        """Blocks with equal signatures can be stacked: same group count and, per slice, shape, dim, region,
        dtype, device and param group."""
        return (
            self.block.num_groups,
            tuple(
                (
                    tuple(piece.param.shape),
                    piece.dim,
                    piece.offset,
                    piece.length,
                    piece.param.dtype,
                    piece.param.device,
                    pg,
                )
                for piece, pg in zip(self.slices, self.param_groups, strict=True)
            ),
        )

    @property
    def numel(self) -> int:
        return sum(piece.numel for piece in self.slices)

    def fill_zero_(self, indices: Tensor, state: dict) -> None:
        """Set the given groups to exactly zero in the parameters and in their optimizer moments (`state`)."""
        g = self.block.num_groups
        for piece in self.slices:
            moments = state.get(piece.param, {})
            targets = [piece.param] + [moments.get(key) for key in ("exp_avg", "exp_avg_sq", "momentum_buffer")]
            for target in targets:
                if target is not None:
                    grouped(piece.region(target), piece.dim, g).index_fill_(piece.dim, indices, 0)


class Unit:
    """Blocks of one signature (typically one structure in consecutive layers) that HSPG steps together.

    Per-group work runs on the blocks' slices stacked along a new leading "layer" dimension ``L``, so a step
    launches a few kernels per slice *position* (e.g. "query weight") instead of a few per slice. Per-group
    quantities of a unit are ``(L, G)`` tensors; ``index`` maps them to flat group indices. A unit of one
    block works on views, without copies.

    ``params[j]`` holds whole parameters; a slice position may be a region of them (a fused projection), and
    every kernel works on `region` of the parameter, its gradient and its moments.
    """

    def __init__(self, blocks: list[Block], position: int, device: torch.device) -> None:
        self.blocks = blocks
        self.position = position
        self.layers = len(blocks)
        self.num_groups = blocks[0].block.num_groups
        first = blocks[0]
        self.dims = [piece.dim for piece in first.slices]
        self.pieces = list(first.slices)
        """Per slice position, the first block's slice: its region applies to every layer (equal signatures)."""
        self.param_groups = first.param_groups
        self.by_param_group: dict[int, list[int]] = {}
        """Param-group index -> slice positions in it (the carried-part factor is shared per param group)."""
        for index, pg_index in enumerate(self.param_groups):
            self.by_param_group.setdefault(pg_index, []).append(index)
        self.params = [[block.slices[j].param for block in blocks] for j in range(len(first.slices))]
        """Per slice position, the ``L`` parameters (one per block)."""
        self.index_cpu = torch.cat([torch.arange(block.start, block.end) for block in blocks])
        self.index = self.index_cpu.to(device)
        """Flat group index of every ``(l, g)``, row-major."""
        self.keep: Tensor | None = None
        """``(L, G)`` float mask, 0 on zero groups; None while the unit has no zero group."""

    def region(self, j: int, tensors: list[Tensor]) -> list[Tensor]:
        """Position `j`'s region of each tensor (whole parameters, gradients or moments): views, or the tensors."""
        piece = self.pieces[j]
        return tensors if piece.whole else [piece.region(t) for t in tensors]

    def broadcast_shape(self, j: int, layers: int) -> list[int]:
        """Shape of an ``(L, G)`` factor broadcasting against position `j` stacked with its groups unflattened."""
        return group_broadcast_shape(self.params[j][0].dim(), self.dims[j], self.num_groups, layers)


def make_units(blocks: list[Block], budget: float, device: torch.device) -> list[Unit]:
    """Bucket blocks by signature (first-seen order) and cut each bucket into units of at most `budget` entries."""
    buckets: dict[tuple, list[Block]] = {}
    for block in blocks:
        buckets.setdefault(block.signature(), []).append(block)
    units: list[Unit] = []
    for bucket in buckets.values():
        run: list[Block] = []
        for block in bucket:
            if run and (len(run) + 1) * block.numel > budget:
                units.append(Unit(run, len(units), device))
                run = []
            run.append(block)
        units.append(Unit(run, len(units), device))
    return units


class Workspace:
    """Reusable scratch memory for the workspace layout: flat buffers per dtype and slot, allocated once.

    A `_foreach_*` call that returns new tensors allocates fresh memory each step, and on CPU the page faults
    then cost more than the arithmetic (measured: ~5x a sqrt). Temporaries are instead written into views of
    these buffers, one chunk of parameters at a time: a few percent of the optimizer state.
    """

    def __init__(self, numel: int) -> None:
        self.numel = numel
        self.buffers: dict[tuple, Tensor] = {}

    def _buffer(self, like: Tensor, slot: int) -> Tensor:
        key = (like.device, like.dtype, slot)
        if key not in self.buffers:
            self.buffers[key] = torch.empty(self.numel, dtype=like.dtype, device=like.device)
        return self.buffers[key]

    def views(self, tensors: list[Tensor], slot: int) -> list[Tensor]:
        """Views of buffer `slot` shaped like `tensors`, without overlap (their total must fit)."""
        out, offset = [], 0
        for tensor in tensors:
            out.append(self._buffer(tensor, slot)[offset : offset + tensor.numel()].view(tensor.shape))
            offset += tensor.numel()
        return out

    def stacked(self, tensors: list[Tensor], slot: int) -> Tensor:
        """`tensors` (all alike) stacked along a new first dimension into buffer `slot`."""
        first = tensors[0]
        out = self._buffer(first, slot)[: len(tensors) * first.numel()].view(len(tensors), *first.shape)
        return torch.stack(tensors, out=out)

    @property
    def nbytes(self) -> int:
        return sum(buffer.numel() * buffer.element_size() for buffer in self.buffers.values())


def resolve_layout(layout: str, device: torch.device) -> str:
    """``"auto"`` → ``"workspace"`` on CPU, ``"stacked"`` elsewhere; the other names unchanged."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is unknown; choose one of {LAYOUTS}.")
    if layout == "sharded":
        raise ValueError("layout='sharded' is for FSDP2-sharded (DTensor) parameters; these are plain tensors.")
    if layout == "auto":
        return "workspace" if device.type == "cpu" else "stacked"
    return layout


class GroupLayout:
    """The prunable blocks of a `GroupSet`, stacked into units, with the kernels that run on them.

    Args:
        blocks: the prunable blocks, in group order.
        device: where the grouped parameters live.
        layout: ``"auto"``, ``"stacked"`` or ``"workspace"`` (see the module docstring).
        unit_numel: most entries per unit (and per workspace chunk); default from the layout.
        largest_param: the largest grouped parameter's size (the workspace holds at least one such).
    """

    def __init__(
        self,
        blocks: list[Block],
        device: torch.device,
        layout: str = "auto",
        unit_numel: int | None = None,
        largest_param: int = 0,
    ) -> None:
        self.kind = resolve_layout(layout, device)
        self.device = device
        self.blocks = blocks
        largest = max([largest_param] + [piece.param.numel() for block in blocks for piece in block.slices])
        if self.kind == "workspace":
            self.workspace: Workspace | None = Workspace(max(unit_numel or WORKSPACE_CHUNK_NUMEL, largest))
            self.chunk_numel: float = self.workspace.numel
        else:
            self.workspace = None
            self.chunk_numel = math.inf
        budget = min(self.chunk_numel, unit_numel or STACKED_UNIT_NUMEL)
        self.units = make_units(blocks, budget, device)

    @property
    def grouped_ids(self) -> set[int]:
        """``id`` of every tensor the units step as grouped (the kernels give the others the plain step)."""
        return {id(p) for unit in self.units for params in unit.params for p in params}

    @property
    def regioned_ids(self) -> set[int]:
        """``id`` of every parameter that units step region by region (fused projections)."""
        return {
            id(p)
            for unit in self.units
            for j, params in enumerate(unit.params)
            for p in params
            if not unit.pieces[j].whole
        }

    @property
    def unit_layers(self) -> list[int]:
        """How many blocks each unit stacks."""
        return [unit.layers for unit in self.units]

    def sync_keep(self, zero_cpu: Tensor) -> None:
        """Each unit's keep mask from the host copy of the zero mask (None for units without zero groups)."""
        for unit in self.units:
            rows = zero_cpu[unit.index_cpu].view(unit.layers, unit.num_groups)
            unit.keep = (~rows).float().to(self.device) if bool(rows.any()) else None

    # Per-unit kernels: each works on one slice position `j` of a unit, for the `present` layers (usually all).

    def stack(self, tensors: list[Tensor], slot: int) -> Tensor:
        """`tensors` stacked along a new first dimension: a view for one tensor, else a copy (workspace slot)."""
        if len(tensors) == 1:
            return tensors[0].unsqueeze(0)
        if self.workspace is None:
            return torch.stack(tensors)
        return self.workspace.stacked(tensors, slot)

    def scratch(self, tensors: list[Tensor], slot: int) -> list[Tensor] | None:
        """Workspace views for temporaries; None (allocate) in the stacked layout, and for tensors larger than
        the workspace (a plain parameter such as a big embedding)."""
        if self.workspace is None or sum(t.numel() for t in tensors) > self.workspace.numel:
            return None
        return self.workspace.views(tensors, slot)

    def product(self, a: Tensor, b: Tensor) -> Tensor:
        """``a * b`` into workspace slot 1 when there is one."""
        out = self.scratch([a], 1)
        return torch.mul(a, b) if out is None else torch.mul(a, b, out=out[0])

    def sqrt(self, tensors: list[Tensor]) -> list[Tensor]:
        """Elementwise square roots of `tensors` into workspace slot 0 when there is one."""
        out = self.scratch(tensors, 0)
        if out is None:
            return torch._foreach_sqrt(tensors)
        for tensor, target in zip(tensors, out, strict=True):
            torch.sqrt(tensor, out=target)
        return out

    def group_dots(self, unit: Unit, j: int, a: Tensor, b: Tensor) -> Tensor:
        """Per-group ``aᵀb`` of two stacked tensors of position `j`: float32 ``(L, G)`` (partial when sharded)."""
        return stacked_group_sum(self.product(a, b), unit.dims[j], unit.num_groups)

    def reduce_(self, partial: Tensor) -> Tensor:
        """Complete per-group sums computed on local shards (in place); a no-op for unsharded parameters."""
        return partial

    def all_ranks_agree(self, flag: bool) -> bool:
        """Whether `flag` holds on every rank that shares the parameters (itself when unsharded)."""
        return flag

    def local(self, tensor: Tensor) -> Tensor:
        """The part of `tensor` this process holds (itself when unsharded)."""
        return tensor

    def localize(self, work: list[list[tuple]]) -> list[list[tuple]]:
        """(param, grad, state) items as the kernels work on them: unchanged for unsharded parameters."""
        return work

    def fill_zero_(self, block: Block, indices: Tensor, state: dict) -> None:
        """Set groups `indices` of `block` to exactly zero in the parameters and their optimizer moments."""
        block.fill_zero_(indices, state)

    def sq_norms(self, unit: Unit, j: int, tensors: list[Tensor]) -> Tensor:
        """Squared L2 norm of each group's entries of `tensors` (position `j`), float32, shape (L, G)."""
        stacked = self.stack(tensors, 2)
        if unit.dims[j] == 0:
            grouped_rows = stacked.reshape(len(tensors), unit.num_groups, -1)
            return torch.linalg.vector_norm(grouped_rows, dim=2, dtype=torch.float32).square()
        # A norm over leading dims is a slow strided reduction; square, then a fast column sum.
        return stacked_group_sum(self.product(stacked, stacked), unit.dims[j], unit.num_groups)

    def unit_sq_norms(self, unit: Unit) -> tuple[Tensor, Tensor]:
        """Per slice position and in total, the squared group norms of a unit: ``(P, L, G)`` and ``(L, G)``."""
        sq = [self.sq_norms(unit, j, unit.region(j, params)) for j, params in enumerate(unit.params)]
        sq = self.reduce_(torch.stack(sq))
        return sq, sq.sum(0)

    def add_dots(
        self, unit: Unit, j: int, present: list[int], a: list[Tensor], b: list[Tensor], scale: float, out: Tensor
    ) -> None:
        """``out[l, g] += scale · a_lᵀb_l`` over group g's entries, for the present layers l (position `j`)."""
        dots = self.group_dots(unit, j, self.stack(a, 3), self.stack(b, 2))
        add_rows(out, present, dots if scale == 1.0 else dots * scale)

    def grad(self, param: Tensor) -> Tensor | None:
        """The gradient of a unit parameter, as the tensors of this layout hold it."""
        return param.grad

    def scale(
        self,
        unit: Unit,
        j: int,
        present: list[int],
        tensors: list[Tensor],
        factors: Tensor,
        stacked: Tensor | None = None,
        addend: Tensor | None = None,
        alpha: float = 1.0,
    ) -> None:
        """Multiply group g of ``tensors[i]`` (layer ``present[i]`` of position `j`) by ``factors[present[i], g]``,
        in place, then add ``alpha·addend[i]`` if given. `stacked`: `tensors` already stacked by `stack`."""
        if len(present) != unit.layers:
            factors = factors[torch.tensor(present, device=factors.device)]
        stacked = self.stack(tensors, 2) if stacked is None else stacked
        self.multiply_groups_(unit, j, stacked, factors)
        if addend is not None:
            stacked.add_(addend, alpha=alpha)
        if len(tensors) > 1:
            torch._foreach_copy_(tensors, list(stacked.unbind(0)))

    def multiply_groups_(self, unit: Unit, j: int, stacked: Tensor, factors: Tensor) -> None:
        """``stacked[l]``'s group g (position `j`) times ``factors[l, g]``, in place."""
        grouped_view = stacked.unflatten(unit.dims[j] + 1, (unit.num_groups, -1))
        grouped_view.mul_(factors.to(stacked.dtype).view(unit.broadcast_shape(j, len(stacked))))

    def positions(self, pg_index: int, present_ids):
        """(unit, slice position, present layers) for every unit position in param group `pg_index` whose
        parameters are in `present_ids` (a container of ``id(param)``)."""
        for unit in self.units:
            for j in unit.by_param_group.get(pg_index, ()):
                present = [index for index, p in enumerate(unit.params[j]) if id(p) in present_ids]
                if present:
                    yield unit, j, present

    def mask_grads(self) -> None:
        """Zero the gradient entries of zero groups, so that their moments stay cleared."""
        for unit in self.units:
            if unit.keep is None:
                continue
            for j, params in enumerate(unit.params):
                present = [index for index, p in enumerate(params) if self.grad(p) is not None]
                if present:
                    grads = unit.region(j, [self.grad(params[index]) for index in present])
                    self.scale(unit, j, present, grads, unit.keep)

    def gradient_dots(self, num_groups: int) -> Tensor:
        """Per group, ``x_gᵀ∇_g f`` from the current gradients: flat float32 ``(num_groups,)``, 0 outside units."""
        out = torch.zeros(num_groups, device=self.device)
        for unit in self.units:
            dots = torch.zeros(unit.layers, unit.num_groups, device=self.device)
            for j, params in enumerate(unit.params):
                present = [index for index, p in enumerate(params) if self.grad(p) is not None]
                if present:
                    tensors = [params[index] for index in present]
                    grads = unit.region(j, [self.grad(p) for p in tensors])
                    self.add_dots(unit, j, present, unit.region(j, tensors), grads, 1.0, dots)
            out[unit.index] = dots.flatten()
        return self.reduce_(out)

    def nbytes(self) -> int:
        """Bytes of the workspace (0 in the stacked layout)."""
        return self.workspace.nbytes if self.workspace is not None else 0
