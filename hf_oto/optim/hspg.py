"""HSPG: the Half-Space Stochastic Projected Gradient optimizer of Only-Train-Once.

HSPG minimizes ``f(x) + λ Σ_g ‖x_g‖₂`` over the zero-invariant groups of a `GroupSet` and, unlike a
proximal method, lands whole groups on *exactly* zero under stochastic gradients. It is a drop-in
`torch.optim.Optimizer`: parameters outside every group (embeddings, LayerNorms, heads) and parameters of
unprunable blocks get the plain base step (AdamW or SGD with heavy-ball momentum), bit-compatible with torch.

This module holds the class: the hyperparameters and their checks, the state, and a `step()` that
orchestrates. The math lives in free functions: `schedule` (stage, deadline, quotas, shrink), `saliency`
(removal ranking), `layout` (how groups are stacked into units), `kernels` (grouped operations and the
AdamW/SGD steps), `report` (the sparsity report).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

from .. import groups as group_module  # a module import: hf_oto.groups itself imports this package
from . import schedule
from .hyperparameters import DEFAULT_PROJECTION_DEADLINE, DEFAULT_SALIENCY, check_hyperparameters
from .kernels import StepPlan, adamw_update, build_plan, is_sharded, prox_threshold, sgd_update, unit_norms_squared
from .layout import Block, GroupLayout
from .report import sparsity_report
from .saliency import Saliency, make_saliency
from .sharded import ShardedGroupLayout

if TYPE_CHECKING:
    from ..groups import GroupSet

STATE_FORMAT = 2
"""Version of the ``"hspg"`` entry of `HSPG.state_dict`; 1 kept the Taylor importance at the top level."""
LOADABLE_STATE_FORMATS = (1, 2)
RESUME_FIELDS = ("lam", "epsilon", "n_p", "target_group_sparsity", "projection_deadline", "prox", "saliency")
"""Settings a resumed state must agree on with the optimizer it is loaded into (else `load_state_dict` refuses)."""


class NonFiniteGradientError(FloatingPointError):
    """A gradient holds NaN or Inf. The message names the parameter."""


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
    ``t_last = ⌊deadline·T⌋ − 1``. From ``n_p`` to ``t_last`` every step:

    1. *Candidates*: ``K`` is split into per-structure quotas (`schedule.structure_quotas`), so heads and FFN
       neurons are pruned in the same proportion. Per structure, the active groups of smallest saliency still
       needed are candidates (stable sort, ties by group index: deterministic on every process).
    2. *Adaptive penalty*: a candidate's carried part is shrunk by ``c_t = 1 − 1/(t_last − t + 1)`` on top
       of its step, ``x̃_g = c_t·(1 − lr·wd − lr·λ/‖x_g‖)·x_g − lr·m̂/(√v̂+eps)``: a per-group adaptive
       ``λ_g = ‖x_g‖(1 − c_t)/lr``; the product of the ``c_t`` telescopes to 0 at ``t_last``.
    3. *Capped half-space projection*: a candidate is projected early when ``x̃_gᵀx_g < ε‖x_g‖²``; only
       candidates may be projected, so the zero count never exceeds ``K``.
    4. At ``t ≥ t_last`` every remaining candidate is projected, so exactly ``K`` groups are zero.

    Non-candidates take the plain stage-2 step, never projected. Without a target, ``λ`` and ``ε`` alone
    decide the sparsity, as in the paper.

    The clock ``t`` counts `step()` calls, including steps skipped for non-finite gradients, and `skip_step()`
    calls (steps an fp16 `GradScaler` skipped), so that it agrees with the Trainer's step counter and the lr
    schedule; Adam's bias correction counts real updates.

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
            ``|x_gᵀ∇_g f|``), ``"magnitude"`` (size-normalized norm), or a `hf_oto.optim.Saliency` instance.
            On SQuAD (one seed), Taylor lost 0.7 F1 at 30% sparsity where magnitude lost 7.9.
        skip_nonfinite_steps: skip a step whose gradients hold NaN/Inf (counted in `sparsity_report`)
            instead of raising `NonFiniteGradientError`.
        process_group: the torch.distributed group whose ranks must agree on projections (default: world).
        layout: ``"auto"`` (default), ``"stacked"`` or ``"workspace"``: see `hf_oto.optim.layout`.
        unit_numel: most entries stacked into one unit (and per workspace chunk); default from the layout.
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
        projection_deadline: float = DEFAULT_PROJECTION_DEADLINE,
        saliency: str | Saliency = DEFAULT_SALIENCY,
        skip_nonfinite_steps: bool = False,
        process_group: Any = None,
        layout: str = "auto",
        unit_numel: int | None = None,
    ) -> None:
        check_hyperparameters(
            dict(
                lr=lr,
                lam=lam,
                epsilon=epsilon,
                n_p=n_p,
                variant=variant,
                saliency=saliency,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                momentum=momentum,
                target_group_sparsity=target_group_sparsity,
                projection_deadline=projection_deadline,
            )
        )
        if groups is not None and not isinstance(groups, group_module.GroupSet):
            raise TypeError(
                f"groups must be a GroupSet (from hf_oto.build_groups(model)), not {type(groups).__name__}."
            )
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "momentum": momentum}
        super().__init__(params, defaults)
        for index, group in enumerate(self.param_groups):
            check_hyperparameters(
                {key: group[key] for key in ("betas", "eps", "weight_decay", "momentum")} | {"group_lr": group["lr"]},
                where=f"param_groups[{index}]: ",
            )

        self.groups = groups if groups is not None else group_module.GroupSet([])
        self.lam = float(lam)
        self.epsilon = float(epsilon)
        self.n_p = n_p
        self.variant = variant
        self.prox = bool(prox)
        self.target_group_sparsity = None if target_group_sparsity is None else float(target_group_sparsity)
        self.projection_deadline = float(projection_deadline)
        self.skip_nonfinite_steps = bool(skip_nonfinite_steps)
        self.process_group = process_group
        self.total_steps: int | None = None
        self._t = 0
        self._skipped = 0

        blocks, self._names = index_blocks(self.groups, self.param_groups)
        first = next(iter(self.groups.params()), None)
        self._device = first.device if first is not None else torch.device("cpu")
        largest = max((p.numel() for p in self.groups.params()), default=0)
        self.layout = make_layout(blocks, self._device, layout, unit_numel, largest)
        self._grouped, self._regioned = self.layout.grouped_ids, self.layout.regioned_ids
        n = len(self.groups)
        self._prunable = self.groups.prunable_mask().to(self._device) if n else torch.zeros(0, dtype=torch.bool)
        self._num_prunable = int(self._prunable.sum())
        self._group_sizes = self.groups.group_sizes().to(self._device) if n else torch.zeros(0)
        self._structure = self.groups.structure_index().to(self._device) if n else torch.zeros(0, dtype=torch.long)
        self._num_structures = max(len(self.groups.structures()), 1)
        self._quotas = self.structure_quotas() if self.target_group_sparsity is not None else None
        self.saliency = make_saliency(saliency)
        self.saliency.bind(self._group_sizes)
        self._zero = torch.zeros(n, dtype=torch.bool, device=self._device)
        self._last_candidates = torch.zeros((), dtype=torch.long, device=self._device)
        self._sync_zero_cpu()
        if total_steps is not None:
            self.set_total_steps(total_steps)

    # ------------------------------------------------------------------ schedule

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
        return schedule.switch_step(self.n_p, self.total_steps)

    @property
    def deadline_step(self) -> int | None:
        """``t_last``: the step at which the last projection happens (target mode only)."""
        if self.target_group_sparsity is None or self.total_steps is None:
            return None
        return schedule.deadline_step(self.projection_deadline, self.total_steps)

    @property
    def target_zero_groups(self) -> int | None:
        """``K = ⌊s·N⌋`` over the ``N`` prunable groups (target mode only)."""
        if self.target_group_sparsity is None:
            return None
        return schedule.target_zero_groups(self.target_group_sparsity, self._num_prunable)

    def structure_quotas(self) -> Tensor:
        """Zero groups to reach per structure (heads, FFN neurons, ...): see `schedule.structure_quotas`."""
        counts = torch.bincount(self._structure[self._prunable], minlength=self._num_structures)
        return schedule.structure_quotas(counts, self.target_group_sparsity)

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

    @property
    def stage(self) -> int:
        """1 before ``n_p`` (subgradient stage), 2 from ``n_p`` on (half-space stage), for the next step."""
        return schedule.stage(self._t, self.switch_step)

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

    # ------------------------------------------------------------------ reporting

    def zero_mask(self) -> Tensor:
        """Bool per group of `groups` (flat index): True where HSPG has fixed the group at exactly zero."""
        return self._zero.clone()

    def state_bytes(self) -> int:
        """Bytes HSPG keeps between steps: per-parameter state, per-group state and the CPU workspace."""
        tensors = [self.layout.local(t) for state in self.state.values() for t in state.values() if torch.is_tensor(t)]
        tensors += [self._zero, self._last_candidates, self._prunable, self._group_sizes]
        tensors += [t for t in self.saliency.state_dict().values() if torch.is_tensor(t)]
        return self.layout.nbytes() + sum(t.numel() * t.element_size() for t in tensors)

    @torch.no_grad()
    def sparsity_report(self) -> dict[str, Any]:
        """A plain dict describing the group sparsity now: counts, per-layer zero heads/neurons, norm summaries.

        One device-to-host transfer in all. Under FSDP2 the group norms are all-reduced: every rank must call it.
        """
        deadline = self.deadline_step
        schedule_fields = {
            "step": self._t,
            "stage": self.stage,
            "switch_step": self.switch_step,
            "total_steps": self.total_steps,
            "target_group_sparsity": self.target_group_sparsity,
            "target_zero_groups": self.target_zero_groups,
            "deadline_step": deadline,
            "shrink_rate": schedule.shrink_rate(self._t, self.switch_step, deadline),
            "lam": self.lam,
            "epsilon": self.epsilon,
            "skipped_steps": self._skipped,
        }
        return sparsity_report(self.groups, self._zero, self._prunable, self._last_candidates, schedule_fields)

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
            "saliency": self.saliency.name,
            "saliency_state": self.saliency.state_dict(),
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore everything `state_dict` saved; the input dict is not modified.

        The state must come from an HSPG with the same settings (`RESUME_FIELDS`, variant, group count, and
        ``total_steps`` once set): a mismatch raises `ValueError` naming the setting, never a silent override.
        """
        state_dict = dict(state_dict)
        extra = state_dict.pop("hspg", None)
        if extra is not None:
            check_resumable(extra, self.resume_settings())
        super().load_state_dict(state_dict)
        if extra is None:
            return
        self._t = int(extra["step"])
        self._skipped = int(extra["skipped_steps"])
        self._zero = extra["zero_mask"].to(device=self._device, dtype=torch.bool).clone()
        self._last_candidates = extra["last_candidates"].to(device=self._device, dtype=torch.long).clone()
        if self.total_steps is None and extra["total_steps"] is not None:
            self.total_steps = int(extra["total_steps"])
        legacy = {"importance": extra["importance"]} if "importance" in extra else {}
        self.saliency.load_state_dict(extra.get("saliency_state", legacy))
        self._sync_zero_cpu()

    def resume_settings(self) -> dict[str, Any]:
        """The settings a state loaded into this optimizer must have been saved with."""
        settings = {field: getattr(self, field) for field in RESUME_FIELDS}
        settings |= {"variant": self.variant, "saliency": self.saliency.name, "num_groups": len(self.groups)}
        if self.total_steps is not None:
            settings["total_steps"] = self.total_steps
        return settings

    def _sync_zero_cpu(self) -> None:
        """Host copy of the zero count, and each unit's keep mask (None for units without zero groups)."""
        zero = self._zero.cpu()
        self._zero_count = int(zero.sum())
        self.layout.sync_keep(zero)

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
        raw = collect_gradients(self.param_groups, self.state, self._names)
        bad = nonfinite_gradients([(p, self.layout.local(g)) for items in raw for p, g, _ in items], self._names)
        if not self.layout.all_ranks_agree(not bad):
            if self.skip_nonfinite_steps:
                self.skip_step()
                return loss
            raise NonFiniteGradientError(
                f"non-finite gradient (NaN or Inf) in {bad[0] if bad else 'a parameter shard of another rank'}"
                + (f" and {len(bad) - 1} other parameter(s)" if len(bad) > 1 else "")
                + f" at step {self._t}. Lower the learning rate, check the data, or pass skip_nonfinite_steps=True."
            )
        init_state(self.param_groups, raw, self.variant, eager_momentum=self.layout.kind == "sharded" or self._regioned)
        work = self.layout.localize(raw)

        t = self._t
        stage2 = t >= self.switch_step
        deadline = self.deadline_step
        # Target mode: projections run from n_p until K groups are zero (at the deadline at the latest).
        projecting = stage2 and (deadline is None or t <= deadline or self._zero_count < self.target_zero_groups)
        if stage2:
            self.layout.mask_grads()
        if self.saliency.observes_gradients and self.saliency.wants_observation(t, self.switch_step, deadline):
            self.saliency.observe(self.layout.gradient_dots(len(self.groups)))
        plan = self._plan(t, deadline, stage2, projecting)
        update = adamw_update if self.variant == "adamw" else sgd_update
        for pg_index, (group, items) in enumerate(zip(self.param_groups, work, strict=True)):
            if items:
                update(self.layout, group, pg_index, items, plan, self._grouped)
        if projecting:
            self._project(plan)
        else:
            self._last_candidates = torch.zeros((), dtype=torch.long, device=self._device)
        if self.prox and not stage2 and self.lam:
            prox_threshold(self.layout, self.param_groups, self.lam)
        self._t += 1
        return loss

    def _plan(self, t: int, deadline: int | None, stage2: bool, projecting: bool) -> StepPlan:
        """Read everything the step needs from the current point: norms, candidates and their shrink."""
        candidates = shrink = None
        final = False
        norms_squared, unit_norms = unit_norms_squared(self.layout, len(self.groups))
        if projecting and deadline is not None:
            candidates = self._select_candidates(norms_squared)
            rate, final = schedule.candidate_shrink(t, deadline)
            shrink = torch.where(candidates, rate, 1.0)
        use_lam = bool(self.lam) and not (self.prox and not stage2)
        plan = build_plan(
            self.layout, self.param_groups, self.variant, self.lam if use_lam else 0.0, unit_norms, shrink, projecting
        )
        plan.norms_squared, plan.candidates, plan.final = norms_squared, candidates, final
        return plan

    def _select_candidates(self, norms_squared: Tensor) -> Tensor:
        """Per structure, the active groups of smallest saliency still needed to reach its quota."""
        return schedule.select_candidates(
            self.saliency.scores(norms_squared),
            self._prunable & ~self._zero,
            self._zero & self._prunable,
            self._structure,
            self._quotas,
            self._num_structures,
        )

    def _project(self, plan: StepPlan) -> None:
        """Decide the half-space projections, agree on them across ranks, and zero those groups and moments."""
        active = self._prunable & ~self._zero
        trial = torch.zeros_like(plan.norms_squared)  # x̃ᵀx per group
        for unit in self.layout.units:
            dot = self.layout.reduce_(plan.dot[unit.position])
            trial[unit.index] = (plan.carry[unit.position] + dot).flatten()
        crossed = (trial < self.epsilon * plan.norms_squared) | (plan.norms_squared == 0)
        if plan.candidates is None:
            decision = active & crossed
        else:
            self._last_candidates = plan.candidates.sum()
            decision = plan.candidates if plan.final else plan.candidates & crossed
        decision = agree_across_ranks(decision, self.process_group)
        new_cpu = decision.cpu()
        if not bool(new_cpu.any()):
            return
        self._zero |= decision
        for block in self.layout.blocks:
            indices = new_cpu[block.start : block.end].nonzero().flatten()
            if indices.numel():
                self.layout.fill_zero_(block, indices.to(self._device), self.state)
        self._sync_zero_cpu()


