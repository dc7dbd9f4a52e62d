"""CUDA bf16 training-step time of Trainer+AdamW vs OTOTrainer+HSPG, HSPG's optimizer step in isolation, memory.

Three parts, all measured side by side in one run on one GPU:

1. **Training step.** `BertForSequenceClassification(BertConfig())` (BERT-base shape), random init, synthetic
   batches (default 32 × 128), `bf16=True`, Trainer defaults otherwise (fused AdamW, linear schedule,
   clipping at 1.0). Trainer+AdamW and OTOTrainer+HSPG (target group sparsity 0.3: stage 1, the projection
   window, stage 2 after the deadline) take turns step by step (see bench/trainer_overhead.py); each step is
   timed between `torch.cuda.synchronize()` calls. Prints the medians after warm-up, the ratio (target ≤ 1.05),
   HSPG's medians per phase and each trainer's CUDA peak per step above the memory resident at the step's start.
2. **Optimizer step alone.** `optimizer.step()` on a BERT-base model's fp32 parameters with fixed random
   gradients: torch AdamW(foreach=True), AdamW(fused=True), HSPG in stage 1, and HSPG in the projection window
   (30% of the groups already zero), interleaved; medians, ratios, state memory and CUDA peak per step.
3. **FSDP refusal.** `torchrun --nproc_per_node 1` with `fsdp=True`: OTOTrainer must raise NotImplementedError
   (FSDP shards every group across ranks, so HSPG's group norms would be wrong). `--no-fsdp-check` skips it.

Needs only torch, transformers, accelerate and hf_oto; no download, no prompt. Without a CUDA device it prints a
message and exits 0. ``--tiny --device cpu`` runs every code path on a tiny model on CPU (a smoke test; its
figures mean nothing). Usage, from the repo root: ``python bench/gpu_step.py [--steps 120] [--batch 32]``;
about 1-2 minutes on one H200. Exit status 1 only when the FSDP check gives an unexpected result.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One GPU: with several visible, the Trainer would wrap the model in DataParallel.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from trainer_overhead import report, run_side_by_side, trainer_builders  # noqa: E402
from transformers import BertConfig, BertModel  # noqa: E402

from hf_oto import HSPG, build_groups  # noqa: E402

TINY = dict(
    vocab_size=1100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
)  # vocab > 1000: the synthetic ids start at 1000


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def training_steps(cli, config: BertConfig) -> None:
    print(f"\n== 1. training step: batch {cli.batch} x seq {cli.seq}, bf16, {cli.steps} steps each ==")
    cuda = cli.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        builders = trainer_builders(
            config, tmp, cli.steps, cli.batch, cli.seq, bf16=True, use_cpu=not cuda, dataloader_pin_memory=cuda
        )
        timers = run_side_by_side(builders, sync=torch.cuda.synchronize if cuda else None, track_memory=cuda)
    report(timers, cli.warmup, target=1.05)
    if cuda:
        for name, timer in timers.items():
            peaks = timer.step_peaks[cli.warmup :]
            print(f"  {name:6s} CUDA peak per step above resident: median {_mib(statistics.median(peaks))}")
        print(f"  process CUDA peak (both trainers resident): {_mib(torch.cuda.max_memory_allocated())}")
    print(f"  wall time {time.perf_counter() - start:.0f} s")
    del timers, builders
    if cuda:
        torch.cuda.empty_cache()


def _model_with_grads(config: BertConfig, device: str) -> BertModel:
    torch.manual_seed(0)
    model = BertModel(config).to(device)
    generator = torch.Generator(device=device).manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, device=device, generator=generator) * 1e-2
    return model


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    if isinstance(optimizer, HSPG) and hasattr(optimizer, "state_bytes"):
        return optimizer.state_bytes()
    seen = {}
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                seen[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
    return sum(seen.values())


def optimizer_steps(cli, config: BertConfig) -> None:
    device = cli.device
    shape = "tiny BERT" if cli.tiny else "BERT-base"
    print(f"\n== 2. optimizer.step() alone: {shape} fp32 parameters, fixed random gradients, {cli.opt_reps} reps ==")
    total = 10_000
    models = {name: _model_with_grads(config, device) for name in ("foreach", "fused", "stage1", "window")}
    optimizers = {
        "foreach": torch.optim.AdamW(models["foreach"].parameters(), lr=1e-4, weight_decay=0.01, foreach=True),
        "fused": torch.optim.AdamW(models["fused"].parameters(), lr=1e-4, weight_decay=0.01, fused=True),
        "stage1": HSPG(
            models["stage1"].parameters(), build_groups(models["stage1"]), lr=1e-4, weight_decay=0.01, n_p=total
        ),
    }
    groups = build_groups(models["window"])
    optimizers["window"] = HSPG(
        models["window"].parameters(),
        groups,
        lr=1e-4,
        weight_decay=0.01,
        n_p=0,
        target_group_sparsity=0.5,
        total_steps=total,
    )
    index = torch.arange(len(groups))
    groups.zero_(index[index % 10 < 3])  # 30% already zero: the masking paths run too
    labels = {
        "foreach": "torch AdamW(foreach=True)",
        "fused": "torch AdamW(fused=True)",
        "stage1": "HSPG adamw, stage 1",
        "window": "HSPG adamw, projection window",
    }
    for optimizer in optimizers.values():  # warm-up: state allocation, first projection
        optimizer.step()
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    peaks: dict[str, list[int]] = {name: [] for name in optimizers}
    for _ in range(cli.opt_reps):
        for name, optimizer in optimizers.items():
            _sync(device)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                allocated = torch.cuda.memory_allocated()
            start = time.perf_counter()
            optimizer.step()
            _sync(device)
            times[name].append(time.perf_counter() - start)
            if device == "cuda":
                peaks[name].append(torch.cuda.max_memory_allocated() - allocated)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{'optimizer':34s}{'median':>11s}{'vs foreach':>12s}{'vs fused':>10s}{'state':>12s}{'step peak':>12s}")
    for name, label in labels.items():
        peak = _mib(statistics.median(peaks[name])) if peaks[name] else "-"
        print(
            f"{label:34s}{medians[name] * 1e3:8.2f} ms{medians[name] / medians['foreach']:12.3f}"
            f"{medians[name] / medians['fused']:10.3f}{_mib(_state_bytes(optimizers[name])):>12s}{peak:>12s}"
        )
    sparsity = optimizers["window"].sparsity_report()
    print(f"  projection window: {sparsity['zero_groups']} zero groups, {sparsity['candidates']} candidates shrinking")
    del optimizers, models
    if device == "cuda":
        torch.cuda.empty_cache()


FSDP_CHILD = textwrap.dedent(
    """
    import os, sys, torch
    from transformers import BertConfig, BertForSequenceClassification
    from hf_oto import OTOTrainer, OTOTrainingArguments
    config = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=32)
    data = [{"input_ids": torch.arange(8), "labels": torch.tensor(0)}] * 4
    args = OTOTrainingArguments(output_dir=sys.argv[1], report_to="none", max_steps=1, fsdp=True)
    try:
        OTOTrainer(model=BertForSequenceClassification(config), args=args, train_dataset=data)
    except NotImplementedError as error:
        print("FSDP-REFUSED:", error)
    else:
        print("FSDP-ACCEPTED: OTOTrainer was built under FSDP")
    """
)


def fsdp_check() -> bool:
    """Run OTOTrainer under `torchrun --nproc_per_node 1` with fsdp=True; True when it refuses as documented."""
    print("\n== 3. FSDP: OTOTrainer under torchrun --nproc_per_node 1 with fsdp=True ==")
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "fsdp_child.py")
        with open(script, "w") as handle:
            handle.write(FSDP_CHILD)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", script]
        try:
            done = subprocess.run(
                [*command, os.path.join(tmp, "out")], capture_output=True, text=True, timeout=240, env=dict(os.environ)
            )
        except subprocess.TimeoutExpired:
            print("  UNEXPECTED: the FSDP check timed out after 240 s")
            return False
    lines = [line for line in done.stdout.splitlines() if line.startswith(("FSDP-REFUSED", "FSDP-ACCEPTED"))]
    if lines and lines[0].startswith("FSDP-REFUSED"):
        print(f"  refused as expected: {lines[0].removeprefix('FSDP-REFUSED: ')}")
        return True
    print(f"  UNEXPECTED (exit {done.returncode}): {lines[0] if lines else 'no verdict'}")
    print(textwrap.indent((done.stdout + done.stderr)[-3000:], "  | "))
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120, help="training steps of each trainer")
    parser.add_argument("--warmup", type=int, default=10, help="leading steps of each trainer left out")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--opt-reps", type=int, default=30, help="interleaved optimizer.step() repetitions")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: smoke test with --tiny")
    parser.add_argument("--tiny", action="store_true", help="a tiny BERT and few steps (smoke test)")
    parser.add_argument("--no-fsdp-check", action="store_true", help="skip part 3")
    cli = parser.parse_args()
    if cli.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench/gpu_step.py: no CUDA device available, nothing measured. Run it on a machine with a GPU "
            "(or `python bench/gpu_step.py --tiny --device cpu` for a smoke test of the code paths)."
        )
        return 0
    if cli.device == "cpu" and not cli.tiny:
        parser.error("--device cpu is a smoke test: add --tiny (bench/trainer_overhead.py is the CPU benchmark)")
    if cli.tiny:
        cli.steps, cli.warmup, cli.batch, cli.seq, cli.opt_reps = min(cli.steps, 12), 2, 4, 16, 3
    if cli.steps <= cli.warmup:
        parser.error("--steps must exceed --warmup")
    config = BertConfig(**TINY) if cli.tiny else BertConfig()

    where = torch.cuda.get_device_name() if cli.device == "cuda" else "CPU (smoke test)"
    print(
        f"{where}; torch {torch.__version__}; {'tiny BERT' if cli.tiny else 'BERT-base shape (BertConfig())'}, "
        "random init"
    )
    start = time.perf_counter()
    training_steps(cli, config)
    optimizer_steps(cli, config)
    ok = True
    if cli.device == "cuda" and not cli.no_fsdp_check:
        ok = fsdp_check()
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
