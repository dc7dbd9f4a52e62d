"""Golden HSPG trajectories: fixed-seed runs whose losses, final weights and zero masks are recorded.

Recorded once (``python tests/hspg_golden.py``) from the code before HSPG was split into `hf_oto.optim`,
and compared bit for bit by `test_hspg_golden.py`, so a refactor cannot change behaviour unnoticed. The
recording is only valid for the torch version and CPU kernel family it was made with (both stored); the
test skips, saying so, on another one.

Each case trains a tiny BERT (2 layers: stacked attention and FFN blocks) for 30 steps with one intra-op
thread. The 2-process cases emulate DDP on gloo: each rank takes its half of the batch, gradients are
averaged with an all-reduce, and HSPG agrees on projections across ranks.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile

import torch

GOLDEN_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "hspg_golden.json")
STEPS = 30
BATCH = 16

# name -> HSPG keyword arguments (besides lr and the param groups)
CASES: dict[str, dict] = {}
for _variant in ("adamw", "sgd"):
    for _saliency in ("magnitude", "taylor"):
        CASES[f"{_variant}-{_saliency}-target"] = dict(
            variant=_variant, saliency=_saliency, target_group_sparsity=0.5, n_p=0.25, total_steps=STEPS
        )
    CASES[f"{_variant}-lambda"] = dict(variant=_variant, lam=3.0, epsilon=0.5, n_p=10)
CASES["adamw-lambda-prox"] = dict(variant="adamw", lam=3.0, epsilon=0.5, n_p=10, prox=True)
DISTRIBUTED_CASES = ("adamw-taylor-target", "sgd-magnitude-target", "adamw-lambda")


def _model():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    return BertForSequenceClassification(config)


def _data():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 64, (256, 12), generator=gen)
    return ids, (ids < 20).any(dim=1).long()


def _param_groups(model):
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def run_case(name: str, rank: int = 0, world: int = 1) -> dict:
    """Train one case and return its fingerprint: losses (float hex), weights sha256, zero mask."""
    import torch.distributed as dist

    from hf_oto import HSPG, build_groups

    torch.set_num_threads(1)
    model = _model()
    ids, labels = _data()
    kwargs = dict(CASES[name])
    optimizer = HSPG(_param_groups(model), build_groups(model), lr=3e-3, weight_decay=0.01, momentum=0.9, **kwargs)
    losses = []
    share = BATCH // world
    for step in range(STEPS):
        start = (step * BATCH) % len(ids) + rank * share
        model.zero_grad()
        loss = model(input_ids=ids[start : start + share], labels=labels[start : start + share]).loss
        loss.backward()
        if world > 1:
            for p in model.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world
            dist.all_reduce(loss := loss.detach().clone())
            loss /= world
        optimizer.step()
        losses.append(float(loss.detach()).hex())
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return {
        "losses": losses,
        "weights_sha256": digest.hexdigest(),
        "zero_mask": [int(v) for v in optimizer.zero_mask().tolist()],
    }


def _distributed_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {name: run_case(name, rank, world) for name in DISTRIBUTED_CASES}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
            json.dump(results, handle)
    finally:
        dist.destroy_process_group()


def run_distributed(world: int = 2) -> list[dict]:
    """The distributed cases on `world` gloo processes; one result dict per rank."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_distributed_worker, args=(world, os.path.join(folder, "init"), folder), nprocs=world, join=True)
        results = []
        for rank in range(world):
            with open(os.path.join(folder, f"rank{rank}.json")) as handle:
                results.append(json.load(handle))
    return results


def environment() -> dict:
    """What the recording depends on: the torch version and the CPU kernel family."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def record() -> None:
    single = {name: run_case(name) for name in CASES}
    ranks = run_distributed()
    golden = {"environment": environment(), "single": single, "distributed_rank0": ranks[0]}
    os.makedirs(os.path.dirname(GOLDEN_PATH), exist_ok=True)
    with open(GOLDEN_PATH, "w") as handle:
        json.dump(golden, handle, indent=1)
    print(f"wrote {GOLDEN_PATH}: {len(single)} single-process and {len(ranks[0])} 2-process cases")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    record()