def index_blocks(groups: GroupSet, param_groups: list[dict]) -> tuple[list[Block], dict[int, str]]:
    """The prunable blocks with their param-group indices, and a name for every parameter (for messages).

    Checks that each grouped parameter belongs to exactly one block and that every prunable block's
    parameters are optimized here.
    """
    owner: dict[int, int] = {}
    names: dict[int, str] = {}
    for index, group in enumerate(param_groups):
        given = group.get("param_names")
        for position, p in enumerate(group["params"]):
            owner[id(p)] = index
            names[id(p)] = given[position] if given else f"param_groups[{index}]['params'][{position}] {tuple(p.shape)}"
    seen: dict[int, tuple[int, str]] = {}
    blocks: list[Block] = []
    missing_layers: dict[str, Any] = {}
    for position, (block, (start, end)) in enumerate(zip(groups.blocks, groups.block_ranges(), strict=True)):
        where = block.describe(0).rsplit(" ", 1)[0]
        for piece in block.slices:  # several slices of one block may share a parameter (regions of a fused one)
            key = id(piece.param)
            if seen.get(key, (position,))[0] != position:
                raise ValueError(
                    f"parameter {piece.name} appears in two group blocks ({seen[key][1]} and {where}); a grouped "
                    "parameter must belong to exactly one block."
                )
            if key not in seen:  # the parameter's name, without a region suffix such as "[0:32]"
                names[key] = piece.name if piece.whole else piece.name.rsplit("[", 1)[0]
            seen[key] = (position, where)
        if not block.prunable:
            continue  # unprunable groups: plain base step, nothing else
        missing = [piece.name for piece in block.slices if id(piece.param) not in owner]
        if missing:
            missing_layers.setdefault(missing[0], block.layer)
            continue
        blocks.append(Block(block, start, end, [owner[id(piece.param)] for piece in block.slices]))
    if missing_layers:
        layers = sorted({layer for layer in missing_layers.values() if layer is not None})
        raise ValueError(
            f"grouped parameter(s) {list(missing_layers)} are not optimized by this HSPG (requires_grad=False, e.g. "
            "frozen layers, or left out of params). Mark those layers unprunable: "
            f"OTOTrainingArguments(oto_unprunable_layers={layers}) or build_groups(model, unprunable_layers="
            f"{layers}); or optimize them."
        )
    return blocks, names


