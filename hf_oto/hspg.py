"""HSPG: the Half-Space Stochastic Projected Gradient optimizer of Only-Train-Once.

HSPG minimizes ``f(x) + λ Σ_g ‖x_g‖₂`` over the zero-invariant groups of a `GroupSet` and, unlike a
proximal method, lands whole groups on *exactly* zero under stochastic gradients. It is a drop-in
`torch.optim.Optimizer`: parameters outside every group (embeddings, LayerNorms, heads) and parameters of
unprunable blocks get the plain base step (AdamW or SGD with heavy-ball momentum), bit-compatible with torch.

Per-group work is vectorized twice over: over the groups of a block (one reshape per parameter slice) and
over layers (same-shaped blocks, e.g. every layer's attention, are stacked into a `_Unit` and handled with
one kernel per slice *position*). Elementwise work over the parameter list uses `torch._foreach_*` kernels.
On a GPU, where an optimizer step is bound by kernel launches, this keeps HSPG's launches per step at
~100 in stage 1 and ~260 in the projection window for a 12-layer BERT (a unit holds up to
`ACCELERATOR_UNIT_NUMEL` entries, so deeper or wider models get more units)
(`bench/optimizer_launches.py`). See `HSPG` for the exact update rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .groups import ATTENTION, FFN, GroupSet, ParamSlice

VARIANTS = ("adamw", "sgd")
SALIENCIES = ("magnitude", "taylor")
TAYLOR_EMA_DECAY = 0.99
"""Decay of the Taylor-importance moving average: a horizon of ~100 steps, smoothing per-batch noise."""
TAYLOR_WARMUP_STEPS = 200
"""The average starts this many steps before ``n_p`` (its first use): older terms would weigh < 14%."""
STATE_FORMAT = 1
CPU_CHUNK_NUMEL = 1 << 22
"""On CPU, elementwise temporaries live in a reused workspace of this many entries (see `_Workspace`)."""
ACCELERATOR_UNIT_NUMEL = 1 << 26
"""On accelerators, same-shaped blocks are stacked (`_Unit`) up to this many entries: bounded extra memory."""


class NonFiniteGradientError(FloatingPointError):
    """A gradient holds NaN or Inf. The message names the parameter."""


class _Block:
    """A prunable `GroupBlock` as HSPG sees it: its flat group range and, per slice, its param-group index."""

    __slots__ = ("block", "start", "end", "slices", "param_groups")

    def __init__(self, block, start: int, end: int, slices: list[ParamSlice], param_groups: list[int]):
        self.block = block
        self.start = start
        self.end = end
        self.slices = slices
        self.param_groups = param_groups

    def signature(self) -> tuple:
        """Blocks with equal signatures can be stacked: same group count and, per slice, shape, dim, dtype,
        device and param group."""
        return (
            self.block.num_groups,
            tuple(
                (tuple(piece.param.shape), piece.dim, piece.param.dtype, piece.param.device, pg)
                for piece, pg in zip(self.slices, self.param_groups, strict=True)
            ),
        )

    @property
    def numel(self) -> int:
        return sum(piece.param.numel() for piece in self.slices)


class _Unit:
    """Blocks of one layout (typically one structure in consecutive layers) that HSPG steps together.

    Per-group work runs on the blocks' slices stacked along a new leading "layer" dimension ``L``, so a step
    launches a few kernels per slice *position* (e.g. "query weight") instead of a few per slice: on a GPU the
    step is otherwise bound by kernel-launch latency. Per-group quantities of a unit are ``(L, G)`` tensors;
    ``index`` maps them to flat group indices. A unit of one block works on views, without copies.
    """

    def __init__(self, blocks: list[_Block], position: int) -> None:
        self.blocks = blocks
        self.position = position
        self.layers = len(blocks)
        self.num_groups = blocks[0].block.num_groups
        first = blocks[0]
        self.dims = [piece.dim for piece in first.slices]
        self.param_groups = first.param_groups
        self.by_param_group: dict[int, list[int]] = {}
        """Param-group index -> slice positions in it (the carried-part factor is shared per param group)."""
        for index, pg_index in enumerate(self.param_groups):
            self.by_param_group.setdefault(pg_index, []).append(index)
        self.params = [[block.slices[j].param for block in blocks] for j in range(len(first.slices))]
        """Per slice position, the ``L`` parameters (one per block)."""
        self.index_cpu = torch.cat([torch.arange(block.start, block.end) for block in blocks])
        self.index = self.index_cpu
        """Flat group index of every ``(l, g)``, row-major (on the parameters' device once HSPG places it)."""
        self.keep: Tensor | None = None
        """``(L, G)`` float mask, 0 on zero groups; None while the unit has no zero group."""

    def broadcast_shape(self, j: int, layers: int) -> list[int]:
        """Shape of an ``(L, G)`` factor broadcasting against position `j` stacked with its groups unflattened."""
        shape = [1] * (self.params[j][0].dim() + 2)
        shape[0], shape[self.dims[j] + 1] = layers, self.num_groups
        return shape


def _make_units(blocks: list[_Block], budget: float) -> list[_Unit]:
    """Bucket blocks by signature (first-seen order) and cut each bucket into units of at most `budget` entries."""
    buckets: dict[tuple, list[_Block]] = {}
    for block in blocks:
        buckets.setdefault(block.signature(), []).append(block)
    units: list[_Unit] = []
    for bucket in buckets.values():
        run: list[_Block] = []
        for block in bucket:
            if run and (len(run) + 1) * block.numel > budget:
                units.append(_Unit(run, len(units)))
                run = []
            run.append(block)
        units.append(_Unit(run, len(units)))
    return units


def _add_rows(out: Tensor, rows: list[int], values: Tensor) -> None:
    """``out[rows] += values`` for an ``(L, G)`` accumulator (all rows: a plain in-place add)."""
    if len(rows) == out.shape[0]:
        out += values
    else:
        out.index_add_(0, torch.tensor(rows, device=out.device), values)


def _runs(items: list, sizes: list[int], budget: float) -> list[list]:
    """Consecutive runs of `items` whose `sizes` sum to at most `budget` (an item larger than it runs alone)."""
    runs, run, total = [], [], 0
    for item, size in zip(items, sizes, strict=True):
        if run and total + size > budget:
            runs.append(run)
            run, total = [], 0
        run.append(item)
        total += size
    if run:
        runs.append(run)
    return runs


def _stacked_group_sum(values: Tensor, dim: int, num_groups: int) -> Tensor:
    """Per-group sums, float32 ``(L, G)``, of `values` shaped ``(L, *param_shape)`` with groups along ``dim``.

    Dimensions before the grouped one are reduced first (a fast, vectorized column reduction), then the rest.
    """
    if dim:
        values = values.sum(dim=tuple(range(1, dim + 1)), dtype=torch.float32)
    return values.reshape(values.shape[0], num_groups, -1).sum(2, dtype=torch.float32)


def _grouped(piece: ParamSlice, tensor: Tensor, num_groups: int) -> Tensor:
    """`tensor` (shaped like `piece.param`) viewed with the slice's dimension unflattened into (G, chunk)."""
    return tensor.unflatten(piece.dim, (num_groups, -1))


def _chunks(rows: list[tuple], budget: float, split: bool) -> list[list[tuple]]:
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
    return _runs(pieces, [piece[0].numel() for piece in pieces], budget)


class _Workspace:
    """Reusable scratch memory for the CPU path: flat buffers per dtype and slot, allocated once.

    A `_foreach_*` call that returns new tensors allocates fresh memory each step, and on CPU the page faults
    then cost more than the arithmetic (measured: ~5x a sqrt). Temporaries are instead written into views of
    these buffers, one chunk of parameters at a time (`CPU_CHUNK_NUMEL` entries, or the largest grouped
    parameter if larger): a few percent of the optimizer state.
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


def _workspace_for(device: torch.device, largest_param: int) -> _Workspace | None:
    """The CPU path's reusable scratch memory; None on accelerators, whose caching allocator is cheap."""
    return _Workspace(max(CPU_CHUNK_NUMEL, largest_param)) if device.type == "cpu" else None


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


class HSPG(torch.optim.Optimizer):
    r"""Half-Space Stochastic Projected Gradient (Chen et al., "Only Train Once", NeurIPS 2021).

    Solves ``min_x f(x) + λ Σ_g ‖x_g‖₂`` where ``g`` runs over the prunable zero-invariant groups.

    **Base direction** ``d`` (per parameter, per param group's hyperparameters):

    - ``variant="adamw"``: ``m ← β₁m + (1-β₁)g``, ``v ← β₂v + (1-β₂)g²``,
      ``d = m̂/(√v̂ + eps) + wd·x`` with ``m̂ = m/(1-β₁ᵗ)``, ``v̂ = v/(1-β₂ᵗ)`` (decoupled weight decay,
      exactly `torch.optim.AdamW`).
    - ``variant="sgd"``: ``b ← μb + (g + wd·x)`` (``b = g + wd·x`` on the first step or when ``μ = 0``),
      ``d = b`` (exactly `torch.optim.SGD` with heavy-ball momentum).

    **Stage 1**, clock ``t < n_p`` (subgradient stage), for every non-zero prunable group::

        x_g ← x_g − lr·(d_g + λ·x_g/‖x_g‖)

    With ``prox=True`` stage 1 takes the proximal (group soft-threshold) step instead::

        y = x − lr·d,   x_g ← max(0, 1 − lr·λ/‖y_g‖)·y_g

    **Stage 2**, clock ``t ≥ n_p`` (half-space stage), for every non-zero prunable group, the trial point::

        x̃_g = x_g − lr·(d_g + λ·x_g/‖x_g‖)
        x_g ← 0   if x̃_gᵀx_g < ε·‖x_g‖²   (or ‖x_g‖ = 0),   else x_g ← x̃_g

    A group set to zero in stage 2 joins the zero mask: it stays exactly zero for the rest of training,
    takes no step, and its optimizer moments are cleared (HSPG zeroes that group's entries of ``p.grad`` in
    place before the moment update, so they stay cleared).

    **Target group sparsity** ``s`` (optional; needs the total step count ``T``): exactly
    ``K = ⌊s·N⌋`` of the ``N`` prunable groups are zero after the deadline step
    ``t_last = ⌊deadline·T⌋ − 1`` (``projection_deadline=0.8`` leaves ≥ 20% of the steps for the network to
    adapt). From ``n_p`` to ``t_last`` every step:

    1. *Candidates*: ``K`` is split into per-structure quotas ``K_k`` (``⌊s·N_k⌋``, the remainder to the
       largest fractional parts; see `structure_quotas`), so heads and FFN neurons are pruned in the same
       proportion. Per structure, the ``K_k − #zero_k`` active groups of smallest saliency are candidates
       (stable sort, ties broken by group index: deterministic on every process). The saliency is
       ``‖x_g‖/√|g|`` (``saliency="magnitude"``) or the first-order Taylor estimate of the loss change when
       the group is removed, ``EMA_t |x_gᵀ∇_g f|`` (``saliency="taylor"``; decay `TAYLOR_EMA_DECAY`, updated
       with each step's gradient from `TAYLOR_WARMUP_STEPS` before ``n_p`` to the deadline, zero groups
       excluded).
    2. *Adaptive penalty*: a candidate's carried part is shrunk by ``c_t = 1 − 1/(t_last − t + 1)`` on top
       of its step, ``x̃_g = c_t·(1 − lr·wd − lr·λ/‖x_g‖)·x_g − lr·m̂/(√v̂+eps)``. This is a per-group
       adaptive ``λ_g = ‖x_g‖(1 − c_t)/lr``; the product of the ``c_t`` telescopes to 0 at ``t_last``.
    3. *Capped half-space projection*: a candidate is projected early when ``x̃_gᵀx_g < ε‖x_g‖²``; only
       candidates may be projected, so the zero count never exceeds ``K``.
    4. At ``t ≥ t_last`` every remaining candidate is projected (its shrink factor is 0 there), so exactly
       ``K`` groups are zero; after that no group is projected again.

    Non-candidates take the plain stage-2 step ``x_g − lr·(d_g + λ·x_g/‖x_g‖)``, never projected. The zero
    count is monotone. Without a target, ``λ`` and ``ε`` alone decide the sparsity, as in the paper.

    The clock ``t`` counts `step()` calls, including steps skipped for non-finite gradients, and `skip_step()`
    calls (steps an fp16 `GradScaler` skipped before they reached HSPG), so that it
    agrees with the Trainer's step counter and the lr schedule; Adam's bias correction counts real updates.

    Args:
        params: tensors or torch-style param-group dicts (each may set ``lr``, ``weight_decay``, ``betas``,
            ``eps``, ``momentum``). A learning-rate scheduler rescales ``group["lr"]``; each step uses it.
        groups: the `GroupSet` (from `hf_oto.build_groups` or built by hand). Each grouped parameter must be
            optimized here and belong to exactly one block. ``None``: no groups, HSPG is plain AdamW/SGD.
        lr: base learning rate (> 0).
        lam: group-lasso weight ``λ ≥ 0``.
        epsilon: half-space control ``ε ∈ [0, 1)``; larger projects more aggressively.
        n_p: the switch step into stage 2: an int number of steps (≥ 0) or a fraction in (0, 1) of the total.
        variant: ``"adamw"`` (default) or ``"sgd"``.
        betas, eps, weight_decay: AdamW hyperparameters (defaults of each param group).
        momentum: SGD heavy-ball momentum (``variant="sgd"``).
        prox: use the proximal group soft-threshold step in stage 1.
        target_group_sparsity: fraction ``s ∈ [0, 1)`` of the prunable groups to drive to exactly zero.
        total_steps: total number of `step()` calls ``T``; may be given later with `set_total_steps`.
        projection_deadline: fraction of ``T`` by which the last projection happens, in (0, 0.8].
        saliency: how target mode ranks groups for removal: ``"taylor"`` (default: moving average of
            ``|x_gᵀ∇_g f|``, the first-order loss change of removing the group) or ``"magnitude"``
            (size-normalized norm). On SQuAD (one seed), Taylor lost 0.7 F1 at 30% sparsity where magnitude lost 7.9.
        skip_nonfinite_steps: skip a step whose gradients hold NaN/Inf (counted in `sparsity_report`)
            instead of raising `NonFiniteGradientError`.
        process_group: the torch.distributed group whose ranks must agree on projections (default: world).

    Integration: the Trainer (or user) calls ``set_total_steps(T)`` before the first step when
    ``total_steps`` was not passed; `sparsity_report()` gives a plain dict for logging, `zero_mask()` the
    optimizer's zero groups, and ``optimizer.groups`` is the `GroupSet`.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        groups: GroupSet | None = None,
        *,
        lr: float,
        lam: float = 1e-3,
        epsilon: float = 0.0,
        n_p: int | float = 0.25,
        variant: str = "adamw",
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        prox: bool = False,
        target_group_sparsity: float | None = None,
        total_steps: int | None = None,
        projection_deadline: float = 0.8,
        saliency: str = "taylor",
        skip_nonfinite_steps: bool = False,
        process_group: Any = None,
    ) -> None:
        _check_positive("lr", lr)
        _check_range("lam", lam, 0.0, math.inf, high_open=True)
        _check_range("epsilon", epsilon, 0.0, 1.0)
        _check_n_p(n_p)
        if variant not in VARIANTS:
            raise ValueError(f"variant={variant!r} is unknown; choose one of {VARIANTS}.")
        if saliency not in SALIENCIES:
            raise ValueError(f"saliency={saliency!r} is unknown; choose one of {SALIENCIES}.")
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas={betas!r} must be a pair (beta1, beta2).")
        for index, beta in enumerate(betas):
            _check_range(f"betas[{index}]", beta, 0.0, 1.0)
        _check_positive("eps", eps)
        _check_range("weight_decay", weight_decay, 0.0, math.inf, high_open=True)
        _check_range("momentum", momentum, 0.0, 1.0)
        if target_group_sparsity is not None:
            _check_range("target_group_sparsity", target_group_sparsity, 0.0, 1.0)
        if not 0.0 < projection_deadline <= 0.8:
            raise ValueError(
                f"projection_deadline={projection_deadline!r} must be in (0, 0.8]: at least 20% of the steps "
                "must remain after the last projection."
            )
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum": momentum,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            _check_range("weight_decay", group["weight_decay"], 0.0, math.inf, high_open=True)

        self.groups = groups if groups is not None else GroupSet([])
        self.lam = float(lam)
        self.epsilon = float(epsilon)
        self.n_p = n_p
        self.variant = variant
        self.prox = bool(prox)
        self.target_group_sparsity = None if target_group_sparsity is None else float(target_group_sparsity)
        self.projection_deadline = float(projection_deadline)
        self.saliency = saliency
        self.skip_nonfinite_steps = bool(skip_nonfinite_steps)
        self.process_group = process_group
        self.total_steps: int | None = None
        self._t = 0
        self._skipped = 0

        self._plan_groups()
        self._zero = torch.zeros(len(self.groups), dtype=torch.bool, device=self._device)
        self._last_candidates = torch.zeros((), dtype=torch.long, device=self._device)
        self._importance = torch.zeros(len(self.groups), device=self._device)
        """Taylor saliency: EMA of ``|x_gᵀ∇_g f|`` per group (``saliency="taylor"`` only)."""
        self._sync_zero_cpu()
        if total_steps is not None:
            self.set_total_steps(total_steps)

    # ------------------------------------------------------------------ setup

    def _plan_groups(self) -> None:
        """Map every grouped parameter to its param group; check the one-block-per-parameter rule."""
        owner: dict[int, int] = {}
        self._names: dict[int, str] = {}
        for index, group in enumerate(self.param_groups):
            names = group.get("param_names")
            for position, p in enumerate(group["params"]):
                owner[id(p)] = index
                self._names[id(p)] = (
                    names[position] if names else f"param_groups[{index}]['params'][{position}] {tuple(p.shape)}"
                )
        seen: dict[int, str] = {}
        self._blocks: list[_Block] = []
        self._grouped: set[int] = set()
        for block, (start, end) in zip(self.groups.blocks, self.groups.block_ranges(), strict=True):
            where = block.describe(0).rsplit(" ", 1)[0]
            for piece in block.slices:
                key = id(piece.param)
                if key in seen:
                    raise ValueError(
                        f"parameter {piece.name} appears in two group blocks ({seen[key]} and {where}); a grouped "
                        "parameter must belong to exactly one block."
                    )
                seen[key] = where
                self._names[key] = piece.name
            missing = [piece.name for piece in block.slices if id(piece.param) not in owner]
            if not block.prunable:
                continue  # unprunable groups: plain base step, nothing else
            if missing:
                raise ValueError(
                    f"grouped parameter(s) {missing} are not optimized by this HSPG (requires_grad=False or left "
                    "out of params); optimize them or mark their GroupBlock prunable=False."
                )
            self._blocks.append(
                _Block(block, start, end, list(block.slices), [owner[id(piece.param)] for piece in block.slices])
            )
            self._grouped.update(id(piece.param) for piece in block.slices)
        first = next(iter(self.groups.params()), None)
        self._device = first.device if first is not None else torch.device("cpu")
        self._prunable = (
            self.groups.prunable_mask().to(self._device)
            if len(self.groups)
            else torch.zeros(0, dtype=torch.bool, device=self._device)
        )
        self._num_prunable = int(self._prunable.sum())
        self._workspace = _workspace_for(self._device, max((p.numel() for p in self.groups.params()), default=0))
        self._chunk_numel = self._workspace.numel if self._workspace is not None else math.inf
        self._units = _make_units(self._blocks, min(self._chunk_numel, ACCELERATOR_UNIT_NUMEL))
        for unit in self._units:
            unit.index = unit.index_cpu.to(self._device)
        self._inv_sqrt_size = self.groups.group_sizes().rsqrt().to(self._device) if len(self.groups) else torch.zeros(0)
        self._structure = (
            self.groups.structure_index().to(self._device) if len(self.groups) else torch.zeros(0, dtype=torch.long)
        )
        self._num_structures = max(len(self.groups.structures()), 1)
        self._quotas = self.structure_quotas() if self.target_group_sparsity is not None else None

    def set_total_steps(self, total_steps: int) -> None:
        """Tell HSPG how many `step()` calls training makes; resolves a fractional ``n_p`` and the target schedule.

        The Trainer calls this once it knows ``max_steps`` (before the first step). Raises `ValueError` when the
        schedule cannot fit: ``n_p`` after the projection deadline while a target is set.
        """
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"total_steps={total_steps!r} must be a positive int.")
        if self.total_steps is not None and total_steps != self.total_steps and self._t > 0:
            raise ValueError(
                f"total_steps is already {self.total_steps} and {self._t} steps were taken; it cannot change to "
                f"{total_steps} mid-training."
            )
        self.total_steps = total_steps
        self._check_schedule()

    @property
    def switch_step(self) -> int | None:
        """``n_p`` in steps: the first step of stage 2 (None while a fractional ``n_p`` is unresolved)."""
        if isinstance(self.n_p, int):
            return self.n_p
        if self.total_steps is None:
            return None
        return int(math.floor(self.n_p * self.total_steps))

    @property
    def deadline_step(self) -> int | None:
        """``t_last``: the step at which the last projection happens (target mode only)."""
        if self.target_group_sparsity is None or self.total_steps is None:
            return None
        return max(int(math.floor(round(self.projection_deadline * self.total_steps, 9))) - 1, 0)

    @property
    def target_zero_groups(self) -> int | None:
        """``K = ⌊s·N⌋`` over the ``N`` prunable groups (target mode only)."""
        if self.target_group_sparsity is None:
            return None
        return int(math.floor(round(self.target_group_sparsity * self._num_prunable, 9)))

    def structure_quotas(self) -> Tensor:
        """Zero groups to reach per structure (heads, FFN neurons, ...): see `structure_quotas`."""
        counts = torch.bincount(self._structure[self._prunable], minlength=self._num_structures)
        return structure_quotas(counts, self.target_group_sparsity)

    def _select_candidates(self, norms_squared: Tensor) -> Tensor:
        """This step's candidates: per structure, the active groups of smallest saliency still needed to reach
        its quota (stable sort: ties go to the lower group index, identically on every process)."""
        active = self._prunable & ~self._zero
        zeros = torch.bincount(self._structure[self._zero & self._prunable], minlength=self._num_structures)
        need = (self._quotas.to(zeros.device) - zeros).clamp(min=0)
        score = self._importance if self.saliency == "taylor" else norms_squared.sqrt() * self._inv_sqrt_size
        saliency = torch.where(active, score, torch.full_like(norms_squared, math.inf))
        order = torch.sort(saliency, stable=True).indices
        structure_sorted = self._structure[order]
        one_hot = torch.nn.functional.one_hot(structure_sorted, self._num_structures)
        rank_in_structure = (one_hot.cumsum(0) - 1).gather(1, structure_sorted[:, None]).squeeze(1)
        chosen_sorted = rank_in_structure < need[structure_sorted]
        candidates = torch.zeros_like(active)
        candidates[order] = chosen_sorted
        return candidates & active

    def _check_schedule(self) -> None:
        """Raise `ValueError` when the stage switch or the target schedule cannot be resolved or cannot fit."""
        if self.switch_step is None:
            raise ValueError(
                f"n_p={self.n_p} is a fraction of the total steps, which are unknown: pass total_steps=... or call "
                "set_total_steps(n) before the first step, or give n_p as an int number of steps."
            )
        if self.target_group_sparsity is None:
            return
        if self.total_steps is None:
            raise ValueError(
                f"target_group_sparsity={self.target_group_sparsity} needs the total number of steps: pass "
                "total_steps=... or call set_total_steps(n) before the first step."
            )
        if self.switch_step > self.deadline_step:
            raise ValueError(
                f"n_p={self.n_p} resolves to step {self.switch_step}, after the last projection step "
                f"{self.deadline_step} (= {self.projection_deadline}·total_steps − 1 with total_steps="
                f"{self.total_steps}); choose a smaller n_p so that the target can be reached with ≥20% of the "
                "steps left."
            )

    # ------------------------------------------------------------------ public helpers

    def zero_mask(self) -> Tensor:
        """Bool per group of `groups` (flat index): True where HSPG has fixed the group at exactly zero."""
        return self._zero.clone()

    @property
    def stage(self) -> int:
        """1 before ``n_p`` (subgradient stage), 2 from ``n_p`` on (half-space stage), for the next step."""
        switch = self.switch_step
        return 2 if switch is not None and self._t >= switch else 1

    def state_bytes(self) -> int:
        """Bytes HSPG keeps between steps: per-parameter state, per-group state and the CPU workspace."""
        total = self._workspace.nbytes if self._workspace is not None else 0
        tensors = [t for state in self.state.values() for t in state.values() if torch.is_tensor(t)]
        tensors += [self._zero, self._last_candidates, self._prunable, self._inv_sqrt_size]
        return total + sum(t.numel() * t.element_size() for t in tensors)

    @property
    def current_step(self) -> int:
        """Number of `step()` calls so far, plus `skip_step()` calls (the schedule clock)."""
        return self._t

    def skip_step(self) -> None:
        """Advance the schedule clock for a step skipped before it reached HSPG, without updating anything.

        `torch.amp.GradScaler` (fp16) skips ``optimizer.step()`` when the scaled gradients overflow; calling this
        then keeps ``n_p``, the projection deadline and the lr schedule on the same clock (`OTOTrainer` does it).
        """
        self._skipped += 1
        self._t += 1

    @torch.no_grad()
    def sparsity_report(self) -> dict[str, Any]:
        """A plain dict describing the group sparsity now: counts, per-layer zero heads/neurons, norm summaries.

        One device-to-host transfer in all (no per-group ``.item()``).
        """
        norms = self.groups.norms().to(self._device) if len(self.groups) else torch.zeros(0, device=self._device)
        packed = torch.stack([norms, self._zero.float(), self._prunable.float()]) if len(self.groups) else None
        head = torch.stack([self._last_candidates.float()])
        if packed is None:
            cpu_norms = torch.zeros(0)
            zero = prunable = torch.zeros(0, dtype=torch.bool)
            candidates = 0
        else:
            flat = torch.cat([packed.flatten(), head]).cpu()
            n = len(self.groups)
            cpu_norms, zero, prunable = flat[:n], flat[n : 2 * n].bool(), flat[2 * n : 3 * n].bool()
            candidates = int(flat[-1])
        num_zero = int(zero.sum())
        zero_prunable = int((zero & prunable).sum())
        exact = int(((cpu_norms == 0) & prunable).sum())
        kept = prunable & ~zero

        def _summary(values: Tensor) -> dict[str, float | None]:
            if values.numel() == 0:
                return {"count": 0, "min": None, "max": None, "mean": None, "median": None}
            return {
                "count": int(values.numel()),
                "min": float(values.min()),
                "max": float(values.max()),
                "mean": float(values.mean()),
                "median": float(values.median()),
            }

        per_layer: dict[Any, dict[str, Any]] = {}
        zero_heads = zero_kv = zero_neurons = 0
        for block, (start, end) in zip(self.groups.blocks, self.groups.block_ranges(), strict=True):
            count = int(zero[start:end].sum())
            row = per_layer.setdefault(block.layer, {"layer": block.layer})
            if block.structure == ATTENTION:
                entry = row.setdefault(
                    ATTENTION, {"zero_kv_groups": 0, "kv_groups": 0, "zero_query_heads": 0, "query_heads": 0}
                )
                entry["zero_kv_groups"] += count
                entry["kv_groups"] += block.num_groups
                entry["zero_query_heads"] += count * block.queries_per_group
                entry["query_heads"] += block.num_groups * block.queries_per_group
                zero_kv += count
                zero_heads += count * block.queries_per_group
            elif block.structure == FFN:
                entry = row.setdefault(FFN, {"zero_neurons": 0, "neurons": 0})
                entry["zero_neurons"] += count
                entry["neurons"] += block.num_groups
                zero_neurons += count
            else:
                entry = row.setdefault(block.structure, {"zero_groups": 0, "groups": 0})
                entry["zero_groups"] += count
                entry["groups"] += block.num_groups
            entry["prunable"] = entry.get("prunable", True) and block.prunable
        deadline = self.deadline_step
        return {
            "step": self._t,
            "stage": self.stage,
            "switch_step": self.switch_step,
            "total_steps": self.total_steps,
            "num_groups": len(self.groups),
            "num_prunable_groups": self._num_prunable,
            "zero_groups": num_zero,
            "group_sparsity": zero_prunable / self._num_prunable if self._num_prunable else 0.0,
            "exactly_zero_groups": exact,
            "target_group_sparsity": self.target_group_sparsity,
            "target_zero_groups": self.target_zero_groups,
            "deadline_step": deadline,
            "candidates": candidates,
            "shrink_rate": (
                1.0 / (deadline - self._t + 1)
                if deadline is not None and self.switch_step is not None and self.switch_step <= self._t <= deadline
                else 0.0
            ),
            "lam": self.lam,
            "epsilon": self.epsilon,
            "zero_heads": zero_heads,
            "zero_kv_groups": zero_kv,
            "zero_ffn_neurons": zero_neurons,
            "skipped_steps": self._skipped,
            "per_layer": list(per_layer.values()),
            "zero_group_norms": _summary(cpu_norms[zero]),
            "nonzero_group_norms": _summary(cpu_norms[kept]),
        }

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Torch's optimizer state plus an ``"hspg"`` entry (plain numbers, strings and tensors only)."""
        state = super().state_dict()
        state["hspg"] = {
            "format": STATE_FORMAT,
            "variant": self.variant,
            "prox": self.prox,
            "step": self._t,
            "skipped_steps": self._skipped,
            "stage": self.stage,
            "zero_mask": self._zero.clone(),
            "last_candidates": self._last_candidates.clone(),
            "num_groups": len(self.groups),
            "lam": self.lam,
            "epsilon": self.epsilon,
            "n_p": self.n_p,
            "total_steps": self.total_steps,
            "target_group_sparsity": self.target_group_sparsity,
            "target_zero_groups": self.target_zero_groups,
            "projection_deadline": self.projection_deadline,
            "deadline_step": self.deadline_step,
            "saliency": self.saliency,
            "importance": self._importance.clone(),
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore everything `state_dict` saved; the input dict is not modified."""
        state_dict = dict(state_dict)
        extra = state_dict.pop("hspg", None)
        if extra is not None:
            if extra.get("variant") != self.variant:
                raise ValueError(
                    f"this state was saved by HSPG(variant={extra.get('variant')!r}); the optimizer uses "
                    f"variant={self.variant!r}."
                )
            if int(extra["num_groups"]) != len(self.groups):
                raise ValueError(
                    f"this state has {extra['num_groups']} groups but the optimizer's GroupSet has {len(self.groups)}; "
                    "rebuild the groups of the same model."
                )
        super().load_state_dict(state_dict)
        if extra is None:
            return
        self.prox = bool(extra["prox"])
        self._t = int(extra["step"])
        self._skipped = int(extra["skipped_steps"])
        self._zero = extra["zero_mask"].to(device=self._device, dtype=torch.bool).clone()
        self._last_candidates = extra["last_candidates"].to(device=self._device, dtype=torch.long).clone()
        self.lam = float(extra["lam"])
        self.epsilon = float(extra["epsilon"])
        self.n_p = extra["n_p"]
        self.total_steps = extra["total_steps"]
        self.target_group_sparsity = extra["target_group_sparsity"]
        self.projection_deadline = float(extra["projection_deadline"])
        self.saliency = extra.get("saliency", "magnitude")
        if "importance" in extra:
            self._importance = extra["importance"].to(device=self._device, dtype=torch.float32).clone()
        self._quotas = self.structure_quotas() if self.target_group_sparsity is not None else None
        self._sync_zero_cpu()

    def _sync_zero_cpu(self) -> None:
        """Host copy of the zero count, and each unit's keep mask (None for units without zero groups)."""
        zero = self._zero.cpu()
        self._zero_count = int(zero.sum())
        for unit in self._units:
            rows = zero[unit.index_cpu].view(unit.layers, unit.num_groups)
            unit.keep = (~rows).float().to(self._device) if bool(rows.any()) else None

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One HSPG step (see the class docstring). Returns the closure's loss when one is given.

        Order: check gradients; mask zero groups' gradients (stage 2); read every group's norm from the current
        point and derive its factor, candidates and shrink; per param group, update the moments and apply
        ``x ← (factor·shrink·keep)·x + step`` while accumulating the half-space inner products; finally decide
        the projections (agreed across ranks) and zero those groups and their moments.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._check_schedule()
        work = self._collect()
        if not self._gradients_finite(work):
            self.skip_step()
            return loss
        self._init_state(work)

        t = self._t
        stage2 = t >= self.switch_step
        deadline = self.deadline_step
        # Target mode: projections run from n_p until K groups are zero (at the deadline at the latest).
        projecting = stage2 and (deadline is None or t <= deadline or self._zero_count < self.target_zero_groups)
        if stage2:
            self._mask_zero_group_grads()
        if (
            self.saliency == "taylor"
            and deadline is not None
            and self.switch_step - TAYLOR_WARMUP_STEPS <= t <= deadline
        ):
            self._update_importance()
        plan = self._plan(t, deadline, stage2, projecting)
        for pg_index, (group, items) in enumerate(zip(self.param_groups, work, strict=True)):
            if not items:
                continue
            if self.variant == "adamw":
                self._adamw_update(group, pg_index, items, plan)
            else:
                self._sgd_update(group, pg_index, items, plan)
        if projecting:
            self._project(t, deadline, plan)
        else:
            self._last_candidates = torch.zeros((), dtype=torch.long, device=self._device)
        if self.prox and not stage2 and self.lam:
            self._prox_threshold()
        self._t += 1
        return loss

    def _plan(self, t: int, deadline: int | None, stage2: bool, projecting: bool) -> _Plan:
        """Everything read from the current point before it changes: norms, factors, candidates, shrink.

        Per unit and param group the multiplier of the carried part is ``f·c·keep`` with
        ``f = 1 − lr·wd − lr·λ/‖x_g‖`` (AdamW; ``1 − lr·λ/‖x_g‖`` for SGD, whose weight decay is in the
        direction), ``c`` the candidates' shrink and ``keep`` 0 on zero groups. The trial inner product is
        accumulated as ``Σ f·c·‖x_slice‖²`` here and ``+ wᵀx`` during the update.
        """
        plan = _Plan()
        plan.projecting = projecting
        use_lam = bool(self.lam) and not (self.prox and not stage2)
        plan.nsq = torch.zeros(len(self.groups), device=self._device)
        unit_parts = []
        for unit in self._units:
            sq = torch.stack([self._sq_norms(unit, j, params) for j, params in enumerate(unit.params)])  # (P, L, G)
            nsq = sq.sum(0)
            plan.nsq[unit.index] = nsq.flatten()
            unit_parts.append((sq, nsq))

        shrink = None
        if projecting and deadline is not None:
            plan.candidates = self._select_candidates(plan.nsq)
            remaining = max(deadline - t + 1, 1)
            plan.final = remaining == 1
            shrink = torch.where(plan.candidates, 1.0 - 1.0 / remaining, 1.0)
        for unit, (sq, nsq) in zip(self._units, unit_parts, strict=True):
            inv_norm = torch.where(nsq > 0, nsq.rsqrt(), torch.zeros_like(nsq)) if use_lam else None
            unit_shrink = shrink[unit.index].view_as(nsq) if shrink is not None else None
            carry = None
            for pg_index, positions in unit.by_param_group.items():
                pg = self.param_groups[pg_index]
                base = 1.0 - pg["lr"] * pg["weight_decay"] if self.variant == "adamw" else 1.0
                factor = base - (pg["lr"] * self.lam) * inv_norm if use_lam else torch.full_like(nsq, base)
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

    def _update_importance(self) -> None:
        """Fold this step's ``|x_gᵀ∇_g f|`` into the Taylor-importance EMA (zero groups have a zero gradient)."""
        for unit in self._units:
            dots = torch.zeros(unit.layers, unit.num_groups, device=self._device)
            for j, params in enumerate(unit.params):
                present = [index for index, p in enumerate(params) if p.grad is not None]
                if present:
                    grads = [params[index].grad for index in present]
                    self._add_dots(unit, j, present, [params[index] for index in present], grads, 1.0, dots)
            importance = self._importance[unit.index].lerp_(dots.abs_().flatten(), 1.0 - TAYLOR_EMA_DECAY)
            self._importance[unit.index] = importance

    # Per-unit kernels: each works on one slice position of a unit, for the `present` layers (usually all).

    def _stack(self, tensors: list[Tensor], slot: int) -> Tensor:
        """`tensors` stacked along a new first dimension: a view for one tensor, else a copy (workspace on CPU)."""
        if len(tensors) == 1:
            return tensors[0].unsqueeze(0)
        if self._workspace is None:
            return torch.stack(tensors)
        return self._workspace.stacked(tensors, slot)

    def _sq_norms(self, unit: _Unit, j: int, tensors: list[Tensor]) -> Tensor:
        """Squared L2 norm of each group's entries of `tensors` (position `j`), float32, shape (L, G)."""
        stacked = self._stack(tensors, 2)
        if unit.dims[j] == 0:
            grouped = stacked.reshape(len(tensors), unit.num_groups, -1)
            return torch.linalg.vector_norm(grouped, dim=2, dtype=torch.float32).square()
        # A norm over leading dims is a slow strided reduction; square, then a fast column sum.
        return _stacked_group_sum(self._product(stacked, stacked), unit.dims[j], unit.num_groups)

    def _add_dots(
        self, unit: _Unit, j: int, present: list[int], a: list[Tensor], b: list[Tensor], scale: float, out: Tensor
    ) -> None:
        """``out[l, g] += scale · a_lᵀb_l`` over group g's entries, for the present layers l (position `j`)."""
        dots = _stacked_group_sum(self._product(self._stack(a, 3), self._stack(b, 2)), unit.dims[j], unit.num_groups)
        _add_rows(out, present, dots if scale == 1.0 else dots * scale)

    def _scale(
        self,
        unit: _Unit,
        j: int,
        present: list[int],
        tensors: list[Tensor],
        factors: Tensor,
        stacked: Tensor | None = None,
        addend: Tensor | None = None,
        alpha: float = 1.0,
    ) -> None:
        """Multiply group g of ``tensors[i]`` (layer ``present[i]`` of position `j`) by ``factors[present[i], g]``,
        in place, then add ``alpha·addend[i]`` if given. `stacked`: `tensors` already stacked by `_stack`."""
        if len(present) != unit.layers:
            factors = factors[torch.tensor(present, device=factors.device)]
        stacked = self._stack(tensors, 2) if stacked is None else stacked
        grouped = stacked.unflatten(unit.dims[j] + 1, (unit.num_groups, -1))
        grouped.mul_(factors.to(stacked.dtype).view(unit.broadcast_shape(j, len(tensors))))
        if addend is not None:
            stacked.add_(addend, alpha=alpha)
        if len(tensors) > 1:
            torch._foreach_copy_(tensors, list(stacked.unbind(0)))

    def _positions(self, pg_index: int, has_grad: dict[int, Any]):
        """(unit, slice position, present layers) for every unit position in param group `pg_index` with grads."""
        for unit in self._units:
            for j in unit.by_param_group.get(pg_index, ()):
                present = [index for index, p in enumerate(unit.params[j]) if id(p) in has_grad]
                if present:
                    yield unit, j, present

    def _scratch(self, tensors: list[Tensor], slot: int) -> list[Tensor] | None:
        """Workspace views for temporaries on CPU; None (allocate) on accelerators, whose caching allocator is
        cheap, and for tensors larger than the workspace (a plain parameter such as a big embedding)."""
        if self._workspace is None or sum(t.numel() for t in tensors) > self._workspace.numel:
            return None
        return self._workspace.views(tensors, slot)

    def _product(self, a: Tensor, b: Tensor) -> Tensor:
        out = self._scratch([a], 1)
        return torch.mul(a, b) if out is None else torch.mul(a, b, out=out[0])

    def _sqrt(self, tensors: list[Tensor]) -> list[Tensor]:
        out = self._scratch(tensors, 0)
        if out is None:
            return torch._foreach_sqrt(tensors)
        for tensor, target in zip(tensors, out, strict=True):
            torch.sqrt(tensor, out=target)
        return out

    def _adamw_update(self, group: dict, pg_index: int, items, plan: _Plan) -> None:
        """AdamW moments and update for one param group; grouped params get the HSPG carried-part factor."""
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
            rows[id(p)] = (
                p,
                state["exp_avg"],
                state["exp_avg_sq"],
                -lr / (1 - beta1**count),
                (1 - beta2**count) ** 0.5,
            )
        plain = [row for key, row in rows.items() if key not in self._grouped]
        if plain and wd != 0:
            torch._foreach_mul_([row[0] for row in plain], 1 - lr * wd)
        if plan.projecting:
            self._adamw_grouped_projecting(pg_index, rows, plan)
            stepped = plain
        else:
            # Grouped params: carried part x ← multiplier·x first, then the same step as every other param.
            for unit, j, present in self._positions(pg_index, rows):
                params = [unit.params[j][index] for index in present]
                self._scale(unit, j, present, params, plan.multipliers[unit.position, pg_index])
            stepped = list(rows.values())
        for chunk in _chunks(stepped, self._chunk_numel, split=True):
            params, ms, vs, sizes, bc2 = (list(column) for column in zip(*chunk, strict=True))
            denom = self._sqrt(vs)
            torch._foreach_div_(denom, bc2)
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params, ms, denom, sizes)
            del denom

    def _adamw_grouped_projecting(self, pg_index: int, rows: dict, plan: _Plan) -> None:
        """Grouped params on a projecting step: the step w also enters the half-space inner products wᵀx.

        The steps of many slice positions are built together (one set of `_foreach_*` kernels per run of
        positions within the chunk budget: all of them on an accelerator), then applied per position.
        """
        eps = self.param_groups[pg_index]["eps"]
        positions = list(self._positions(pg_index, rows))
        sizes_of = [sum(unit.params[j][i].numel() for i in present) for unit, j, present in positions]
        for run in _runs(positions, sizes_of, self._chunk_numel):
            members = [rows[id(unit.params[j][i])] for unit, j, present in run for i in present]
            params, ms, vs, sizes, bc2 = (list(column) for column in zip(*members, strict=True))
            # The step w = size·m̂/(√v̂+eps) = m / ((√v/bc2 + eps)/size), built in place of the denominator.
            steps = self._sqrt(vs)
            torch._foreach_div_(steps, [b * s for b, s in zip(bc2, sizes, strict=True)])
            torch._foreach_add_(steps, [eps / s for s in sizes])
            torch._foreach_reciprocal_(steps)
            torch._foreach_mul_(steps, ms)
            offset = 0
            for unit, j, present in run:
                end = offset + len(present)
                self._projecting_update(unit, j, present, params[offset:end], steps[offset:end], 1.0, pg_index, plan)
                offset = end

    def _projecting_update(
        self,
        unit: _Unit,
        j: int,
        present: list[int],
        params: list[Tensor],
        steps: list[Tensor],
        alpha: float,
        pg_index: int,
        plan: _Plan,
    ) -> None:
        """``x ← multiplier·x + alpha·w`` for one slice position, accumulating ``alpha·wᵀx`` per group first."""
        stacked = self._stack(params, 2)
        stacked_steps = self._stack(steps, 3)
        dots = _stacked_group_sum(self._product(stacked_steps, stacked), unit.dims[j], unit.num_groups)
        _add_rows(plan.dot[unit.position], present, dots if alpha == 1.0 else dots * alpha)
        multiplier = plan.multipliers[unit.position, pg_index]
        self._scale(unit, j, present, params, multiplier, stacked=stacked, addend=stacked_steps, alpha=alpha)

    def _sgd_directions(self, group: dict, chunk) -> list[Tensor]:
        """torch.optim.SGD's direction ``g + wd·x``, through the heavy-ball buffer when momentum is set."""
        wd, momentum = group["weight_decay"], group["momentum"]
        directions = [g for _, g, _ in chunk]
        if wd != 0:
            params = [p for p, _, _ in chunk]
            out = self._scratch(params, 0)
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

    def _sgd_update(self, group: dict, pg_index: int, items, plan: _Plan) -> None:
        """SGD (heavy-ball) update for one param group, torch.optim.SGD semantics plus the HSPG factor."""
        lr = group["lr"]
        plain = [item for item in items if id(item[0]) not in self._grouped]
        for chunk in _chunks(plain, self._chunk_numel, split=False):
            torch._foreach_add_([p for p, _, _ in chunk], self._sgd_directions(group, chunk), alpha=-lr)
        by_id = {id(item[0]): item for item in items}
        for unit, j, present in self._positions(pg_index, by_id):
            chunk = [by_id[id(unit.params[j][index])] for index in present]
            params = [p for p, _, _ in chunk]
            directions = self._sgd_directions(group, chunk)
            if plan.projecting:
                self._projecting_update(unit, j, present, params, directions, -lr, pg_index, plan)
            else:
                self._scale(unit, j, present, params, plan.multipliers[unit.position, pg_index])
                torch._foreach_add_(params, directions, alpha=-lr)

    def _project(self, t: int, deadline: int | None, plan: _Plan) -> None:
        """Decide the half-space projections, agree on them across ranks, and zero those groups and moments."""
        active = self._prunable & ~self._zero
        trial = torch.zeros_like(plan.nsq)  # x̃ᵀx per group
        for unit in self._units:
            trial[unit.index] = (plan.carry[unit.position] + plan.dot[unit.position]).flatten()
        crossed = (trial < self.epsilon * plan.nsq) | (plan.nsq == 0)
        if plan.candidates is None:
            decision = active & crossed
        else:
            self._last_candidates = plan.candidates.sum()
            decision = plan.candidates if plan.final else plan.candidates & crossed
        decision = self._agree(decision)
        new_cpu = decision.cpu()
        if not bool(new_cpu.any()):
            return
        self._zero |= decision
        for block in self._blocks:
            indices = new_cpu[block.start : block.end].nonzero().flatten()
            if indices.numel():
                self._fill_zero(block, indices.to(self._device), moments=True)
        self._sync_zero_cpu()

    def _fill_zero(self, block: _Block, indices: Tensor, moments: bool) -> None:
        """Set the given groups of `block` to exactly zero in the parameters (and their moments)."""
        g = block.block.num_groups
        for piece in block.slices:
            targets = [piece.param]
            if moments:
                state = self.state.get(piece.param, {})
                targets += [state.get(key) for key in ("exp_avg", "exp_avg_sq", "momentum_buffer")]
            for target in targets:
                if target is not None:
                    _grouped(piece, target, g).index_fill_(piece.dim, indices, 0)

    def _collect(self) -> list[list[tuple[Tensor, Tensor, dict]]]:
        """Per param group, (param, grad, state) for every parameter that has a gradient."""
        work = []
        for group in self.param_groups:
            items = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"HSPG does not support sparse gradients ({self._names.get(id(p), 'param')}).")
                items.append((p, p.grad, self.state[p]))
            work.append(items)
        return work

    def _init_state(self, work) -> None:
        """Create the per-parameter state on a parameter's first real step (torch's layout)."""
        for group, items in zip(self.param_groups, work, strict=True):
            for p, _, state in items:
                if state:
                    continue
                if self.variant == "adamw":
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                elif group["momentum"]:
                    state["momentum_buffer"] = None

    def _gradients_finite(self, work) -> bool:
        """One reduction over every gradient; raise (or return False to skip) on NaN/Inf."""
        grads = [g for items in work for _, g, _ in items]
        if not grads:
            return True
        # An L2 norm is much faster than a max-abs; NaN/Inf make it non-finite. A finite gradient whose norm
        # overflows is confirmed entry by entry (rare), so it is never mistaken for a non-finite one.
        finite = torch.isfinite(torch.stack([n.float() for n in torch._foreach_norm(grads)]))
        if bool(finite.all()):
            return True
        finite = torch.tensor([bool(ok) or bool(torch.isfinite(g).all()) for ok, g in zip(finite.tolist(), grads)])
        if bool(finite.all()):
            return True
        if self.skip_nonfinite_steps:
            return False
        params = [p for items in work for p, _, _ in items]
        bad = [self._names.get(id(params[i]), "parameter") for i in (~finite).nonzero().flatten().tolist()]
        raise NonFiniteGradientError(
            f"non-finite gradient (NaN or Inf) in {bad[0]}"
            + (f" and {len(bad) - 1} other parameter(s)" if len(bad) > 1 else "")
            + f" at step {self._t}. Lower the learning rate, check the data, or pass skip_nonfinite_steps=True."
        )

    def _agree(self, decision: Tensor) -> Tensor:
        """Under torch.distributed, every rank adopts rank 0's projection decision (one small broadcast)."""
        if not (dist.is_available() and dist.is_initialized()):
            return decision
        group = self.process_group
        if dist.get_world_size(group) == 1:
            return decision
        payload = decision.to(torch.uint8)
        if dist.get_backend(group) == "nccl" and payload.device.type != "cuda":
            payload = payload.cuda()
        src = dist.get_global_rank(group, 0) if group is not None else 0
        dist.broadcast(payload, src=src, group=group)
        return payload.to(device=decision.device, dtype=torch.bool)

    def _mask_zero_group_grads(self) -> None:
        """Zero the gradient entries of zero groups so that their moments stay cleared."""
        for unit in self._units:
            if unit.keep is None:
                continue
            for j, params in enumerate(unit.params):
                present = [index for index, p in enumerate(params) if p.grad is not None]
                if present:
                    self._scale(unit, j, present, [params[index].grad for index in present], unit.keep)

    def _prox_threshold(self) -> None:
        """Stage-1 proximal step: group soft-threshold ``max(0, 1 − lr·λ/‖y_g‖)`` of the post-step point."""
        for unit in self._units:
            nsq = sum(self._sq_norms(unit, j, params) for j, params in enumerate(unit.params))
            inv_norm = torch.where(nsq > 0, nsq.rsqrt(), torch.zeros_like(nsq))
            for pg_index, positions in unit.by_param_group.items():
                lr = self.param_groups[pg_index]["lr"]
                factor = (1.0 - lr * self.lam * inv_norm).clamp_(min=0.0)
                for j in positions:
                    self._scale(unit, j, list(range(unit.layers)), unit.params[j], factor)


