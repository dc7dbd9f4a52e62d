"""Zero-invariant groups (ZIGs): the partition of a model's parameters that OTO prunes.

A `GroupBlock` is a run of `num_groups` groups that share one layout: group j owns chunk j (of equal
size) along dimension `dim` of every `ParamSlice` in the block. One layer's attention heads form one
block, one layer's FFN neurons another. Every operation here (norms, zeroing, scaling) is one reshape
per slice, vectorized over the groups of a block, never a Python loop over individual groups.

The interface is deliberately plain so that HSPG works on any grouping: build `ParamSlice`s and
`GroupBlock`s by hand for a custom `nn.Module` or a convex problem, and wrap them in a `GroupSet`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .architectures import ArchitectureSpec, get_spec
from .configuration_oto import grouped_dim, layer_counts, layer_projections, part_width
from .optim.kernels import group_broadcast_shape, group_sq_norms, grouped, scale_groups_

ATTENTION = "attention"
FFN = "ffn"
STRUCTURES = (ATTENTION, FFN)


@dataclass(frozen=True)
class ParamSlice:
    """A region of `param` along `dim` split into `num_groups` equal, contiguous chunks, one per group.

    The region is ``offset … offset+length`` along `dim` (``length=None``: to the end; the default region is the
    whole dimension). A fused projection is several slices of one parameter in the same block, e.g. the Q, K
    and V row regions of a fused QKV weight: group j then owns chunk j of each region. The regions of one
    parameter within a block must tile its dimension (see `GroupBlock`).
    """

    name: str
    param: torch.Tensor
    dim: int
    offset: int = 0
    length: int | None = None

    def __post_init__(self) -> None:
        full = self.param.shape[self.dim]
        if self.offset < 0 or self.size < 0 or self.offset + self.size > full:
            raise ValueError(
                f"{self.name}: region offset={self.offset}, length={self.length} does not fit dimension "
                f"{self.dim} of size {full}."
            )

    @property
    def size(self) -> int:
        """Length of the region along `dim`."""
        return self.param.shape[self.dim] - self.offset if self.length is None else self.length

    @property
    def whole(self) -> bool:
        """Whether the region is the whole dimension (then `region` returns its argument itself)."""
        return self.offset == 0 and self.size == self.param.shape[self.dim]

    @property
    def numel(self) -> int:
        """Entries of the region."""
        return math.prod(self.size if d == self.dim else n for d, n in enumerate(self.param.shape))

    def region(self, tensor: torch.Tensor) -> torch.Tensor:
        """The region of `tensor` (the parameter, its gradient or a moment shaped like it): a view."""
        return tensor if self.whole else tensor.narrow(self.dim, self.offset, self.size)

    def grouped_view(self, num_groups: int) -> torch.Tensor:
        """The region viewed with `dim` unflattened into (num_groups, chunk)."""
        return grouped(self.region(self.param), self.dim, num_groups)

    def broadcast_shape(self, num_groups: int) -> list[int]:
        """Shape of a per-group factor that broadcasts against `grouped_view`."""
        return group_broadcast_shape(self.param.dim(), self.dim, num_groups)


@dataclass
class GroupBlock:
    """`num_groups` groups of one structure type in one layer (or a user-defined block)."""

    structure: str
    """``"attention"``, ``"ffn"`` or any user-chosen label."""
    num_groups: int
    slices: list[ParamSlice]
    layer: int | None = None
    prunable: bool = True
    unit: str = "group"
    """What one group is, for messages: ``"head"``, ``"kv group"``, ``"neuron"``."""
    queries_per_group: int = 1
    """For GQA attention blocks: query heads sharing each key/value head."""
    head_dim: int | None = None
    """For attention blocks: width of one head (for FLOP accounting)."""

    def __post_init__(self) -> None:
        for piece in self.slices:
            if piece.size % self.num_groups:
                raise ValueError(
                    f"{piece.name}: dimension {piece.dim} region of size {piece.size} cannot be "
                    f"split into {self.num_groups} equal groups; fix the GroupBlock definition."
                )
        check_regions_tile(self.slices)

    @property
    def group_size(self) -> int:
        """Number of scalar parameters in one group."""
        return sum(piece.numel for piece in self.slices) // self.num_groups

    def norms_squared(self) -> torch.Tensor:
        """Squared L2 norm of every group of the block, shape (num_groups,), in float32."""
        return sum(group_sq_norms(piece.region(piece.param), piece.dim, self.num_groups) for piece in self.slices)

    def scale_(self, factors: torch.Tensor, tensors: Sequence[torch.Tensor] | None = None) -> None:
        """Multiply group j by `factors[j]`, in place, in every slice (or in `tensors` shaped like the params)."""
        targets = tensors if tensors is not None else [piece.param for piece in self.slices]
        for piece, target in zip(self.slices, targets, strict=True):
            scale_groups_(piece.region(target), piece.dim, self.num_groups, factors)

    def describe(self, index: int) -> str:
        where = f"layer {self.layer} " if self.layer is not None else ""
        if self.unit == "kv group":
            first = index * self.queries_per_group
            last = first + self.queries_per_group - 1
            return f"{where}{self.structure} kv group {index} (query heads {first}-{last})"
        return f"{where}{self.structure} {self.unit} {index}"


def check_regions_tile(slices: Sequence[ParamSlice]) -> None:
    """Refuse slices of one parameter whose regions overlap, lie along different dims or leave part of it out.

    HSPG steps a grouped parameter region by region (its weight decay is part of the per-group multiplier),
    so every entry must belong to exactly one region."""
    by_param: dict[int, list[ParamSlice]] = {}
    for piece in slices:
        by_param.setdefault(id(piece.param), []).append(piece)
    for pieces in by_param.values():
        if len(pieces) == 1 and pieces[0].whole:
            continue
        names = ", ".join(f"{p.name}[{p.offset}:{p.offset + p.size}] (dim {p.dim})" for p in pieces)
        dims = {piece.dim for piece in pieces}
        spans = sorted((piece.offset, piece.offset + piece.size) for piece in pieces)
        full = pieces[0].param.shape[pieces[0].dim]
        tiled = spans[0][0] == 0 and spans[-1][1] == full and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        if len(dims) != 1 or not tiled:
            raise ValueError(
                f"the regions {names} of one parameter must lie along one dimension, not overlap, and cover it "
                f"entirely (size {full}); split the parameter into slices that tile it."
            )


@dataclass(frozen=True)
class Group:
    """One group: a position inside a block. `str()` names its layer, e.g. ``layer 3 attention head 7``."""

    block: GroupBlock
    index: int

    def __str__(self) -> str:
        return self.block.describe(self.index)

    @property
    def slices(self) -> list[tuple[str, torch.Tensor]]:
        """(parameter name, view of this group's entries) for every slice of the group."""
        return [
            (piece.name, piece.grouped_view(self.block.num_groups).select(piece.dim, self.index))
            for piece in self.block.slices
        ]


@dataclass
class GroupSet:
    """All zero-invariant groups of a model, in block order. Index i runs over every group."""

    blocks: list[GroupBlock]
    spec: ArchitectureSpec | None = None
    _offsets: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._offsets = [0]
        for block in self.blocks:
            self._offsets.append(self._offsets[-1] + block.num_groups)

    def __len__(self) -> int:
        return self._offsets[-1]

    def __getitem__(self, index: int) -> Group:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"group index {index} out of range for {len(self)} groups")
        position = int(torch.searchsorted(torch.tensor(self._offsets), index, right=True)) - 1
        return Group(self.blocks[position], index - self._offsets[position])

    def __iter__(self):
        for block in self.blocks:
            for index in range(block.num_groups):
                yield Group(block, index)

    def block_ranges(self) -> list[tuple[int, int]]:
        """(start, end) of each block's groups in the flat group index."""
        return list(zip(self._offsets[:-1], self._offsets[1:], strict=True))

    def params(self) -> list[torch.Tensor]:
        """Every grouped parameter tensor, each once."""
        seen: dict[int, torch.Tensor] = {}
        for block in self.blocks:
            for piece in block.slices:
                seen.setdefault(id(piece.param), piece.param)
        return list(seen.values())

    @torch.no_grad()
    def norms(self) -> torch.Tensor:
        """L2 norm of every group, shape (len(self),), float32."""
        if not self.blocks:
            return torch.zeros(0)
        return torch.cat([block.norms_squared() for block in self.blocks]).sqrt()

    def prunable_mask(self) -> torch.Tensor:
        """Bool per group: True where the group may be driven to zero."""
        return torch.cat([torch.full((b.num_groups,), b.prunable, dtype=torch.bool) for b in self.blocks])

    def group_sizes(self) -> torch.Tensor:
        """Number of scalar parameters in each group, float32."""
        return torch.cat([torch.full((b.num_groups,), float(b.group_size)) for b in self.blocks])

    def structure_index(self) -> torch.Tensor:
        """Per group, the position of its block's structure in `self.structures()`."""
        names = self.structures()
        return torch.cat([torch.full((b.num_groups,), names.index(b.structure), dtype=torch.long) for b in self.blocks])

    def structures(self) -> list[str]:
        """Distinct structure labels, in first-seen order."""
        return list(dict.fromkeys(block.structure for block in self.blocks))

    @torch.no_grad()
    def zero_(self, indices: Iterable[int] | torch.Tensor) -> None:
        """Set the given groups to exactly zero, in place."""
        keep = torch.ones(len(self), dtype=torch.bool)
        keep[torch.as_tensor(list(indices) if not torch.is_tensor(indices) else indices, dtype=torch.long)] = False
        self.apply_mask_(keep)

    @torch.no_grad()
    def apply_mask_(
        self, keep: torch.Tensor, tensors_per_block: Sequence[Sequence[torch.Tensor]] | None = None
    ) -> None:
        """Zero every group whose `keep` entry is False (in the parameters, or in parallel tensors)."""
        for position, (start, end) in enumerate(self.block_ranges()):
            block_keep = keep[start:end]
            if bool(block_keep.all()):
                continue
            targets = None if tensors_per_block is None else tensors_per_block[position]
            self.blocks[position].scale_(block_keep, targets)

    def zero_norm_mask(self) -> torch.Tensor:
        """Bool per group: True where every entry of the group is exactly zero now (its norm is 0).

        Not to be confused with `HSPG.zero_mask`, the groups the optimizer has *fixed* at zero.
        """
        return self.norms() == 0

    def summary(self) -> list[dict]:
        """Per-layer counts of kept / total groups for each structure."""
        zero = self.zero_norm_mask()
        rows: dict[object, dict] = {}
        for block, (start, end) in zip(self.blocks, self.block_ranges(), strict=True):
            row = rows.setdefault(block.layer, {"layer": block.layer})
            kept = int((~zero[start:end]).sum())
            row[block.structure] = (kept, block.num_groups, block.unit, block.prunable)
        return list(rows.values())

    def __str__(self) -> str:
        structures = self.structures()
        family = f" ({self.spec.name}, {self.spec.origin} spec)" if self.spec else ""
        lines = [f"GroupSet: {len(self)} zero-invariant groups{family}"]
        header = "  layer | " + " | ".join(f"{s} kept/total" for s in structures)
        lines.append(header)
        for row in self.summary():
            cells = []
            for structure in structures:
                if structure not in row:
                    cells.append("-")
                    continue
                kept, total, unit, prunable = row[structure]
                cells.append(f"{kept}/{total} {unit}s" + ("" if prunable else " (frozen)"))
            layer = "-" if row["layer"] is None else str(row["layer"])
            lines.append(f"  {layer:>5} | " + " | ".join(cells))
        return "\n".join(lines)

    __repr__ = __str__