Work = list[list[tuple[Tensor, Tensor, dict]]]
"""Per param group, (param, grad, state) for every parameter that has a gradient."""


def collect_gradients(param_groups: list[dict], state: dict, names: dict[int, str]) -> Work:
    """Per param group, (param, grad, state) for every parameter that has a gradient (sparse ones refused)."""
    work = []
    for group in param_groups:
        items = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"HSPG does not support sparse gradients ({names.get(id(p), 'param')}).")
            items.append((p, p.grad, state[p]))
        work.append(items)
    return work


def init_state(param_groups: list[dict], work: Work, variant: str, eager_momentum: bool | set[int] = False) -> None:
    """Create the per-parameter state on a parameter's first real step (torch's layout). With
    `eager_momentum` (True: every parameter, when sharded; or a set of ``id(param)``: parameters stepped region
    by region) the SGD buffer starts as zeros shaped like the parameter, not None: ``0·μ + d`` equals torch's
    first-step copy of ``d``, the buffer is a DTensor like the parameter, and a region of it can be updated."""
    for group, items in zip(param_groups, work, strict=True):
        for p, _, state in items:
            if state:
                continue
            if variant == "adamw":
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            elif group["momentum"]:
                eager = eager_momentum is True or (isinstance(eager_momentum, set) and id(p) in eager_momentum)
                state["momentum_buffer"] = torch.zeros_like(p) if eager else None