class _Plan:
    """Per-step quantities read from the current point (see `HSPG._plan`)."""

    def __init__(self) -> None:
        self.nsq: Tensor | None = None
        self.candidates: Tensor | None = None
        self.final = False
        self.projecting = False
        self.multipliers: dict[tuple[int, int], Tensor] = {}
        """(unit position, param-group index) -> ``(L, G)`` multiplier of the carried part."""
        self.carry: list[Tensor] = []
        """Per unit, ``(L, G)``: Σ over slices of f·c·‖x_slice‖² (projecting steps only)."""
        self.dot: list[Tensor] = []
        """Per unit, ``(L, G)``: Σ over slices of wᵀx, accumulated during the update (projecting steps only)."""


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number > 0.")


def _check_range(name: str, value: float, low: float, high: float, high_open: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < high:
        raise ValueError(f"{name}={value!r} must be in [{low}, {high}).")


def _check_n_p(n_p: int | float) -> None:
    if isinstance(n_p, bool) or not isinstance(n_p, (int, float)):
        raise ValueError(f"n_p={n_p!r} must be an int number of steps (≥ 0) or a float fraction in (0, 1).")
    if isinstance(n_p, int) and n_p < 0:
        raise ValueError(f"n_p={n_p!r} must be ≥ 0 when given in steps.")
    if isinstance(n_p, float) and not 0.0 < n_p < 1.0:
        raise ValueError(f"n_p={n_p!r} as a fraction of the total steps must be in (0, 1).")