def resolve(module: nn.Module, path: str) -> nn.Module:
    """`module.a.b.c` for path ``"a.b.c"``."""
    return module.get_submodule(path)


def _projection_slices(
    layer: nn.Module, prefix: str, path: str, side: str, parts: tuple[str, ...], num_groups: int, widths: dict
) -> list[ParamSlice]:
    """The slices of one projection (`configuration_oto.layer_projections`): its weight along the grouped side, and its
    bias for output rows; one region per part when the projection is fused."""
    module = resolve(layer, path)
    tensors = [("weight", module.weight, grouped_dim(module, side))]
    if side == "out" and getattr(module, "bias", None) is not None:
        tensors.append(("bias", module.bias, 0))
    slices = []
    for leaf, tensor, dim in tensors:
        if len(parts) == 1:
            slices.append(ParamSlice(f"{prefix}.{path}.{leaf}", tensor, dim))
            continue
        offset = 0
        for kind in parts:
            length = num_groups * widths[kind]
            name = f"{prefix}.{path}.{leaf}[{offset}:{offset + length}]"
            slices.append(ParamSlice(name, tensor, dim, offset, length))
            offset += length
    return slices


def build_groups(
    model: nn.Module,
    prune: Sequence[str] = STRUCTURES,
    unprunable_layers: Iterable[int] = (),
) -> GroupSet:
    """Find every zero-invariant group of a model.

    Args:
        model: a `PreTrainedModel` with or without a task head. Families with a hand-written spec are grouped
            directly; any other family gets an inferred spec, proven on a random copy of the model before use
            (`hf_oto.verification`).
        prune: which structures may be driven to zero: ``"attention"`` (heads / KV groups) and/or ``"ffn"``.
        unprunable_layers: layer indices whose groups are listed but frozen (never pruned).

    Raises `UnsupportedModelError` for a model whose groups cannot be found or proven, naming why.
    """
    spec = get_spec(model)
    _check_prune(prune)
    if spec.inferred:
        from .verification import verify_spec  # verification slims models: imported on use, not at import

        verify_spec(model, spec, [structure for structure in STRUCTURES if structure in prune])
    return build_groups_with_spec(model, spec, prune, unprunable_layers)