def nonfinite_gradients(pairs: list[tuple[Tensor, Tensor]], names: dict[int, str]) -> list[str]:
    """Names of the parameters whose gradient holds NaN or Inf, from (param, grad) pairs: one reduction over
    every gradient, then a per-tensor check only when something is off."""
    grads = [g for _, g in pairs]
    if not grads:
        return []
    # An L2 norm is much faster than a max-abs; NaN/Inf make it non-finite. A finite gradient whose norm
    # overflows is confirmed entry by entry (rare), so it is never mistaken for a non-finite one.
    finite = torch.isfinite(torch.stack([n.float() for n in torch._foreach_norm(grads)]))
    if bool(finite.all()):
        return []
    return [
        names.get(id(p), "parameter")
        for ok, (p, g) in zip(finite.tolist(), pairs, strict=True)
        if not ok and not bool(torch.isfinite(g).all())
    ]


def agree_across_ranks(decision: Tensor, process_group: Any = None) -> Tensor:
    """Under torch.distributed, every rank adopts rank 0's projection decision (one small broadcast)."""
    if not (dist.is_available() and dist.is_initialized()):
        return decision
    if dist.get_world_size(process_group) == 1:
        return decision
    payload = decision.to(torch.uint8)
    if dist.get_backend(process_group) == "nccl" and payload.device.type != "cuda":
        payload = payload.cuda()
    src = dist.get_global_rank(process_group, 0) if process_group is not None else 0
    dist.broadcast(payload, src=src, group=process_group)
    return payload.to(device=decision.device, dtype=torch.bool)


