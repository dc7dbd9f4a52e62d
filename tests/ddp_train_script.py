"""Train a tiny BERT classifier with `OTOTrainer`, then dump this rank's result (used by tests/test_distributed.py).

Run it the way a user would: plain ``python`` (one process), ``torchrun --nproc_per_node 2`` or
``accelerate launch --multi_gpu --num_processes 2`` (gloo on CPU). Everything is deterministic: the model
is built from a config with a fixed seed and dropout off (dropout masks would depend on how the global batch
is split across processes), the data are generated from a fixed seed, and the Trainer keeps its default
arguments apart from the batch size, step count, learning rate and the OTO settings given on the command line,
and ``use_cpu=True``: without it accelerate initializes no gloo process group on a machine without GPUs, and
each launched process would train on its own.

``--fsdp2`` trains under FSDP2 through accelerate (``fsdp=True``) with all ranks sharing one output folder, as
sharded checkpoints need. accelerate turns FSDP on only for GPU-type backends, so the script lifts that one
device check (`lift_accelerate_cpu_fsdp_gate`, which also sets the bf16 `MixedPrecisionPolicy` as accelerate's
own FSDP branch does); the sharding itself (``fully_shard`` over a CPU device mesh, the
optimizer re-pointing, the checkpoints) is accelerate's and torch's own code on gloo.

Each rank writes ``<dump_dir>/rank<r>.pt`` with its identity (rank, world size, pid, what torch.distributed
and the Trainer see), its final weights, HSPG's zero mask, the logged losses and what it saved. Each rank gets
its own output directory, ``<output_dir>/rank<r>``, so that a save from a non-main rank would be visible.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

from hf_oto import OTOTrainer, OTOTrainingArguments  # noqa: E402

NUM_EXAMPLES = 64
SEQ_LEN = 16
VOCAB = 97


class SyntheticPairs(torch.utils.data.Dataset):
    """Fixed random token sequences; the label says whether token 5 appears more often than token 7."""

    def __init__(self, n: int = NUM_EXAMPLES, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(5, 12, (n, SEQ_LEN), generator=generator)
        self.input_ids[:, 0] = 2  # [CLS]
        self.labels = ((self.input_ids == 5).sum(1) > (self.input_ids == 7).sum(1)).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids[index],
            "attention_mask": torch.ones(SEQ_LEN, dtype=torch.long),
            "labels": self.labels[index],
        }


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    """A 2-layer, 4-head BERT classifier, random init with a fixed seed, dropout off."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=SEQ_LEN,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        classifier_dropout=0.0,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def lift_accelerate_cpu_fsdp_gate() -> None:
    """Let accelerate's FSDP path run on CPU ranks: `AcceleratorState` keeps MULTI_CPU even with an FSDP plugin."""
    import accelerate.state
    from accelerate.utils import DistributedType

    original = accelerate.state.AcceleratorState.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        plugin = kwargs.get("fsdp_plugin")
        if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            # what accelerate's own FSDP branch does: the type, FSDP2's MixedPrecisionPolicy, the plugin, and the
            # type written back to PartialState (each later AcceleratorState() copies PartialState's fields over)
            self.distributed_type = DistributedType.FSDP
            if self._mixed_precision != "no":
                plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = plugin
            accelerate.state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    accelerate.state.AcceleratorState.__init__ = init


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights, gathered from the shards under FSDP2 (a collective: every rank calls it)."""
    from torch.distributed.tensor import DTensor

    return {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu().clone()
        for k, v in model.state_dict().items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--dump_dir", required=True)
    parser.add_argument("--per_device_train_batch_size", type=int, default=8)
    parser.add_argument("--max_steps", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--variant", default="adamw")
    parser.add_argument("--oto_lambda", type=float, default=1e-3)
    parser.add_argument("--target", type=float, default=0.3)
    parser.add_argument(
        "--trainer_default_loss_kwargs",
        action="store_true",
        help="Undo OTOTrainer's loss fix: restore the Trainer's own model_accepts_loss_kwargs (True for BERT), "
        "under which the Trainer multiplies the loss by the process count.",
    )
    parser.add_argument(
        "--no_use_cpu",
        action="store_true",
        help="Leave use_cpu=False: on a machine without GPUs accelerate then sets up no process group.",
    )
    parser.add_argument(
        "--teacher",
        action="store_true",
        help="Distil from a second tiny BERT (seed 1) with hidden-state distillation; each rank holds its own copy.",
    )
    parser.add_argument("--fsdp2", action="store_true", help="FSDP2 through accelerate, one shared output folder")
    parser.add_argument(
        "--keep_accelerate_gate",
        action="store_true",
        help="with --fsdp2: leave accelerate's GPU-only FSDP check in place",
    )
    parser.add_argument("--save_steps", type=int, default=None, help="save a checkpoint every N steps")
    parser.add_argument("--resume_from", default=None, help="checkpoint folder to resume from")
    parser.add_argument(
        "--state_dict_type",
        default=None,
        help="with --fsdp2: fsdp_config['state_dict_type'] (default: transformers' FULL_STATE_DICT)",
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (CPU autocast; FSDP2: bf16 compute)")
    parser.add_argument(
        "--push_with_token",
        default=None,
        help="push_to_hub=True (hub_strategy 'end') with this token; every rank then calls trainer.push_to_hub() "
        "instead of save_model(). Point HF_ENDPOINT at a Hub stand-in.",
    )
    cli = parser.parse_args()

    rank = int(os.environ.get("RANK", "0"))
    sharding = {}
    if cli.fsdp2:
        if not cli.keep_accelerate_gate:
            lift_accelerate_cpu_fsdp_gate()
        sharding = {
            "fsdp": True,
            "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": ["BertLayer"]},
        }
        if cli.state_dict_type:
            sharding["fsdp_config"]["state_dict_type"] = cli.state_dict_type
    args = OTOTrainingArguments(
        output_dir=cli.output_dir if cli.fsdp2 else os.path.join(cli.output_dir, f"rank{rank}"),
        per_device_train_batch_size=cli.per_device_train_batch_size,
        max_steps=cli.max_steps,
        learning_rate=cli.learning_rate,
        max_grad_norm=cli.max_grad_norm,
        logging_steps=1,
        report_to="none",
        use_cpu=not cli.no_use_cpu,
        save_strategy="steps" if cli.save_steps else "no",
        save_steps=cli.save_steps or 500,
        oto_variant=cli.variant,
        oto_lambda=cli.oto_lambda,
        oto_target_group_sparsity=cli.target,
        oto_distill_hidden_weight=1.0 if cli.teacher else None,
        bf16=cli.bf16,
        push_to_hub=cli.push_with_token is not None,
        hub_token=cli.push_with_token,
        hub_strategy="end",
        **sharding,
    )
    teacher = tiny_bert(seed=1) if cli.teacher else None
    trainer = OTOTrainer(model=tiny_bert(), args=args, train_dataset=SyntheticPairs(), teacher_model=teacher)
    fix_applied = trainer.model_accepts_loss_kwargs is False
    if cli.trainer_default_loss_kwargs:
        trainer.model_accepts_loss_kwargs = True
    trainer.train(resume_from_checkpoint=cli.resume_from)
    if cli.push_with_token:
        trainer.push_to_hub()  # saves the slim model first (under FSDP2: gathered by every rank)
    else:
        trainer.save_model()

    model = trainer.accelerator.unwrap_model(trainer.model)
    first = next(model.parameters())
    local_rows = first.to_local().shape[0] if hasattr(first, "to_local") else first.shape[0]
    os.makedirs(cli.dump_dir, exist_ok=True)
    torch.save(
        {
            "rank": rank,
            "env_world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "dist_world_size": dist.get_world_size() if dist.is_initialized() else 1,
            "dist_backend": dist.get_backend() if dist.is_initialized() else None,
            "trainer_world_size": trainer.args.world_size,
            "num_processes": trainer.accelerator.num_processes,
            "pid": os.getpid(),
            "fix_applied": fix_applied,
            "model_accepts_loss_kwargs": trainer.model_accepts_loss_kwargs,
            "state_dict": full_state_dict(model),
            "local_rows": local_rows,
            "rows": first.shape[0],
            "param_dtype": first.dtype,
            "zero_mask": trainer.hspg.zero_mask().cpu(),
            "hspg_steps": trainer.hspg.current_step,
            "global_step": trainer.state.global_step,
            "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
            "distill_losses": [
                [entry[k] for k in ("oto/task_loss", "oto/distill_loss", "oto/hidden_distill_loss")]
                for entry in trainer.state.log_history
                if "oto/distill_loss" in entry
            ],
            "grad_norms": [entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry],
            "saved_files": list(trainer.slim_files),
            "has_slim_model": trainer.slim_model is not None,
        },
        os.path.join(cli.dump_dir, f"rank{rank}.pt"),
    )
    # without it gloo's worker threads can outlive the interpreter and abort the exit (pytorch#190489)
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main()