def _check_prune(prune: Sequence[str]) -> None:
    unknown = set(prune) - set(STRUCTURES)
    if unknown:
        raise ValueError(f"prune={list(prune)}: unknown structure(s) {sorted(unknown)}; choose from {STRUCTURES}.")


def build_groups_with_spec(
    model: nn.Module,
    spec: ArchitectureSpec,
    prune: Sequence[str] = STRUCTURES,
    unprunable_layers: Iterable[int] = (),
) -> GroupSet:
    """The groups `spec` describes in `model`, without verifying the spec (see `build_groups`)."""
    _check_prune(prune)
    config = model.config
    base = model.base_model
    name_prefix = f"{model.base_model_prefix}." if base is not model else ""
    layers = resolve(base, spec.layers)
    frozen = set(unprunable_layers)
    bad = sorted(i for i in frozen if not 0 <= i < len(layers))
    if bad:
        raise ValueError(
            f"unprunable_layers {bad} out of range: the model has {len(layers)} layers (0-{len(layers) - 1})."
        )

    layout = spec.layout(config)
    head_dim = layout["head_dim"]
    projections = layer_projections(layout)
    blocks: list[GroupBlock] = []
    for index, layer in enumerate(layers):
        layer_prefix = f"{name_prefix}{spec.layers}.{index}"
        heads, num_kv, width = layer_counts(layer, layout)
        per_group = heads // num_kv if num_kv else 1
        widths = {kind: part_width(kind, per_group, head_dim) for kind in ("q", "kv", "qkv", "ffn")}
        for structure, layer_projs, count in ((ATTENTION, projections[0], num_kv), (FFN, projections[1], width)):
            if not count:
                continue
            slices = []
            for path, side, parts in layer_projs:
                slices += _projection_slices(layer, layer_prefix, path, side, parts, count, widths)
            attention = structure == ATTENTION
            blocks.append(
                GroupBlock(
                    structure,
                    count,
                    slices,
                    layer=index,
                    prunable=structure in prune and index not in frozen,
                    unit=("head" if per_group == 1 else "kv group") if attention else "neuron",
                    queries_per_group=per_group if attention else 1,
                    head_dim=head_dim if attention else None,
                )
            )
    return GroupSet(blocks, spec=spec)
