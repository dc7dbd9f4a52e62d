"""Training-step time of Trainer+AdamW vs OTOTrainer+HSPG on a BERT-base-shaped classifier (CPU by default).

Model: `BertForSequenceClassification(BertConfig())` (BERT-base shape: 12 layers, hidden 768, 12 heads,
FFN 3072), random init, no download. Data: synthetic token batches (default 8 × 128). Both trainers keep the
Trainer's defaults (the Trainer's default optimizer, AdamW fused, linear schedule, clipping at 1.0); OTOTrainer
adds a 30% target group sparsity, so its run goes through HSPG's stage 1, the projection window (candidate
selection, adaptive shrink, capped projection every step) and the plain stage 2 after the deadline.

The two trainers run side by side in one process and take turns step by step: each runs `train()` in its own
thread, and a `TrainerCallback` hands the turn over at `on_step_begin`, so exactly one of them computes at a
time and machine noise hits both alike. A step is timed from `on_step_begin` to `on_step_end` (forward,
backward, clipping, optimizer step, scheduler step, zero_grad). The first `--warmup` steps of each are dropped;
the script prints the medians, their ratio (target ≤ 1.10 on CPU), the median of the paired per-step ratios
(step i of each, run back to back, so slow drifts of machine load cancel) and HSPG's figures per phase.

Usage: ``python bench/trainer_overhead.py [--steps 20] [--batch 8] [--seq 128] [--warmup 3]``
(several minutes on 2 CPU cores with the defaults: a BERT-base step at 8 × 128 takes seconds there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from hf_oto import OTOTrainer, OTOTrainingArguments  # noqa: E402


class SyntheticBatches(torch.utils.data.Dataset):
    """Random token ids and binary labels, generated once with a fixed seed."""

    def __init__(self, n: int, seq_len: int, vocab_size: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(1000, vocab_size, (n, seq_len), generator=generator)
        self.labels = torch.randint(0, 2, (n,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.input_ids[index]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[index]}


class Turns:
    """Strict alternation between named runners; a finished runner leaves the others to go on alone."""

    def __init__(self, names: list[str]):
        self.names = names
        self.current = names[0]
        self.done: set[str] = set()
        self.cond = threading.Condition()

    def _next(self, name: str) -> str:
        index = self.names.index(name)
        for offset in range(1, len(self.names) + 1):
            candidate = self.names[(index + offset) % len(self.names)]
            if candidate not in self.done:
                return candidate
        return name

    def hand_over_and_wait(self, name: str) -> None:
        with self.cond:
            self.current = self._next(name)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.current == name)

    def finish(self, name: str) -> None:
        with self.cond:
            self.done.add(name)
            if self.current == name:
                self.current = self._next(name)
            self.cond.notify_all()


class StepTimer(TrainerCallback):
    """Waits for its turn at each step's start, then times the step up to `on_step_end`.

    `sync` (e.g. `torch.cuda.synchronize`) runs at both ends so that asynchronous device work is counted in
    the step it belongs to. With `track_memory`, it also records each step's CUDA peak above the memory
    allocated when the step began (activations, gradients and optimizer temporaries).
    """

    def __init__(self, name: str, turns: Turns, sync: Callable[[], None] | None = None, track_memory: bool = False):
        self.name, self.turns, self.sync, self.track_memory = name, turns, sync, track_memory
        self.trainer: Trainer | None = None
        self.times: list[float] = []
        self.phases: list[str] = []
        self.step_peaks: list[int] = []
        self._start = 0.0
        self._allocated = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self.turns.hand_over_and_wait(self.name)
        self.phases.append(_phase(self.trainer))
        if self.sync is not None:
            self.sync()
        if self.track_memory:
            torch.cuda.reset_peak_memory_stats()
            self._allocated = torch.cuda.memory_allocated()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.sync is not None:
            self.sync()
        self.times.append(time.perf_counter() - self._start)
        if self.track_memory:
            self.step_peaks.append(torch.cuda.max_memory_allocated() - self._allocated)


def _phase(trainer) -> str:
    """HSPG's phase for the coming step: stage 1, the projection window (stage 2 up to the deadline), or after."""
    hspg = getattr(trainer, "hspg", None)
    if hspg is None:
        return "adamw"
    if hspg.stage == 1:
        return "stage 1"
    deadline = hspg.deadline_step
    return "projection window" if deadline is None or hspg.current_step <= deadline else "stage 2 after deadline"