def check_resumable(saved: dict[str, Any], settings: dict[str, Any]) -> None:
    """Refuse a saved ``"hspg"`` state whose format, group count or settings differ from `settings`."""
    if saved.get("format") not in LOADABLE_STATE_FORMATS:
        raise ValueError(
            f"this HSPG state has format {saved.get('format')!r}; this hf_oto reads formats "
            f"{list(LOADABLE_STATE_FORMATS)}. Resume with the hf_oto version that wrote it."
        )
    if saved.get("num_groups") != settings["num_groups"]:
        raise ValueError(
            f"this state has {saved.get('num_groups')} groups but the optimizer's GroupSet has "
            f"{settings['num_groups']}; rebuild the groups of the same model."
        )
    saved = {"saliency": "magnitude", **saved}  # format-1 states written before Taylor existed had no saliency
    for field, value in settings.items():
        if saved.get(field) != value:
            raise ValueError(
                f"this state was saved with {field}={saved.get(field)!r} but the optimizer has {field}={value!r}; "
                f"resume with the settings of the saved run (or start a new run to change {field})."
            )


def make_layout(
    blocks: list[Block], device: torch.device, layout: str, unit_numel: int | None, largest_param: int
) -> GroupLayout:
    """The layout for these blocks: ``"sharded"`` for FSDP2 DTensor parameters, else as `layout` says."""
    sharded = any(is_sharded(piece.param) for block in blocks for piece in block.slices)
    if sharded and layout not in ("auto", "sharded"):
        raise ValueError(f"layout={layout!r} cannot hold FSDP2-sharded (DTensor) parameters; use layout='auto'.")
    if sharded:
        return ShardedGroupLayout(blocks, device)
    if layout == "sharded":
        raise ValueError("layout='sharded' is for FSDP2-sharded (DTensor) parameters; these are plain tensors.")
    return GroupLayout(blocks, device, layout, unit_numel, largest_param=largest_param)
