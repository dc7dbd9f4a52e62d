"""Is an F1 difference between SQuAD models real? A paired bootstrap over the questions.

Scores saved models (dense folders or slim ones) on the same questions: validation.json of the article-disjoint
split in ../shared/data/squad_v1.1, or with `--tune_holdout 0.1` the tuning split that quality_squad.py scores.
For each model after the first, it prints the F1 difference against the first with its paired-bootstrap standard
error and 95% interval: the questions are resampled with replacement, the same resample for both models. The
interval covers only which questions were asked; training noise (the seed) comes on top of it.

Run: python bench/squad_paired.py BASE_MODEL OTHER_MODEL... [--data_dir D] [--tune_holdout 0.1] [--threads 1]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

import hf_oto  # noqa: F401  (registers the slim model classes with the Auto classes)
from hf_oto.metrics.squad_v1 import question_scores
from hf_oto.qa import evaluate_squad, load_squad_json, split_by_article


def per_question_f1(model_dir: str, examples, max_seq_length: int, doc_stride: int) -> np.ndarray:
    """F1 (percent) of the model saved in `model_dir` on each of `examples`, in their order."""
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    _, predictions = evaluate_squad(model, tokenizer, examples, max_seq_length=max_seq_length, doc_stride=doc_stride)
    scores = question_scores(predictions, {e["id"]: e["answers"]["text"] for e in examples})
    return np.array([100.0 * scores[e["id"]][1] for e in examples])


def paired_bootstrap(base: np.ndarray, other: np.ndarray, resamples: int, seed: int) -> tuple[float, float, float]:
    """Standard error and 95% interval (2.5th, 97.5th percentile) of mean(other − base) over question resamples."""
    difference = other - base
    rows = np.random.default_rng(seed).integers(0, len(difference), size=(resamples, len(difference)))
    means = difference[rows].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(means.std(ddof=1)), float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="saved model folders; the first is the baseline")
    parser.add_argument("--data_dir", default="../shared/data/squad_v1.1")
    parser.add_argument("--tune_holdout", type=float, default=None, help="score the tuning split instead")
    parser.add_argument("--max_seq_length", type=int, default=256)
    parser.add_argument("--doc_stride", type=int, default=128)
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    missing = [path for path in args.models if not os.path.isfile(os.path.join(path, "config.json"))]
    if len(args.models) < 2 or missing:
        parser.error(f"give a baseline and at least one other saved model folder (no config.json in: {missing})")
    torch.set_num_threads(args.threads)
    if args.tune_holdout is not None:
        _, examples = split_by_article(
            load_squad_json(os.path.join(args.data_dir, "train.json")), eval_fraction=args.tune_holdout
        )
        split = f"tuning split (last {args.tune_holdout:g} of train.json's articles)"
    else:
        examples = load_squad_json(os.path.join(args.data_dir, "validation.json"))
        split = "validation.json (article-disjoint split)"
    scores = [per_question_f1(path, examples, args.max_seq_length, args.doc_stride) for path in args.models]
    print(f"{split}: {len(examples)} questions, seq {args.max_seq_length}, {args.resamples} paired resamples")
    print(f"{'model':<50} {'F1':>7} {'ΔF1':>7} {'SE':>6} {'95% interval':>17} {'differ':>7}")
    print(f"{args.models[0][-50:]:<50} {scores[0].mean():7.2f}")
    for path, other in zip(args.models[1:], scores[1:]):
        se, low, high = paired_bootstrap(scores[0], other, args.resamples, args.seed)
        differ = (other != scores[0]).mean()  # share of questions where the two F1s differ at all
        print(
            f"{path[-50:]:<50} {other.mean():7.2f} {other.mean() - scores[0].mean():+7.2f} {se:6.2f} "
            f"[{low:+6.2f}, {high:+6.2f}] {differ:7.1%}"
        )


if __name__ == "__main__":
    main()
