"""`OTOTrainingArguments` and `OTOTrainer`: a drop-in `transformers.Trainer` that trains and compresses in one run.

The trainer overrides only what it must:

- `create_optimizer`: builds the zero-invariant groups and HSPG (with the Trainer's lr, schedule,
  decay/no-decay split and total step count).
- `log`: adds ``oto/*`` sparsity metrics to every training log (and the distillation losses with a teacher).
- `compute_loss`: with a teacher (``teacher_model=`` or `oto_teacher`), mixes in knowledge distillation
  (`hf_oto.distillation`); without one it is the Trainer's, untouched.
- `save_model` / `_save_checkpoint`: checkpoints stay dense (so resume is exact); the final save is slim.
- `create_model_card` / `push_to_hub` / `_push_from_checkpoint`: the OTO card and the slim folder only.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from huggingface_hub import HfApi
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import nested_gather
from transformers.trainer_utils import HubStrategy

from .accounting import SlimReport, model_shape, removed_costs
from .architectures import base_model_type, get_spec
from .distillation import (
    DEFAULT_ALPHA,
    DEFAULT_TEMPERATURE,
    build_distiller,
    distill_argument_problems,
    distill_compute_loss,
)
from .gather import gather_full_model, is_fsdp2_sharded
from .groups import ATTENTION, FFN, GroupSet, build_groups
from .model_card import PLOT_FILE, plot_layers, render_model_card
from .modeling_oto import auto_class_name, staged_save
from .optim import HSPG, MAX_PROJECTION_DEADLINE, SALIENCIES, VARIANTS, hyperparameter_problems, structure_quotas
from .optim.hyperparameters import DEFAULT_PROJECTION_DEADLINE, DEFAULT_SALIENCY, is_number, n_p_from_number
from .sharded_training import (
    DEEPSPEED_MESSAGE,
    check_sharding_enabled,
    install_hspg_on_shards,
    is_fsdp2,
    load_sharded_optimizer,
    refuse_unsupported_sharding,
    save_sharded_checkpoint,
    stand_in_optimizer,
)
from .slim import slim_model

logger = logging.getLogger(__name__)

PRUNE_CHOICES = {"heads": (ATTENTION,), "ffn": (FFN,), "both": (ATTENTION, FFN)}
HSPG_ARGUMENT_NAMES = {
    "lam": "oto_lambda",
    "epsilon": "oto_epsilon",
    "n_p": "oto_n_p",
    "target_group_sparsity": "oto_target_group_sparsity",
    "projection_deadline": "oto_projection_deadline",
    "saliency": "oto_saliency",
    "variant": "oto_variant",
    "momentum": "oto_momentum",
}
"""HSPG argument -> the `OTOTrainingArguments` field that sets it (validated by HSPG's own check)."""


@dataclass
class OTOTrainingArguments(TrainingArguments):
    r"""`TrainingArguments` plus the Only-Train-Once settings (all prefixed ``oto_``).

    Parameters:
        oto_lambda (`float`, defaults to `1e-3`):
            Group-lasso weight λ of HSPG's objective f(x) + λ Σ_g ‖x_g‖. Without a target sparsity, λ and
            `oto_epsilon` alone decide how many groups reach zero.
        oto_epsilon (`float`, defaults to `0.0`):
            Half-space control ε ∈ [0, 1): a group is projected to zero when its trial step x̃ satisfies
            x̃ᵀx < ε‖x‖². Larger values project more aggressively.
        oto_n_p (`float`, defaults to `0.25`):
            Switch step from HSPG's subgradient stage to its half-space stage: a fraction in (0, 1) of the
            total training steps, or a whole number (≥ 1) of steps.
        oto_target_group_sparsity (`float` or `None`, defaults to `None`):
            Fraction in [0, 1) of the prunable groups (attention heads / KV groups and FFN neurons) to drive to
            exactly zero during training. The optimizer reaches exactly ⌊s·N⌋ zero groups by
            `oto_projection_deadline` of training and never overshoots. `None`: λ and ε decide.
        oto_projection_deadline (`float`, defaults to `0.8`):
            Fraction in (0, 0.8] of the training steps by which the target's last group is zeroed; the steps
            after it let the remaining network adapt.
        oto_saliency (`str`, defaults to `"taylor"`):
            How the target mode picks the groups to remove: `"taylor"` (smallest moving average of
            |x_gᵀ∇_g f|, the first-order loss change of removing the group) or `"magnitude"` (smallest
            size-normalized norm; lost 7.9 F1 on SQuAD at 30% sparsity where Taylor lost 0.7, one seed).
        oto_variant (`str`, defaults to `"adamw"`):
            HSPG's base direction: `"adamw"` (the Trainer's adam_beta1/adam_beta2/adam_epsilon/weight_decay)
            or `"sgd"` (heavy-ball momentum `oto_momentum`).
        oto_momentum (`float`, defaults to `0.9`):
            Heavy-ball momentum of the `"sgd"` variant.
        oto_prune (`str`, defaults to `"both"`):
            Which structures may be pruned: `"heads"`, `"ffn"` or `"both"`.
        oto_unprunable_layers (`list[int]`, defaults to `[]`):
            Layer indices whose heads and neurons are never pruned.
        oto_save_slim (`bool`, defaults to `True`):
            Whether `save_model()` writes the physically slim model (checkpoints always stay dense).
        oto_verify_tolerance (`float` or `None`, defaults to `None`):
            Largest output difference allowed between the slim model and the dense group-sparse model when
            saving, relative to each output's scale `max(1, max|output|)`; `None` means 1e-5 for float32
            models and 5e-2 for half precision.
        oto_flops_seq_len (`int`, defaults to `128`):
            Sequence length at which FLOPs per token are reported (logs, model card).
        oto_skip_nonfinite_steps (`bool`, defaults to `False`):
            Skip an optimizer step whose gradients hold NaN/Inf instead of raising an error naming the parameter.
        oto_teacher (`str` or `None`, defaults to `None`):
            Folder or Hub id of a teacher for knowledge distillation, loaded with the Auto class of the student's
            task head (the command-line form of ``OTOTrainer(teacher_model=...)``; giving both is an error). The
            teacher runs in eval mode without gradients and is never optimized or saved.
        oto_distill_alpha (`float` or `None`, defaults to `None`):
            Weight α ∈ [0, 1] of the distillation loss: loss = (1 − α)·task + α·KD. `None` means 0.5 with a
            teacher. α = 0 without hidden-state distillation is an error (the teacher would do nothing).
        oto_distill_temperature (`float` or `None`, defaults to `None`):
            Temperature T > 0 that softens both logits before the KL divergence, which is scaled by T²
            (Hinton et al.). `None` means 2.0.
        oto_distill_hidden_weight (`float` or `None`, defaults to `None`):
            Weight β ≥ 0 of an extra MSE between student and teacher hidden states (needs equal hidden sizes).
            `None` or 0: off.
        oto_distill_layer_map (`list[str]` or `None`, defaults to `None`):
            Hidden-state pairs for that MSE, as ``(student_layer, teacher_layer)`` or ``"s:t"`` strings, indices
            into ``hidden_states`` (0 = embeddings). `None`: student layer i ↦ teacher layer ⌊i·L_t/L_s⌋ (the
            identity when the layer counts match).
    """

    oto_lambda: float = field(default=1e-3, metadata={"help": "Group-lasso weight λ (≥ 0)."})
    oto_epsilon: float = field(default=0.0, metadata={"help": "Half-space control ε in [0, 1)."})
    oto_n_p: float = field(
        default=0.25,
        metadata={"help": "Switch step to the half-space stage: fraction in (0, 1) of total steps, or whole steps."},
    )
    oto_target_group_sparsity: float | None = field(
        default=None, metadata={"help": "Fraction in [0, 1) of prunable groups to drive to exactly zero."}
    )
    oto_projection_deadline: float = field(
        default=DEFAULT_PROJECTION_DEADLINE,
        metadata={"help": f"Fraction in (0, {MAX_PROJECTION_DEADLINE}] of the steps by which the target is reached."},
    )
    oto_saliency: str = field(
        default=DEFAULT_SALIENCY, metadata={"help": f"Removal ranking in target mode: one of {sorted(SALIENCIES)}."}
    )
    oto_variant: str = field(default=VARIANTS[0], metadata={"help": f"HSPG base direction: one of {list(VARIANTS)}."})
    oto_momentum: float = field(default=0.9, metadata={"help": "Heavy-ball momentum of the sgd variant."})
    oto_prune: str = field(default="both", metadata={"help": "Structures to prune: heads, ffn or both."})
    oto_unprunable_layers: list[int] = field(
        default_factory=list, metadata={"help": "Layer indices that are never pruned."}
    )
    oto_save_slim: bool = field(default=True, metadata={"help": "Write the physically slim model on save_model()."})
    oto_verify_tolerance: float | None = field(
        default=None,
        metadata={"help": "Max output difference slim vs dense when saving, relative to scale (default 1e-5 fp32)."},
    )
    oto_flops_seq_len: int = field(default=128, metadata={"help": "Sequence length for FLOPs-per-token reports."})
    oto_skip_nonfinite_steps: bool = field(
        default=False, metadata={"help": "Skip steps with NaN/Inf gradients instead of raising."}
    )
    oto_teacher: str | None = field(
        default=None, metadata={"help": "Folder or Hub id of a teacher model for knowledge distillation."}
    )
    oto_distill_alpha: float | None = field(
        default=None, metadata={"help": f"Weight in [0, 1] of the distillation loss (default {DEFAULT_ALPHA})."}
    )
    oto_distill_temperature: float | None = field(
        default=None, metadata={"help": f"Distillation temperature > 0 (default {DEFAULT_TEMPERATURE})."}
    )
    oto_distill_hidden_weight: float | None = field(
        default=None, metadata={"help": "Weight ≥ 0 of the hidden-state MSE (default 0: off)."}
    )
    oto_distill_layer_map: list[str] | None = field(
        default=None, metadata={"help": "Hidden-state pairs 'student:teacher' (default: evenly spaced)."}
    )

    def __post_init__(self) -> None:
        if self.deepspeed:  # before TrainingArguments reads the DeepSpeed config
            raise NotImplementedError(DEEPSPEED_MESSAGE)
        super().__post_init__()
        refuse_unsupported_sharding(self)
        problems = hyperparameter_problems(self._hspg_values(), names=HSPG_ARGUMENT_NAMES)
        problems += self._trainer_problems() + distill_argument_problems(self)
        if problems:
            raise ValueError("Invalid OTO arguments: " + "; ".join(problems) + ".")

    def _hspg_values(self) -> dict[str, Any]:
        """The oto_* fields that HSPG takes, under HSPG's argument names (checked by the shared function)."""
        return {
            key: self.oto_n_p_value if key == "n_p" else getattr(self, name)
            for key, name in HSPG_ARGUMENT_NAMES.items()
        }

    def _trainer_problems(self) -> list[str]:
        """Checks of the fields HSPG does not take: pruned structures, frozen layers, saving and reporting."""
        problems = []
        if self.oto_prune not in PRUNE_CHOICES:
            problems.append(f"oto_prune={self.oto_prune!r} must be one of {sorted(PRUNE_CHOICES)}")
        layers = self.oto_unprunable_layers
        if not isinstance(layers, (list, tuple)) or any(not is_number(i) or int(i) != i or i < 0 for i in layers):
            problems.append(f"oto_unprunable_layers={layers!r} must be a list of layer indices ≥ 0 (use [] for none)")
        tolerance = self.oto_verify_tolerance
        if tolerance is not None and not (is_number(tolerance) and 0 < tolerance < math.inf):
            problems.append(
                f"oto_verify_tolerance={tolerance!r} must be None (automatic) or a finite number > 0; the slim "
                "model is always checked against the trained one"
            )
        if not (isinstance(self.oto_flops_seq_len, int) and self.oto_flops_seq_len >= 1):
            problems.append(f"oto_flops_seq_len={self.oto_flops_seq_len!r} must be an int ≥ 1")
        if self.push_to_hub and self.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
            problems.append(
                f"hub_strategy={self.hub_strategy.value!r} would push dense checkpoints; OTOTrainer pushes only slim "
                "models. Use hub_strategy='every_save' (a slim snapshot at each save) or 'end'"
            )
        return problems

    @property
    def oto_n_p_value(self) -> int | float:
        """`oto_n_p` as HSPG takes it: a float fraction in (0, 1), or an int number of whole steps."""
        return n_p_from_number(self.oto_n_p)

    def oto_settings(self) -> dict[str, Any]:
        """The OTO settings, as recorded in the slim config and the model card."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name.startswith("oto_")}


def loss_uses_num_items_in_batch(model: torch.nn.Module) -> bool:
    """Whether the model's loss really consumes the Trainer's `num_items_in_batch`.

    Models whose `forward` takes ``**kwargs`` but computes its own mean loss (BERT classifiers, QA heads)
    ignore it; the Trainer would still multiply their loss by the process count (docs/design.md §6), which
    changes HSPG's balance between the gradient and λ. Those models are trained with a plain mean loss.
    """
    try:
        source = inspect.getsource(type(model).forward)
    except (OSError, TypeError):
        return False
    return any("loss_function(" in line and "**kwargs" in line for line in source.splitlines())


class SkippedStepClock(TrainerCallback):
    """Keeps HSPG's schedule on the Trainer's step count under fp16: when accelerate's `GradScaler` skips an
    optimizer step (overflowing gradients), HSPG never sees it, so its clock is advanced here instead."""

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None and getattr(optimizer, "step_was_skipped", False):
            hspg = _unwrap_hspg(optimizer)
            if hspg is not None:
                hspg.skip_step()


def _unwrap_hspg(optimizer: Any) -> HSPG | None:
    """The HSPG inside accelerate's `AcceleratedOptimizer` (or the optimizer itself), else None."""
    while optimizer is not None and not isinstance(optimizer, HSPG):
        optimizer = getattr(optimizer, "optimizer", None)
    return optimizer


class OTOTrainer(Trainer):
    """`transformers.Trainer` that trains with HSPG and saves a physically slim model.

    Same constructor as `Trainer`; pass `OTOTrainingArguments` as `args`. After `save_model()`,
    `trainer.slim_report` holds the dense/slim accounting and `trainer.slim_model` the slim model.
    `teacher_model` (or `args.oto_teacher`) turns on knowledge distillation (`hf_oto.distillation`).
    """

    def __init__(
        self,
        model: PreTrainedModel | torch.nn.Module | None = None,
        args: TrainingArguments | None = None,
        *a,
        teacher_model: torch.nn.Module | None = None,
        **kw,
    ):
        if args is not None and not isinstance(args, OTOTrainingArguments):
            raise TypeError(
                f"OTOTrainer needs OTOTrainingArguments, got {type(args).__name__}; build your arguments with "
                "hf_oto.OTOTrainingArguments (same fields as TrainingArguments plus oto_*)."
            )
        if args is None:
            args = OTOTrainingArguments(output_dir="tmp_trainer")
        _check_process_group(args)
        super().__init__(model, args, *a, **kw)
        check_sharding_enabled(self)  # FSDP2 only, and never silently unsharded
        self._warn_if_fp16_is_ignored()
        self.oto_groups: GroupSet | None = None
        self.slim_report: SlimReport | None = None
        self.slim_model: PreTrainedModel | None = None
        self._oto_in_checkpoint = False
        self.slim_files: list[str] = []
        """Names of the files the last slim `save_model()` wrote (what `push_to_hub` uploads)."""
        self._oto_dense_shape = None
        self.add_callback(SkippedStepClock)
        if self.model is not None:
            self._check_model_and_data()
            if not loss_uses_num_items_in_batch(self.accelerator.unwrap_model(self.model)):
                self.model_accepts_loss_kwargs = False
        self.distiller = build_distiller(self, teacher_model)
        """The teacher and its loss (`hf_oto.distillation.Distiller`), or None without a teacher."""
        if self.distiller is not None:
            self.add_callback(self.distiller)

    # ------------------------------------------------------------------ validation

    def _warn_if_fp16_is_ignored(self) -> None:
        """accelerate turns fp16 autocast and its GradScaler on only off-CPU: on CPU, fp16=True trains in float32
        without a word from transformers. Say so once instead of ignoring the setting silently."""
        if self.args.fp16 and not self.accelerator.native_amp and not self.is_deepspeed_enabled:
            logger.warning(
                "fp16=True has no effect on %s: accelerate enables fp16 mixed precision only on a GPU or other "
                "accelerator, so this run trains in float32. Use bf16=True for mixed precision on CPU.",
                self.accelerator.device.type,
            )

    def _check_model_and_data(self) -> None:
        model = self.accelerator.unwrap_model(self.model)
        get_spec(model)  # UnsupportedModelError lists the supported families
        groups = self._build_groups(model)
        prunable = int(groups.prunable_mask().sum())
        if prunable == 0:
            raise ValueError(
                f"nothing is prunable: oto_prune={self.args.oto_prune!r} with oto_unprunable_layers="
                f"{self.args.oto_unprunable_layers} leaves 0 of {len(groups)} groups prunable. Remove layers from "
                "oto_unprunable_layers or widen oto_prune."
            )
        target = self.args.oto_target_group_sparsity
        if target is not None:
            self._check_target_keeps_every_structure(groups, target)
        dataset = self.train_dataset
        if dataset is not None and hasattr(dataset, "__len__") and len(dataset) == 0:
            raise ValueError(
                "train_dataset has 0 examples; OTOTrainer needs data to train on. Check your data files/filters."
            )

    @staticmethod
    def _check_target_keeps_every_structure(groups: GroupSet, target: float) -> None:
        """HSPG splits the target into per-structure quotas; refuse one that would zero a whole structure."""
        structures = groups.structures()
        index = groups.structure_index()[groups.prunable_mask()]
        counts = torch.bincount(index, minlength=len(structures))
        quotas = structure_quotas(counts, target)
        emptied = [structures[k] for k in range(len(structures)) if counts[k] and quotas[k] >= counts[k]]
        if not emptied:
            return
        # the largest sparsity (in steps of 0.001) whose quotas keep a group of every structure
        best = next(
            s / 1000
            for s in range(int(target * 1000), -1, -1)
            if bool((structure_quotas(counts, s / 1000) < counts)[counts > 0].all())
        )
        names = " and ".join("attention heads" if kind == ATTENTION else "FFN neurons" for kind in emptied)
        raise ValueError(
            f"oto_target_group_sparsity={target} would remove every prunable group of the model's {names} "
            f"({int(sum(quotas))} of {int(sum(counts))} prunable groups, split per structure). Lower it to at "
            f"most {best:.3f}, or exclude that structure with oto_prune."
        )

    def _build_groups(self, model: torch.nn.Module) -> GroupSet:
        return build_groups(
            model, prune=PRUNE_CHOICES[self.args.oto_prune], unprunable_layers=self.args.oto_unprunable_layers
        )

    # ------------------------------------------------------------------ optimizer

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """HSPG over the model's zero-invariant groups, with the Trainer's lr, decay split and step count."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        unwrapped = self.accelerator.unwrap_model(opt_model)
        self._oto_dense_shape = model_shape(unwrapped, self.args.oto_flops_seq_len)
        decay = set(self.get_decay_parameter_names(opt_model))
        named = [(n, p) for n, p in opt_model.named_parameters() if p.requires_grad]
        param_groups = [
            {"params": [p for n, p in named if n in decay], "weight_decay": self.args.weight_decay},
            {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
        ]
        param_groups = [g for g in param_groups if g["params"]]
        if is_fsdp2(self) and not is_fsdp2_sharded(unwrapped):  # HSPG is built on the shards (create_scheduler)
            self.optimizer = stand_in_optimizer(param_groups, self.args.learning_rate)
        else:
            self.optimizer = self._new_hspg(param_groups, unwrapped)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """Under FSDP2, first put HSPG over the now-sharded parameters in place of the stand-in optimizer."""
        if is_fsdp2(self) and self.hspg is None:
            install_hspg_on_shards(self, self._new_hspg)
        return super().create_scheduler(num_training_steps, optimizer)

    def _new_hspg(self, param_groups: list[dict[str, Any]], model: torch.nn.Module) -> HSPG:
        """HSPG over `model`'s zero-invariant groups, with the Trainer's lr, decay split and step count."""
        self.oto_groups = self._build_groups(model)
        args = self.args
        return HSPG(
            param_groups,
            self.oto_groups,
            lr=args.learning_rate,
            lam=args.oto_lambda,
            epsilon=args.oto_epsilon,
            n_p=args.oto_n_p_value,
            variant=args.oto_variant,
            betas=(args.adam_beta1, args.adam_beta2),
            eps=args.adam_epsilon,
            momentum=args.oto_momentum if args.oto_variant == "sgd" else 0.0,
            target_group_sparsity=args.oto_target_group_sparsity,
            projection_deadline=args.oto_projection_deadline,
            saliency=args.oto_saliency,
            total_steps=self.state.max_steps if self.state.max_steps and self.state.max_steps > 0 else None,
            skip_nonfinite_steps=args.oto_skip_nonfinite_steps,
        )

    @property
    def hspg(self) -> HSPG | None:
        """The HSPG instance (unwrapped from accelerate's AcceleratedOptimizer)."""
        return _unwrap_hspg(self.optimizer)

    # ------------------------------------------------------------------ logging

    def oto_metrics(self) -> dict[str, float]:
        """Sparsity and kept-cost figures for the logs (cheap: one norm pass is not needed, masks suffice)."""
        hspg = self.hspg
        if hspg is None or self.oto_groups is None:
            return {}
        report = hspg.sparsity_report()
        zero = hspg.zero_mask().cpu()
        params_removed, flops_removed = removed_costs(self.oto_groups, zero, self.args.oto_flops_seq_len)
        dense = self._oto_dense_shape
        return {
            "oto/group_sparsity": float(report["group_sparsity"]),
            "oto/zero_groups": float(report["zero_groups"]),
            "oto/zero_heads": float(report["zero_heads"]),
            "oto/zero_ffn_neurons": float(report["zero_ffn_neurons"]),
            "oto/params_kept_ratio": 1.0 - params_removed / dense.params,
            "oto/flops_kept_ratio": 1.0 - flops_removed / dense.flops_per_token,
            # the stage of the last step taken (HSPG's own `stage` is the next step's)
            "oto/stage": 2.0 if hspg.switch_step is not None and 0 <= hspg.switch_step < hspg.current_step else 1.0,
        }

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if not any(key.startswith(("eval_", "test_")) for key in logs):
            logs = {**logs, **self.oto_metrics()}
        if self.distiller is not None and "loss" in logs:  # training logs; every process logs them
            gather = lambda tensor: nested_gather(tensor, self.args.parallel_mode)  # noqa: E731
            logs = {**logs, **self.distiller.log_metrics(self.state.global_step, gather)}
        super().log(logs, *args, **kwargs)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """The Trainer's loss; while training with a teacher, mixed with distillation (evaluation stays task-only)."""
        if self.distiller is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = distill_compute_loss(self, model, inputs, num_items_in_batch, super().compute_loss)
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------ saving

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """Under FSDP2, HSPG's state is saved per rank (accelerate's FSDP optimizer checkpoint would drop it)."""
        if not is_fsdp2(self):
            return super()._save_optimizer_and_scheduler(output_dir)
        save_sharded_checkpoint(self, output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None or not is_fsdp2(self):
            return super()._load_optimizer_and_scheduler(checkpoint)
        load_sharded_optimizer(self, checkpoint)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """Checkpoints stay dense (weights, optimizer and HSPG state), so that resuming is exact."""
        self._oto_in_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._oto_in_checkpoint = False

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write the slim Hub-format model, tokenizer/processor, model card and plot to `output_dir`.

        Checkpoints (and everything when `oto_save_slim=False`) use the Trainer's dense save; under FSDP2 a
        checkpoint's weights are what `_save_optimizer_and_scheduler` writes (full or per-rank shards)."""
        if self._oto_in_checkpoint and is_fsdp2(self):
            return None
        if self._oto_in_checkpoint or not self.args.oto_save_slim:
            return super().save_model(output_dir, _internal_call)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        # under FSDP2 every process takes part in gathering the full weights; the main process slims them
        model = gather_full_model(self.model) if is_fsdp2_sharded(self.model) else None
        if self.args.should_save:
            self._save_slim(output_dir, model)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _save_slim(self, output_dir: str, model: torch.nn.Module | None = None) -> None:
        """Slim the trained model (or `model`, its gathered copy), write its folder atomically, and remember it."""
        slim, report = self._slim_trained_model(model)
        # Staged inside output_dir and committed by one atomic switch (see modeling_oto.commit_staged): a crash
        # leaves the old model or the new one, output_dir may be a mount point, and no copy lands outside it.
        with staged_save(output_dir) as staging:
            self._write_slim_folder(staging, slim, report, output_dir)
            files = sorted(os.listdir(staging))
        self.slim_report, self.slim_model, self.slim_files = report, slim, files
        logger.info("Saved the slim model to %s:\n%s", output_dir, report)

    def _slim_trained_model(self, gathered: torch.nn.Module | None = None) -> tuple[PreTrainedModel, SlimReport]:
        """The slim model and its report, checked against the trained group-sparse model (`slim_model`)."""
        model = gathered if gathered is not None else self.accelerator.unwrap_model(self.model)
        groups = self.oto_groups if self.oto_groups is not None and gathered is None else self._build_groups(model)
        with _original_forward(model):
            return slim_model(
                model,
                groups,
                seq_len=self.args.oto_flops_seq_len,
                tolerance=self.args.oto_verify_tolerance,
                settings=self.args.oto_settings(),
            )

    def _write_slim_folder(self, staging: str, slim: PreTrainedModel, report: SlimReport, output_dir: str) -> None:
        """Weights, config and code, the tokenizer, the training arguments, the card and its plot into `staging`."""
        slim.save_pretrained(staging)
        tokenizer = self.processing_class
        if tokenizer is None and getattr(self.data_collator, "tokenizer", None) is not None:
            tokenizer = self.data_collator.tokenizer
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        else:
            logger.warning(
                "OTOTrainer has no tokenizer or processor: saved the slim model without one. Pass "
                "processing_class=<your tokenizer> to OTOTrainer to save it next to the model."
            )
        with open(os.path.join(staging, "training_args.json"), "w") as handle:
            handle.write(self.args.to_json_string())
        self._write_card(staging, slim, report, output_dir)

    def _card_text(self, folder: str, slim: PreTrainedModel, report: SlimReport, **overrides: Any) -> str:
        """The card of the slim model saved to `folder`: titled with the Hub repo id when pushing (the repo that
        push_to_hub created, with the user's namespace), else with the folder's name."""
        folder_name = os.path.basename(os.path.abspath(folder))
        title = overrides.pop("model_name", None) or self.hub_model_id or folder_name
        source = getattr(self.accelerator.unwrap_model(self.model).config, "_name_or_path", "") or None
        finetuned = overrides.pop("finetuned_from", None) or source
        # YAML `datasets` lists Hub dataset ids: Trainer's `dataset_tags`; `dataset` is its display name, a fallback.
        dataset_tags, dataset = overrides.pop("dataset_tags", None), overrides.pop("dataset", None)
        datasets = dataset_tags or dataset
        tags = overrides.pop("tags", None)
        return render_model_card(
            report,
            title=title,
            repo_id=self.hub_model_id or self.args.hub_model_id or folder_name,
            auto_class=auto_class_name(type(slim)._oto_base_class),
            base_model=finetuned if finetuned and not os.path.isdir(finetuned) else None,
            base_model_type=base_model_type(slim.config),
            settings=self.args.oto_settings(),
            metrics=self._latest_eval_metrics(),
            datasets=[datasets] if isinstance(datasets, str) else datasets,
            dataset_name=dataset if isinstance(dataset, str) else None,
            tags=[tags] if isinstance(tags, str) else tags,
            language=overrides.pop("language", None),
            license=overrides.pop("license", None),
        )

    def _write_card(
        self, staging: str, slim: PreTrainedModel, report: SlimReport, folder: str | None = None, **overrides: Any
    ) -> None:
        """README.md and the plot into `staging`, for the slim model that ends up in `folder` (default: staging)."""
        with open(os.path.join(staging, "README.md"), "w", encoding="utf-8") as handle:
            handle.write(self._card_text(folder or staging, slim, report, **overrides))
        plot_layers(report, os.path.join(staging, PLOT_FILE))

    def _latest_eval_metrics(self) -> dict[str, float]:
        for entry in reversed(self.state.log_history):
            metrics = {
                k: v for k, v in entry.items() if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second"))
            }
            if metrics:
                return metrics
        return {}

    def create_model_card(self, **kwargs: Any) -> None:
        """Re-render the OTO card (never the Trainer's generic card) with any metadata passed here."""
        if not self.is_world_process_zero() or self.slim_model is None:
            return
        kwargs.pop("tasks", None), kwargs.pop("dataset_args", None)
        self._write_card(self.args.output_dir, self.slim_model, self.slim_report, **kwargs)

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs: Any,
    ):
        """Save the slim model and upload exactly the files of the slim folder (never checkpoints or dense weights)."""
        if not self.args.oto_save_slim:
            return super().push_to_hub(commit_message, blocking, token, revision, private, **kwargs)
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        token = token if token is not None else self.args.hub_token
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        self.create_model_card(**kwargs)
        self._finish_current_push()
        return HfApi().upload_folder(
            repo_id=self.hub_model_id,
            folder_path=self.args.output_dir,
            commit_message=commit_message,
            token=token,
            run_as_future=not blocking,
            allow_patterns=list(self.slim_files),
            revision=revision if revision is not None else self.args.hub_revision,
        )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """hub_strategy='every_save': push a consistent slim snapshot of the current model, never the dense checkpoint."""
        if not self.is_world_process_zero() or self.args.hub_strategy == HubStrategy.END:
            return
        if not self.args.oto_save_slim:
            return super()._push_from_checkpoint(checkpoint_folder)
        if self.push_in_progress is not None and not self.push_in_progress.is_done() and not self.args.hub_always_push:
            return
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        self._save_slim(self.args.output_dir)
        job = HfApi().upload_folder(
            repo_id=self.hub_model_id,
            folder_path=self.args.output_dir,
            commit_message=f"Training in progress, step {self.state.global_step} (slim snapshot)",
            token=self.args.hub_token,
            run_as_future=True,
            allow_patterns=list(self.slim_files),
            revision=self.args.hub_revision,
        )
        from transformers.utils.hub import PushInProgress

        self.push_in_progress = PushInProgress([job])


@contextlib.contextmanager
def _original_forward(model: torch.nn.Module):
    """Run `model` without the autocast wrapper that accelerate puts on `model.forward` for bf16=True/fp16=True.

    The zero-invariance check compares the dense model with the slim one, a new module that has no such wrapper
    and keeps the weights' dtype (float32 under mixed precision). Comparing a bf16-autocast dense forward with an
    fp32 slim forward fails the 1e-5 check on rounding alone (measured: 1.9e-4 on a tiny BERT), so both run at the
    weights' precision. The wrapper is put back afterwards, since training may go on (hub_strategy="every_save").
    """
    original = model.__dict__.get("_original_forward")
    if original is None or "forward" not in model.__dict__:
        yield
        return
    patched = model.__dict__["forward"]
    model.forward = original
    try:
        yield
    finally:
        model.forward = patched


def _check_process_group(args: TrainingArguments) -> None:
    """Refuse a multi-process launch for which the Trainer set up no process group.

    On a machine without GPUs, accelerate initializes gloo only when ``use_cpu=True``. Otherwise
    ``torchrun --nproc_per_node N`` or ``accelerate launch --multi_gpu`` start N processes that each train alone
    on the whole dataset (the Trainer's world size stays 1): N different models and zero masks, and every process
    writing the same slim output folder, because each one counts as the main process.
    """
    try:
        launched = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return
    if launched > 1 and args.world_size == 1:
        raise RuntimeError(
            f"this script was launched as {launched} processes (WORLD_SIZE={launched}), but the Trainer set up no "
            "process group, so each process would train and save on its own. On a machine without GPUs pass "
            "use_cpu=True (--use_cpu) to OTOTrainingArguments so that accelerate uses the gloo backend."
        )


__all__ = ["OTOTrainer", "OTOTrainingArguments", "loss_uses_num_items_in_batch"]
