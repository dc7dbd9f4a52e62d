"""SQuAD v1.1 quality: dense fine-tune (Trainer + AdamW) vs OTOTrainer at target group sparsity 0.3 and 0.5.

Trains on ``train.json`` and scores EM/F1 on ``validation.json`` of the article-disjoint split in
../shared/data/squad_v1.1 (both come from the official v1.1 *dev* set; report figures as "SQuAD v1.1 dev,
article-disjoint split", never as standard SQuAD numbers). Same model (all-MiniLM-L6-v2 by default), seed,
data order and step budget for every run. Prints EM/F1 of the group-sparse model and of the reloaded slim
model, non-embedding params and FLOPs kept, and the measured CPU latency speedup (batch 8 x seq len).

`--tune_holdout 0.1` scores on the last 10% of train.json's articles instead (training on the rest), for
choosing settings without looking at validation.json.

Targets (issue 5): F1 within 1.5 pt of dense at 0.3 and within 3 pt at 0.5.
Run: python bench/quality_squad.py --data_dir ../shared/data/squad_v1.1 [--bf16 on a GPU]
"""

from __future__ import annotations

import argparse
import os

import torch
from quality_common import add_common_arguments, check_paths, print_table, run_all
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, default_data_collator

from hf_oto.metrics import load_squad_metric
from hf_oto.qa import evaluate_squad, load_squad_json, prepare_train_features, split_by_article


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="../shared/data/squad_v1.1")
    parser.add_argument("--max_seq_length", type=int, default=384)
    parser.add_argument("--doc_stride", type=int, default=128)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    add_common_arguments(parser, steps=1000, batch=32, lr=1e-4)
    args = parser.parse_args()
    train_path, dev_path = (os.path.join(args.data_dir, f) for f in ("train.json", "validation.json"))
    check_paths(args, [train_path] if args.tune_holdout is not None else [train_path, dev_path])

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train_examples = load_squad_json(train_path)
    if args.tune_holdout is not None:
        train_examples, dev_examples = split_by_article(train_examples, eval_fraction=args.tune_holdout)
        eval_name = f"held-out {args.tune_holdout:g} of train.json's articles (tuning split; validation.json unused)"
    else:
        dev_examples = load_squad_json(dev_path)
        eval_name = "SQuAD v1.1 dev, article-disjoint split"
    if args.max_eval_samples:
        dev_examples = dev_examples.select(range(min(args.max_eval_samples, len(dev_examples))))
    window = {"tokenizer": tokenizer, "max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride}
    train = train_examples.map(
        prepare_train_features, batched=True, remove_columns=train_examples.column_names, fn_kwargs=window
    )
    metric = load_squad_metric()

    def load_model():
        torch.manual_seed(args.seed)  # same QA-head initialization for every run
        return AutoModelForQuestionAnswering.from_pretrained(args.model, dtype=torch.float32)

    def evaluate(model) -> dict[str, float]:
        scores, _ = evaluate_squad(
            model,
            tokenizer,
            dev_examples,
            max_seq_length=args.max_seq_length,
            doc_stride=args.doc_stride,
            metric=metric,
        )
        return {"exact_match": scores["exact_match"], "f1": scores["f1"]}

    sample = train[:8]
    latency_inputs = {
        k: torch.tensor(sample[k]) for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample
    }
    rows = run_all(
        args,
        load_model,
        {"train_dataset": train, "data_collator": default_data_collator, "processing_class": tokenizer},
        evaluate,
        latency_inputs,
    )
    print(
        f"\n{eval_name}: train {len(train_examples)} questions ({len(train)} windows), "
        f"eval {len(dev_examples)} questions; {args.steps} steps x batch {args.batch}, seq {args.max_seq_length}, "
        f"lr {args.lr}, model {args.model}"
    )
    print_table(rows, ["exact_match", "f1", "slim_f1"])
    dense = next((r for r in rows if r["run"] == "dense"), None)
    if dense:
        for row in rows:
            if row["target"] is not None:
                print(
                    f"target {row['target']}: F1 {row['f1'] - dense['f1']:+.2f} pt, EM "
                    f"{row['exact_match'] - dense['exact_match']:+.2f} pt vs dense, CPU speedup {row['speedup']:.2f}x"
                )


if __name__ == "__main__":
    main()
