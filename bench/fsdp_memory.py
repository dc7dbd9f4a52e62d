"""Per-rank memory of parameters plus HSPG optimizer state under FSDP2, against the same model unsharded.

A LLaMA-shaped model (random init, no download) is trained for 2 HSPG steps (AdamW variant, target 0.5, so
every moment exists), once in one process and once wrapped with `fully_shard` (per decoder layer plus the
root) on `--world` gloo CPU ranks. Printed per rank: bytes of the local parameter shards, of HSPG's state
(moments are DTensor shards; the per-group masks and Taylor scores are replicated), and their ratio to the
unsharded total without the CPU workspace (layout "stacked", as the sharded layout has none; the workspace
figure is printed too). Target: ≤ 1/world × 1.10.

Usage: ``python bench/fsdp_memory.py [--world 2] [--layers 8] [--hidden 512]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def make_model(args: argparse.Namespace):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3 // 16 * 16,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(args.hidden // 256, 1),
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config)


def local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def train_and_measure(model, args: argparse.Namespace, layout: str = "auto") -> tuple[int, int]:
    """(parameter bytes, HSPG state bytes) held by this process after two steps."""
    from hf_oto import HSPG, build_groups

    optimizer = HSPG(
        model.parameters(), build_groups(model), lr=1e-4, target_group_sparsity=0.5, total_steps=10, layout=layout
    )
    ids = torch.randint(0, args.vocab, (2, 32), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    return sum(local_bytes(p) for p in model.parameters()), optimizer.state_bytes()


def worker(rank: int, args: argparse.Namespace, init_file: str, out_dir: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=args.world)
    try:
        model = make_model(args)
        mesh = init_device_mesh("cpu", (args.world,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        torch.save(train_and_measure(model, args), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=8000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"LLaMA shape: {args.layers} layers, hidden {args.hidden}, torch {torch.__version__}, {args.world} ranks")
    for layout in ("workspace", "stacked"):  # the sharded layout has no CPU workspace: compare with "stacked"
        params, state = train_and_measure(make_model(args), args, layout)
        total = params + state
        print(
            f"unsharded, layout {layout!r}: parameters {params / 2**20:.1f} MiB + HSPG state "
            f"{state / 2**20:.1f} MiB = {total / 2**20:.1f} MiB"
        )
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(worker, args=(args, os.path.join(folder, "init"), folder), nprocs=args.world, join=True)
        results = [torch.load(os.path.join(folder, f"rank{r}.pt")) for r in range(args.world)]
    target = 1.0 / args.world * 1.10
    for rank, (rank_params, rank_state) in enumerate(results):
        ratio = (rank_params + rank_state) / total
        print(
            f"rank {rank}: parameters {rank_params / 2**20:.1f} MiB + HSPG state {rank_state / 2**20:.1f} MiB "
            f"= {(rank_params + rank_state) / 2**20:.1f} MiB, ratio {ratio:.4f} (target ≤ {target:.4f}: "
            f"{'met' if ratio <= target else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