def run_side_by_side(builders: dict[str, Callable[[StepTimer], Trainer]], **timer_options) -> dict[str, StepTimer]:
    """Build one trainer per entry (each gets its `StepTimer` as a callback) and train them step by step in turn."""
    turns = Turns(list(builders))
    timers = {name: StepTimer(name, turns, **timer_options) for name in builders}
    for name, build in builders.items():
        timers[name].trainer = build(timers[name])
    errors: list[BaseException] = []

    def train(name: str) -> None:
        try:
            timers[name].trainer.train()
        except BaseException as error:  # re-raised in the main thread below
            errors.append(error)
        finally:
            turns.finish(name)

    threads = [threading.Thread(target=train, args=(name,), name=name) for name in builders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return timers


def report(timers: dict[str, StepTimer], warmup: int, target: float) -> float:
    """Print the median step times after `warmup`, the ratio against `target`, and HSPG's medians per phase."""
    labels = {"adamw": "Trainer + AdamW (default optim)", "hspg": "OTOTrainer + HSPG (target 0.3)"}
    medians = {}
    for name, label in labels.items():
        times = timers[name].times[warmup:]
        medians[name] = statistics.median(times)
        print(
            f"{label:34s} median step {medians[name] * 1e3:8.1f} ms   (min {min(times) * 1e3:.1f}, "
            f"max {max(times) * 1e3:.1f}, n={len(times)})"
        )
    ratio = medians["hspg"] / medians["adamw"]
    verdict = "OK" if ratio <= target else "OVER"
    print(f"ratio of medians OTOTrainer+HSPG / Trainer+AdamW: {ratio:.3f}  (target <= {target:.2f}) -> {verdict}")
    # Step i of one trainer runs right after step i of the other: their ratio cancels slow drifts of machine load.
    hspg, adamw = timers["hspg"], timers["adamw"]
    pairs = [h / a for h, a in zip(hspg.times, adamw.times)]
    print(f"median of paired per-step ratios (step i vs step i, back to back): {statistics.median(pairs[warmup:]):.3f}")
    by_phase: dict[str, list[tuple[float, float]]] = {}
    for phase, seconds, pair in list(zip(hspg.phases, hspg.times, pairs))[warmup:]:
        by_phase.setdefault(phase, []).append((seconds, pair))
    for phase, rows in by_phase.items():
        print(
            f"  HSPG {phase:24s} median {statistics.median(r[0] for r in rows) * 1e3:8.1f} ms  "
            f"paired ratio {statistics.median(r[1] for r in rows):.3f}  (n={len(rows)})"
        )
    return ratio


def trainer_builders(config: BertConfig, output_dir: str, steps: int, batch: int, seq: int, **training_args):
    """Builders for Trainer+AdamW and OTOTrainer+HSPG on identical models (same seed) and data."""
    dataset = SyntheticBatches(steps * batch, seq, config.vocab_size)
    common = dict(
        per_device_train_batch_size=batch,
        max_steps=steps,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        **training_args,
    )

    def model() -> BertForSequenceClassification:
        torch.manual_seed(0)
        return BertForSequenceClassification(config)

    def adamw(timer: StepTimer) -> Trainer:
        args = TrainingArguments(output_dir=os.path.join(output_dir, "adamw"), **common)
        return Trainer(model=model(), args=args, train_dataset=dataset, callbacks=[timer])

    def hspg(timer: StepTimer) -> Trainer:
        args = OTOTrainingArguments(
            output_dir=os.path.join(output_dir, "hspg"), oto_target_group_sparsity=0.3, oto_save_slim=False, **common
        )
        return OTOTrainer(model=model(), args=args, train_dataset=dataset, callbacks=[timer])

    return {"adamw": adamw, "hspg": hspg}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="training steps of each trainer")
    parser.add_argument("--warmup", type=int, default=3, help="leading steps of each trainer left out of the medians")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    args_cli = parser.parse_args()
    if args_cli.steps <= args_cli.warmup:
        parser.error("--steps must exceed --warmup")

    print(
        f"BERT-base shape (BertConfig() defaults), random init; batch {args_cli.batch} x seq {args_cli.seq}; "
        f"{args_cli.steps} steps each, first {args_cli.warmup} dropped; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        builders = trainer_builders(
            BertConfig(),
            tmp,
            args_cli.steps,
            args_cli.batch,
            args_cli.seq,
            use_cpu=True,  # the CPU benchmark (bench/gpu_step.py is the CUDA one)
        )
        timers = run_side_by_side(builders)
    wall = time.perf_counter() - start
    report(timers, args_cli.warmup, target=1.10)
    print(f"wall time {wall:.0f} s")


if __name__ == "__main__":
    main()
