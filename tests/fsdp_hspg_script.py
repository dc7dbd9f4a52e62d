"""Launched by test_fsdp.py under torchrun: HSPG on a tiny model wrapped with FSDP2 `fully_shard`.

Each rank trains on its half of every batch; FSDP2 averages the gradients, so the run must match one unsharded
process on the whole batch (`reference_run`). Rank 0 writes the gathered weights, the zero mask, and the HSPG
state after a checkpoint/resume round trip, and the slim model of the gathered copy (`gather_full_model`).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import tiny_model  # noqa: E402

STEPS = 40
BATCH = 16
FAMILIES = {"bert": "BertForSequenceClassification", "llama": "LlamaForCausalLM"}


def make_model(family: str):
    import transformers

    overrides = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0} if family == "bert" else {}
    # 5 query heads / KV groups and 20 neurons: shards of 2 ranks split groups mid-way (a group straddles ranks)
    heads = {"num_attention_heads": 5, "hidden_size": 40} | ({"num_key_value_heads": 5} if family == "llama" else {})
    model = tiny_model(family, getattr(transformers, FAMILIES[family]), intermediate_size=20, **heads, **overrides)
    return model.train()


def batches(family: str):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 90, (STEPS * BATCH, 12), generator=gen)
    labels = (ids < 30).any(dim=1).long() if family == "bert" else ids
    return ids, labels


def make_optimizer(model, groups):
    from hf_oto import HSPG

    return HSPG(
        model.parameters(),
        groups,
        lr=5e-2,
        variant="sgd",
        momentum=0.9,
        weight_decay=0.01,
        n_p=0.25,
        target_group_sparsity=0.5,
        total_steps=STEPS,
    )


def train(model, optimizer, family: str, steps: range, part: slice) -> None:
    ids, labels = batches(family)
    for step in steps:
        rows = slice(step * BATCH + part.start, step * BATCH + part.stop)
        model.zero_grad()
        model(input_ids=ids[rows], labels=labels[rows]).loss.backward()
        optimizer.step()


def reference_run(family: str) -> tuple[dict, torch.Tensor]:
    """One unsharded process on the whole batch."""
    from hf_oto import build_groups

    model = make_model(family)
    optimizer = make_optimizer(model, build_groups(model))
    train(model, optimizer, family, range(STEPS), slice(0, BATCH))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, optimizer.zero_mask()


def sharded_model(family: str):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = make_model(family)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    layers = model.bert.encoder.layer if family == "bert" else model.model.layers
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def main(family: str, out_dir: str) -> None:
    from hf_oto import build_groups, gather_full_model, slim_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    share = BATCH // world
    part = slice(rank * share, (rank + 1) * share)
    try:
        model = sharded_model(family)
        optimizer = make_optimizer(model, build_groups(model))
        train(model, optimizer, family, range(STEPS // 2), part)
        # checkpoint: each rank saves its model shards and sharded optimizer state; resume into fresh objects
        path = os.path.join(out_dir, f"{family}-rank{rank}.pt")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
        checkpoint = torch.load(path, weights_only=False)
        resumed = sharded_model(family)
        resumed.load_state_dict(checkpoint["model"])
        resumed_optimizer = make_optimizer(resumed, build_groups(resumed))
        resumed_optimizer.load_state_dict(checkpoint["optimizer"])
        train(resumed, resumed_optimizer, family, range(STEPS // 2, STEPS), part)
        train(model, optimizer, family, range(STEPS // 2, STEPS), part)
        full = {k: v.full_tensor() for k, v in resumed.state_dict().items()}
        uninterrupted = {k: v.full_tensor() for k, v in model.state_dict().items()}
        local_state = optimizer.state_bytes()
        report = resumed_optimizer.sparsity_report()
        gathered = gather_full_model(resumed)  # every rank takes part; rank 0 gets the copy
        if rank == 0:
            slim, _ = slim_model(gathered, build_groups(gathered))  # checks slim == gathered
            slim.save_pretrained(os.path.join(out_dir, f"{family}-slim"))
            torch.save(
                {
                    "weights": full,
                    "uninterrupted": uninterrupted,
                    "zero_mask": resumed_optimizer.zero_mask(),
                    "uninterrupted_mask": optimizer.zero_mask(),
                    "target": resumed_optimizer.target_zero_groups,
                    "state_bytes": local_state,
                    "report_zero_groups": report["zero_groups"],
                    "report_exactly_zero": report["exactly_zero_groups"],
                    "gathered": {k: v.detach().clone() for k, v in gathered.state_dict().items()},
                    "gathered_class": type(gathered).__name__,
                    "gathered_buffers": {k: v.clone() for k, v in gathered.named_buffers()},
                },
                os.path.join(out_dir, f"{family}.pt"),
            )
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
