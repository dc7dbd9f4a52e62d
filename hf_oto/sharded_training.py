"""OTOTrainer under FSDP2: which sharded setups run, HSPG on the sharded parameters, and per-rank HSPG checkpoints.

- **Accepted:** ``fsdp=True`` with FSDP2 (``fsdp_config={"version": 2, ...}``, transformers' default version),
  as accelerate sets it up. **Refused**, in one line each: FSDP1, DeepSpeed, ``fsdp_config`` without ``fsdp``
  (transformers would ignore it), and ``fsdp`` that accelerate did not enable (it enables FSDP only on GPU-type
  backends, so on CPU the run would silently train unsharded).
- **HSPG on the shards.** Under FSDP2 the Trainer creates the optimizer before accelerate shards the model, and
  accelerate then re-points the optimizer's parameter lists at the sharded parameters by address. HSPG's group
  layout cannot follow that swap, so OTOTrainer first hands accelerate a stateless stand-in (`torch.optim.SGD`
  over the same parameter groups, never stepped) and builds HSPG over the swapped, sharded parameters when the
  Trainer creates the scheduler (`install_hspg_on_shards`).
- **Checkpoints** take either of accelerate's FSDP2 layouts, as the Trainer does: ``FULL_STATE_DICT``
  (transformers' default: rank 0 writes the gathered weights) or ``SHARDED_STATE_DICT`` (per-rank shards; better
  for large models). accelerate's FSDP optimizer checkpoint (torch.distributed.checkpoint) keeps only torch's
  per-parameter state and would drop HSPG's own (step, zero mask, saliency), so each rank saves its HSPG
  `state_dict` (its shards plus the replicated bookkeeping) to ``hspg_state_rank<r>.pt``; the model weights and
  the scheduler are saved as the Trainer does. Resuming needs the same number of processes.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

import torch
from transformers.trainer import SCHEDULER_NAME
from transformers.trainer_utils import HubStrategy

if TYPE_CHECKING:
    from transformers import Trainer, TrainingArguments

HSPG_STATE_FILE = "hspg_state_rank{rank}.pt"


DEEPSPEED_MESSAGE = (
    "OTOTrainer does not run under DeepSpeed: HSPG needs whole-group norms that ZeRO's flattened partitions do not "
    "expose. Shard with FSDP2 instead (fsdp=True, fsdp_config={'version': 2}), or train with DDP."
)


def refuse_unsupported_sharding(args: TrainingArguments) -> None:
    """One-line refusals of the sharded setups OTOTrainer does not run (after TrainingArguments' own checks)."""
    if args.deepspeed:
        raise NotImplementedError(DEEPSPEED_MESSAGE)
    if args.fsdp_config and not args.fsdp:
        raise ValueError(
            "fsdp_config is set but fsdp is not, so transformers would ignore it; pass fsdp=True as well (FSDP2), "
            "or drop fsdp_config."
        )
    if args.fsdp and int(args.fsdp_config.get("version", 2)) != 2:
        raise NotImplementedError(
            f"OTOTrainer runs under FSDP2 only, not FSDP{args.fsdp_config.get('version')}: set "
            "fsdp_config={'version': 2, ...} (transformers' default), or train with DDP."
        )
    if args.fsdp and not getattr(args, "oto_save_slim", True):
        raise NotImplementedError(
            "oto_save_slim=False under FSDP would save no final weights (the Trainer writes none from sharded state "
            "dicts); OTOTrainer under FSDP saves the slim model: leave oto_save_slim=True."
        )
    if args.fsdp and args.push_to_hub and args.hub_strategy != HubStrategy.END:
        raise NotImplementedError(
            f"OTOTrainer under FSDP pushes the slim model at the end of training only: hub_strategy="
            f"{args.hub_strategy.value!r} would slim on the main process alone, without gathering the shards. Use "
            "hub_strategy='end'."
        )


def check_sharding_enabled(trainer: Trainer) -> None:
    """After the Trainer built its accelerator: refuse what accelerate enabled or ignored against the arguments."""
    if trainer.is_deepspeed_enabled:  # e.g. from an accelerate config file
        raise NotImplementedError(DEEPSPEED_MESSAGE)
    if trainer.is_fsdp_enabled:
        version = getattr(trainer.accelerator.state.fsdp_plugin, "fsdp_version", 1)
        if version != 2:
            raise NotImplementedError(
                f"OTOTrainer runs under FSDP2 only; accelerate enabled FSDP{version} (check your accelerate config: "
                "fsdp_version: 2)."
            )
    elif trainer.args.fsdp:
        raise RuntimeError(
            "fsdp=True, but accelerate did not enable FSDP: it does so only on GPU-type backends, and on this "
            f"{trainer.args.device.type} run the model would train unsharded without a word. Drop fsdp, or launch on GPUs."
        )


def is_fsdp2(trainer: Trainer) -> bool:
    return bool(trainer.is_fsdp_enabled) and getattr(trainer.accelerator.state.fsdp_plugin, "fsdp_version", 1) == 2


def stand_in_optimizer(param_groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """What accelerate re-points at the sharded parameters before HSPG exists: stateless and never stepped."""
    return torch.optim.SGD(param_groups, lr=lr)


def install_hspg_on_shards(trainer: Trainer, build_hspg) -> None:
    """Replace the stand-in inside accelerate's optimizer wrapper with HSPG over the sharded parameter groups.

    `build_hspg(param_groups, model)` builds the groups and HSPG on the sharded model (the Trainer's model object,
    sharded in place by `fully_shard`). The decay split of the stand-in's groups is kept.
    """
    wrapper = trainer.optimizer
    param_groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in wrapper.param_groups]
    hspg = build_hspg(param_groups, trainer.accelerator.unwrap_model(trainer.model))
    wrapper.optimizer = hspg
    if getattr(wrapper, "scaler", None) is not None:  # fp16: re-patch step() as AcceleratedOptimizer.__init__ does
        from accelerate.optimizer import patch_optimizer_step

        wrapper._optimizer_original_step_method = hspg.step
        wrapper._optimizer_patched_step_method = patch_optimizer_step(wrapper, hspg.step)


def save_sharded_checkpoint(trainer: Trainer, output_dir: str) -> None:
    """The model (full or per-rank shards, as the Trainer saves it under FSDP), this rank's HSPG state, and the
    scheduler."""
    from accelerate.utils import save_fsdp_model
    from transformers.distributed.fsdp import get_fsdp_ckpt_kwargs

    plugin = trainer.accelerator.state.fsdp_plugin
    save_fsdp_model(plugin, trainer.accelerator, trainer.model, output_dir, **get_fsdp_ckpt_kwargs())
    hspg = trainer.hspg
    torch.save(hspg.state_dict(), os.path.join(output_dir, HSPG_STATE_FILE.format(rank=trainer.args.process_index)))
    if trainer.args.should_save:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch warns about saving the scheduler's optimizer ref
            torch.save(trainer.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))


def load_sharded_optimizer(trainer: Trainer, checkpoint: str) -> None:
    """This rank's HSPG state and the scheduler from a checkpoint that `save_sharded_checkpoint` wrote."""
    world = trainer.args.world_size
    saved = sorted(name for name in os.listdir(checkpoint) if name.startswith("hspg_state_rank"))
    path = os.path.join(checkpoint, HSPG_STATE_FILE.format(rank=trainer.args.process_index))
    if len(saved) != world or not os.path.isfile(path):
        raise ValueError(
            f"{checkpoint} holds HSPG state for {len(saved)} process(es), and this run has {world}: resume an FSDP "
            "checkpoint with the number of processes that saved it."
        )
    trainer.hspg.load_state_dict(torch.load(path, map_location="cpu", weights_only=False))
    scheduler = os.path.join(checkpoint, SCHEDULER_NAME)
    if os.path.isfile(scheduler):
        trainer.lr_scheduler.load_state_dict(torch.load(scheduler, weights_only=True))


__all__ = [
    "check_sharding_enabled",
    "install_hspg_on_shards",
    "is_fsdp2",
    "load_sharded_optimizer",
    "refuse_unsupported_sharding",
    "save_sharded_checkpoint",
    "stand_in_optimizer",
]
