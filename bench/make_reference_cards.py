"""Render the model cards of the reference models that the quality benchmarks saved into `model_cards/`.

Each benchmark run already saves its slim model: `bench/quality_sst2.py` and `bench/quality_squad.py` write it to
``OUTPUT_DIR/oto_<target>/`` next to ``results.json`` (the scores of the group-sparse and of the reloaded slim
model), and `examples/run_clm.py` writes it to its ``--output_dir`` with ``eval_results.json``. This script reads
those files only (the slim folder's config.json carries the dense/slim accounting and the OTO settings) and
writes ``model_cards/<name>/README.md`` and its plot; the card's evaluation section names the protocol, taken from
the run's own arguments. The weights stay where the run put them.

Run, after the benchmarks (commands in bench/README.md):
    python bench/make_reference_cards.py --sst2 RUNS/sst2 --squad RUNS/squad --smollm2 RUNS/clm/out
Each option is optional; a run whose files are missing is refused with the path, never guessed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from hf_oto.model_card import write_folder_card

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        sys.exit(f"{path} is missing: run the benchmark first (see this script's docstring)")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _quality_run(output_dir: str, target: float) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The slim folder, the result row and the arguments of one `bench/quality_*.py` run at `target`."""
    results = _read_json(os.path.join(output_dir, "results.json"))
    name = f"oto_{target:g}"
    rows = [row for row in results["rows"] if row["run"] == name]
    if not rows:
        sys.exit(f"{output_dir}/results.json has no run {name!r}; rerun with --sparsities {target:g}")
    return os.path.join(output_dir, name), rows[0], results["args"]


def sst2_card(output_dir: str, target: float = 0.5) -> tuple[str, str, dict[str, Any]]:
    folder, row, args = _quality_run(output_dir, target)
    protocol = (
        f"`bench/quality_sst2.py` (SST-2 dev, 872 sentences; {args['steps']} steps x batch {args['batch']}, max length "
        f"{args['max_length']}, lr {args['lr']:g}, seed {args['seed']}, {args['oto_saliency']} saliency, target "
        f"{target:g}; CPU). Accuracy of the group-sparse model before slimming: {row['accuracy']:.2f}"
    )
    return (
        f"all-MiniLM-L6-v2-sst2-oto{round(target * 100)}",
        folder,
        dict(
            metrics={"accuracy": row["slim_accuracy"]},
            metrics_source=protocol,
            datasets=["stanfordnlp/sst2"],
            dataset_name="SST-2 (GLUE) dev",
            dataset_split="validation",
            base_model=MINILM,
            tags=["text-classification"],
            language="en",
            license="apache-2.0",
        ),
    )


def squad_card(output_dir: str, target: float = 0.5) -> tuple[str, str, dict[str, Any]]:
    folder, row, args = _quality_run(output_dir, target)
    protocol = (
        f"`bench/quality_squad.py` (SQuAD v1.1 dev, article-disjoint split: trained on articles 10-47, scored on "
        f"articles 5-9, 1,159 questions; {args['steps']} steps x batch {args['batch']}, max length "
        f"{args['max_seq_length']}, lr {args['lr']:g}, seed {args['seed']}, {args['oto_saliency']} saliency, target "
        f"{target:g}; CPU). EM/F1 of the group-sparse model before slimming: "
        f"{row['exact_match']:.2f}/{row['f1']:.2f}. Not comparable with standard SQuAD figures"
    )
    return (
        f"all-MiniLM-L6-v2-squad-oto{round(target * 100)}",
        folder,
        dict(
            metrics={"exact_match": row["slim_exact_match"], "f1": row["slim_f1"]},
            metrics_source=protocol,
            datasets=["rajpurkar/squad"],
            dataset_name="SQuAD v1.1 dev, article-disjoint split (articles 5-9)",
            dataset_split="validation",
            base_model=MINILM,
            tags=["question-answering"],
            language="en",
            license="apache-2.0",
        ),
    )


def smollm2_card(output_dir: str) -> tuple[str, str, dict[str, Any]]:
    results = _read_json(os.path.join(output_dir, "eval_results.json"))
    args = _read_json(os.path.join(output_dir, "training_args.json"))
    settings = _read_json(os.path.join(output_dir, "config.json")).get("oto_settings") or {}
    target = settings.get("oto_target_group_sparsity")
    protocol = (
        f"`examples/run_clm.py` on SQuAD v1.1 paragraphs as text (`bench/prepare_clm.py`: train articles; perplexity "
        f"on the first blocks of the validation articles), block 128, {args['max_steps']} steps x batch "
        f"{args['per_device_train_batch_size']}, lr {args['learning_rate']:g}, seed {args['seed']}, target {target:g}; "
        f"CPU; weights dequantized from the 4-bit GGUF. Perplexity before pruning: {results['perplexity_before']:.2f}; "
        f"group-sparse model: {results['perplexity_group_sparse']:.2f}"
    )
    return (
        f"SmolLM2-135M-Instruct-oto{round(target * 100)}",
        output_dir,
        dict(
            metrics={"perplexity": results["perplexity_slim"]},
            metrics_source=protocol,
            datasets=["rajpurkar/squad"],
            dataset_name="SQuAD v1.1 dev paragraphs as text (validation articles)",
            dataset_split="validation",
            base_model=SMOLLM2,
            tags=["text-generation"],
            language="en",
            license="apache-2.0",
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sst2", help="--output_dir of a bench/quality_sst2.py run that included target 0.5")
    parser.add_argument("--squad", help="--output_dir of a bench/quality_squad.py run that included target 0.5")
    parser.add_argument("--smollm2", help="--output_dir of the examples/run_clm.py SmolLM2 run")
    parser.add_argument("--output", default=os.path.join(ROOT, "model_cards"))
    args = parser.parse_args()
    cards = []
    if args.sst2:
        cards.append(sst2_card(args.sst2))
    if args.squad:
        cards.append(squad_card(args.squad))
    if args.smollm2:
        cards.append(smollm2_card(args.smollm2))
    if not cards:
        parser.error("pass at least one of --sst2, --squad, --smollm2")
    for name, folder, card in cards:
        target = os.path.join(args.output, name)
        write_folder_card(folder, target, **card)
        print(f"{target}/README.md <- {folder}")


if __name__ == "__main__":
    main()
