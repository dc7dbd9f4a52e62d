"""HSPG on FSDP2-sharded parameters: the ``"sharded"`` layout.

Under `torch.distributed.fsdp.fully_shard` every parameter is a DTensor sharded on dim 0: each rank holds a
contiguous block of rows. HSPG works on those local rows (aliases of the DTensors' storage, so in-place updates
land in the sharded parameters) and completes every whole-group quantity — squared norms, the half-space
inner products ``wᵀx``, Taylor's ``xᵀ∇f`` — from local partial sums with one all-reduce over the shard group.
A row group (Q/K/V rows, up/gate rows, their biases) may lie within one shard or straddle two; a column group
(output or down projection) spans every shard. Either way the partial sums add up to the unsharded value,
so projections, candidates and the exact target agree on every rank.

The elementwise AdamW/SGD work is purely local. Optimizer state is created as DTensors shaped like the
parameters (so `state_dict` holds sharded state) and updated through local aliases.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .kernels import grouped, is_sharded, local_shard, row_groups, sharded_group_sum
from .layout import Block, GroupLayout, Unit


class ShardedGroupLayout(GroupLayout):
    """`GroupLayout` over the local shards of DTensor parameters (no workspace; units stack local shards)."""

    def __init__(self, blocks: list[Block], device: torch.device) -> None:
        regions = [piece.name for block in blocks for piece in block.slices if not piece.whole]
        if regions:
            raise NotImplementedError(
                f"HSPG on FSDP2-sharded parameters does not support region slices (fused projections such as "
                f"{regions[0]}): a region of a dim-0 shard is not implemented. Train this model with DDP or "
                "unsharded, or group separate (unfused) projections."
            )
        super().__init__(blocks, device, layout="stacked")
        self.kind = "sharded"
        first = blocks[0].slices[0].param if blocks else None
        self.group = first.device_mesh.get_group() if first is not None else None
        self._dtensor: dict[int, Tensor] = {}
        """id(local alias) -> its DTensor parameter (to reach the gradient)."""
        self._alias: dict[int, Tensor] = {}
        """id(DTensor parameter) -> its local alias (one per parameter, so identities stay stable)."""
        self._rows: dict[int, tuple[int, int]] = {}
        """id(local alias) -> (global rows, global offset of the first local row)."""
        for unit in self.units:
            unit.params = [[self._local_alias(p) for p in params] for params in unit.params]

    def _local_alias(self, param: Tensor) -> Tensor:
        if id(param) not in self._alias:
            local, offset = local_shard(param)
            self._alias[id(param)] = local
            self._dtensor[id(local)] = param
            self._rows[id(local)] = (param.shape[0], offset)
        return self._alias[id(param)]

    # -------------------------------------------------------------- what the optimizer sees

    def local(self, tensor: Tensor) -> Tensor:
        if not is_sharded(tensor):
            return tensor
        alias = self._alias.get(id(tensor))
        return alias if alias is not None else local_shard(tensor)[0]

    def localize(self, work: list[list[tuple]]) -> list[list[tuple]]:
        """(param, grad, state) items with local shards: parameters as their stable aliases, state tensors as
        local aliases (a new dict per step; in-place updates reach the DTensor state)."""
        return [
            [(self.local(p), self.local(g), {k: self.local(v) for k, v in state.items()}) for p, g, state in items]
            for items in work
        ]

    def grad(self, param: Tensor) -> Tensor | None:
        grad = self._dtensor[id(param)].grad
        return None if grad is None else self.local(grad)

    def reduce_(self, partial: Tensor) -> Tensor:
        dist.all_reduce(partial, group=self.group)
        return partial

    def all_ranks_agree(self, flag: bool) -> bool:
        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN, group=self.group)
        return bool(value.item())

    # -------------------------------------------------------------- per-unit kernels on local shards

    def group_dots(self, unit: Unit, j: int, a: Tensor, b: Tensor) -> Tensor:
        global_rows, offset = self._rows[id(unit.params[j][0])]
        return sharded_group_sum(a * b, unit.dims[j], unit.num_groups, global_rows, offset)

    def sq_norms(self, unit: Unit, j: int, tensors: list[Tensor]) -> Tensor:
        stacked = self.stack(tensors, 2)
        return self.group_dots(unit, j, stacked, stacked)

    def multiply_groups_(self, unit: Unit, j: int, stacked: Tensor, factors: Tensor) -> None:
        if unit.dims[j]:  # every group is present along its dimension: the unsharded path works locally
            return super().multiply_groups_(unit, j, stacked, factors)
        global_rows, offset = self._rows[id(unit.params[j][0])]
        per_row = factors[:, row_groups(offset, stacked.shape[1], global_rows, unit.num_groups, factors.device)]
        stacked.mul_(per_row.to(stacked.dtype).view(*per_row.shape, *[1] * (stacked.dim() - 2)))

    def fill_zero_(self, block: Block, indices: Tensor, state: dict) -> None:
        g = block.block.num_groups
        for piece in block.slices:
            local = self.local(piece.param)
            moments = state.get(piece.param, {})
            targets = [local] + [
                self.local(moments[key])
                for key in ("exp_avg", "exp_avg_sq", "momentum_buffer")
                if moments.get(key) is not None
            ]
            if piece.dim:
                for target in targets:
                    grouped(target, piece.dim, g).index_fill_(piece.dim, indices, 0)
                continue
            global_rows, offset = self._rows[id(local)]
            rows = torch.isin(row_groups(offset, local.shape[0], global_rows, g, local.device), indices)
            for target in targets:
                target.index_fill_(0, rows.nonzero().flatten(), 0)
