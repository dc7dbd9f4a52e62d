"""The ``hf-oto`` command: ``hf-oto demo`` (train and compress a QA model offline) and ``hf-oto inspect DIR``.

``hf-oto demo`` generates a reading-comprehension set (`hf_oto.synthetic_qa`), builds a WordPiece tokenizer
from it, and trains a small BERT from scratch with `OTOTrainer`, which removes a target share of attention
heads and FFN neurons during that same run. It then prints what the compression bought (parameters, FLOPs,
measured latency) and what it cost (EM/F1 of the slim model, equal to the group-sparse model's), saves the
Hub-format folder, reloads it with plain ``from_pretrained(..., trust_remote_code=True)`` and answers a
question with it. ``--model`` and ``--data`` switch to a real pretrained BERT folder and real SQuAD v1.1 JSON.

``hf-oto inspect DIR`` describes a saved slim model from its ``config.json`` alone: per-layer shapes,
parameters and FLOPs dense vs slim, and the OTO settings it was trained with.

Bad input (a missing folder, a folder that holds no hf_oto model, an unsupported model, an unreadable data
file) ends with a one-line message on stderr and exit status 2, never a traceback. Set ``HF_OTO_DEBUG=1``
to see the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


class CLIError(Exception):
    """A problem with the user's input; reported as one line, without a traceback."""


# --------------------------------------------------------------------------------------------------------------
# hf-oto inspect
# --------------------------------------------------------------------------------------------------------------


def read_slim_config(folder: str) -> dict[str, Any]:
    """The ``config.json`` of a saved hf_oto slim model, or `CLIError` saying why `folder` is not one."""
    from .errors import OTOLoadError
    from .slim_folder import read_slim_config as read

    try:
        return read(folder)
    except OTOLoadError as error:
        raise CLIError(str(error)) from None


def format_inspection(folder: str, config: dict[str, Any]) -> str:
    """The text `hf-oto inspect` prints for one slim config: `SlimReport.rows()` / `layer_rows()` plus the
    weight shapes that the config's layout implies, and the OTO settings."""
    from .accounting import LayerRow, SlimReport, kept_ratio

    layout = config["oto_layout"]
    head_dim = int(layout["head_dim"])
    hidden = config.get("hidden_size") or config.get("dim") or config.get("d_model")
    report = SlimReport.from_config(config)
    weights = [
        name
        for name in ("model.safetensors", "model.safetensors.index.json")
        if os.path.exists(os.path.join(folder, name))
    ]
    lines = [
        f"hf_oto slim model: {os.path.abspath(folder)}",
        f"  family {layout.get('family')} (model_type {config.get('model_type')}, "
        f"{', '.join(config.get('architectures') or ['?'])})",
        f"  {len(config['oto_num_attention_heads'])} layers, hidden size {hidden}, head dim {head_dim}; "
        f"weights: {', '.join(weights) or 'MISSING'}",
        "",
    ]
    if report is not None:
        lines += [f"  {'':<34}{'dense':>15}{'slim':>15}{'kept':>9}"]
        lines += [f"  {row.label:<34}{row.dense:>15,}{row.slim:>15,}{row.kept:>9}" for row in report.rows()]
        lines.append("")
        layer_rows = report.layer_rows()
    else:
        lines += ["  (no dense/slim report recorded in config.json)", ""]
        counts = zip(
            *(config[k] for k in ("oto_num_attention_heads", "oto_num_key_value_heads", "oto_intermediate_sizes"))
        )
        layer_rows = [LayerRow(i, (h, None), (kv, None), (f, None)) for i, (h, kv, f) in enumerate(counts)]

    ffn_in = ", ".join(layout.get("ffn_in", []))
    lines.append(
        f"  {'layer':>5}  {'heads':>7}  {'kv heads':>8}  {'ffn':>11}  "
        f"{'q / k / v (out x in)':<30}  {'o (out x in)':<14}  ffn in / out ({ffn_in} / {layout.get('ffn_out')})"
    )
    for row in layer_rows:
        q, k, width = row.heads[0] * head_dim, row.kv_heads[0] * head_dim, row.ffn[0]
        lines.append(
            f"  {row.layer:>5}  {LayerRow.fraction(row.heads):>7}  {LayerRow.fraction(row.kv_heads):>8}  "
            f"{LayerRow.fraction(row.ffn):>11}  "
            f"{f'{q}x{hidden} / {k}x{hidden} / {k}x{hidden}':<30}  {f'{hidden}x{q}':<14}  "
            f"{width}x{hidden} / {hidden}x{width}"
        )
    if report is not None:
        d, s = report.dense, report.slim
        lines.append(
            f"  {'total':>5}  {sum(s.heads):>3}/{sum(d.heads):<3}  {'':>8}  {sum(s.ffn):>5}/{sum(d.ffn):<5}  "
            f"({1 - kept_ratio(sum(s.heads), sum(d.heads)):.1%} of heads and "
            f"{1 - kept_ratio(sum(s.ffn), sum(d.ffn)):.1%} of FFN neurons removed)"
        )
    settings = config.get("oto_settings") or {}
    lines += ["", "  OTO settings:" if settings else "  OTO settings: (none recorded)"]
    for key in sorted(settings):
        lines.append(f"    {key}: {settings[key]}")
    return "\n".join(lines)


def inspect_command(args: argparse.Namespace) -> int:
    config = read_slim_config(args.folder)
    print(format_inspection(args.folder, config))
    return 0


# --------------------------------------------------------------------------------------------------------------
# hf-oto demo
# --------------------------------------------------------------------------------------------------------------


def _check_model_folder(path: str, max_seq_length: int | None = None) -> None:
    """One-line errors, before any work, for a --model that is missing, not a model folder, of an unsupported
    family, without a tokenizer, or with fewer positions than --max_seq_length."""
    from .architectures import get_spec
    from .errors import UnsupportedModelError
    from .hub import TOKENIZER_FILES, has_tokenizer

    if not os.path.isdir(path):
        raise CLIError(f"--model {path}: no such folder (pass a local pretrained model folder)")
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise CLIError(f"--model {path}: no config.json; it is not a saved model folder")
    try:
        with open(config_path) as handle:
            config = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise CLIError(f"--model {path}: config.json is not readable JSON ({error})") from None
    model_type = str(config.get("model_type", "")) if isinstance(config, dict) else ""
    if model_type.startswith("oto_"):
        raise CLIError(f"--model {path} is already an hf_oto slim model; start from a dense pretrained model")

    class _Config:
        pass

    probe = _Config()
    probe.model_type = model_type
    try:
        get_spec(probe)
    except UnsupportedModelError as error:
        raise CLIError(f"--model {path}: {error}") from None
    if not has_tokenizer(path):
        raise CLIError(
            f"--model {path}: no tokenizer ({', '.join(TOKENIZER_FILES[:3])}, ...); save the model's tokenizer "
            f"there with tokenizer.save_pretrained({path!r})"
        )
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and max_seq_length is not None and positions < max_seq_length:
        raise CLIError(
            f"--model {path}: max_position_embeddings is {positions}, below --max_seq_length {max_seq_length}; "
            f"pass --max_seq_length {positions} or less"
        )


def _load_questions(path: str):
    from .qa import load_squad_json

    if not os.path.isfile(path):
        raise CLIError(f"--data {path}: no such file (pass a SQuAD v1.1 JSON file)")
    if not os.access(path, os.R_OK):
        raise CLIError(f"--data {path}: the file is not readable")
    try:
        questions = load_squad_json(path)
    except ValueError as error:
        raise CLIError(f"--data {path}: {str(error).splitlines()[0]}") from None
    if len(questions) == 0:
        raise CLIError(f"--data {path}: the file holds no questions")
    return questions


def _median_latency_ms(models: Sequence, inputs: dict, rounds: int) -> list[float]:
    """Median forward time of each model on `inputs`, measured interleaved (A, B, A, B, ...) after a warm-up."""
    import torch

    timings: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for model in models:
            model.eval()
            model(**inputs)
        for _ in range(rounds):
            for index, model in enumerate(models):
                start = time.perf_counter()
                model(**inputs)
                timings[index].append((time.perf_counter() - start) * 1000)
    return [sorted(t)[len(t) // 2] for t in timings]


def _demo_config(vocab_size: int, args: argparse.Namespace):
    """The from-scratch BERT of the demo: small enough to train in minutes on 2 CPU cores."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        intermediate_size=4 * args.hidden_size,
        max_position_embeddings=max(128, args.max_seq_length),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def _row(label: str, dense: str, slim: str, note: str = "") -> str:
    return f"  {label:<28}{dense:>16}{slim:>16}  {note}"


def demo_command(args: argparse.Namespace) -> int:
    if args.model is not None:
        _check_model_folder(args.model, args.max_seq_length)
    if not 0.0 < args.target_sparsity < 1.0:
        raise CLIError(f"--target_sparsity must be in (0, 1), got {args.target_sparsity}")
    if args.max_steps < 1:
        raise CLIError(f"--max_steps must be positive, got {args.max_steps}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    out = os.path.abspath(args.output_dir)
    written: list[tuple[str, str]] = []

    def step(number: int, text: str) -> None:
        print(f"[{number}/6] {text} ({time.perf_counter() - started:.0f}s)", flush=True)

    # Heavy imports only now, so `hf-oto inspect` and argument errors stay fast.
    import datasets
    import torch
    import transformers
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from .metrics import load_squad_metric
    from .qa import evaluate_squad, prepare_eval_features, prepare_train_features, split_by_article
    from .synthetic_qa import build_wordpiece_tokenizer, write_squad_splits

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    torch.manual_seed(args.seed)

    # 1. data ---------------------------------------------------------------------------------------------
    if args.data is not None:
        step(1, f"reading {args.data}")
        train_questions, eval_questions = split_by_article(_load_questions(args.data), eval_fraction=0.1)
        data_name = args.data
    else:
        step(1, "generating the synthetic QA set")
        train_path, eval_path = write_squad_splits(
            os.path.join(out, "data"),
            train_paragraphs=args.train_paragraphs,
            validation_paragraphs=args.eval_paragraphs,
            seed=args.seed,
            people_per_paragraph=(2, args.max_people),
        )
        written += [("synthetic train set", train_path), ("synthetic eval set", eval_path)]
        train_questions, eval_questions = _load_questions(train_path), _load_questions(eval_path)
        data_name = "synthetic QA (hf_oto.synthetic_qa)"
    if args.max_eval_questions:
        eval_questions = eval_questions.select(range(min(args.max_eval_questions, len(eval_questions))))
    print(f"      {len(train_questions)} training and {len(eval_questions)} evaluation questions from {data_name}")

    # 2. tokenizer and model ------------------------------------------------------------------------------
    if args.model is not None:
        step(2, f"loading {args.model}")
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForQuestionAnswering.from_pretrained(args.model)
        model_name = args.model  # as typed: a package folder is often just ".../model"
    else:
        step(2, "building a WordPiece tokenizer and a small BERT from scratch")
        texts = [*train_questions["context"], *train_questions["question"]]
        tokenizer = build_wordpiece_tokenizer(dict.fromkeys(texts), vocab_size=args.vocab_size)
        model = AutoModelForQuestionAnswering.from_config(_demo_config(len(tokenizer), args))
        model_name = "BERT from scratch"
    window = {"tokenizer": tokenizer, "max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride}
    train_features = train_questions.map(
        prepare_train_features,
        batched=True,
        remove_columns=train_questions.column_names,
        fn_kwargs={**window, "pad_to_max_length": False},
    )

    # 3. train and compress in one run --------------------------------------------------------------------
    step(3, f"training {model_name} with OTOTrainer (target group sparsity {args.target_sparsity})")
    from .trainer import OTOTrainer, OTOTrainingArguments

    training_args = OTOTrainingArguments(
        output_dir=os.path.join(out, "trainer"),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=max(1, args.max_steps // 15),
        weight_decay=0.01,
        lr_scheduler_type="linear",
        logging_steps=max(1, args.max_steps // 5),
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        disable_tqdm=False,
        oto_target_group_sparsity=args.target_sparsity,
    )
    trainer = OTOTrainer(
        model=model,
        args=training_args,
        train_dataset=train_features,
        processing_class=tokenizer,
        data_collator=transformers.DataCollatorWithPadding(tokenizer),
    )
    trainer.train()
    dense = trainer.model

    # 4. save the slim model; reload it as a user would -------------------------------------------------
    slim_dir = os.path.join(out, "slim-model")
    step(4, f"saving the slim model to {slim_dir} and reloading it")
    trainer.save_model(slim_dir)
    report = trainer.slim_report
    written.append(("slim model (Hub format)", slim_dir))
    slim = AutoModelForQuestionAnswering.from_pretrained(slim_dir, trust_remote_code=True)
    slim_tokenizer = AutoTokenizer.from_pretrained(slim_dir)

    # 5. evaluate both, and time both -----------------------------------------------------------------
    step(5, f"scoring both models on {len(eval_questions)} questions and timing them")
    metric = load_squad_metric()
    eval_kwargs = {"max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride, "metric": metric}
    dense_scores, _ = evaluate_squad(dense, tokenizer, eval_questions, **eval_kwargs)
    slim_scores, _ = evaluate_squad(slim, slim_tokenizer, eval_questions, **eval_kwargs)
    features = eval_questions.select(range(min(args.latency_batch, len(eval_questions)))).map(
        prepare_eval_features, batched=True, remove_columns=eval_questions.column_names, fn_kwargs=window
    )
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in features.column_names]
    batch = {n: torch.tensor(features[n][: args.latency_batch]) for n in names}
    dense_ms, slim_ms = _median_latency_ms([dense, slim], batch, args.latency_rounds)

    # 6. answer a question with the reloaded model -----------------------------------------------------
    step(6, 'answering a question with pipeline("question-answering") on the reloaded slim model')
    example = eval_questions[0]
    qa = transformers.pipeline("question-answering", model=slim, tokenizer=slim_tokenizer)
    answer = qa(
        question=example["question"],
        context=example["context"],
        max_seq_len=args.max_seq_length,
        doc_stride=args.doc_stride,
    )

    # the table ------------------------------------------------------------------------------------------
    d, s = report.dense, report.slim
    lines = [
        "",
        f"hf-oto demo: {model_name}, {data_name}, {args.max_steps} steps, target group sparsity {args.target_sparsity}",
        _row("", "dense", "slim", "kept / ratio"),
        _row("parameters", f"{d.params:,}", f"{s.params:,}", f"{report.params_kept_ratio:.1%}"),
        _row(
            "non-embedding parameters",
            f"{d.non_embedding_params:,}",
            f"{s.non_embedding_params:,}",
            f"{report.non_embedding_params_kept_ratio:.1%}",
        ),
        _row(
            f"FLOPs/token @{report.seq_len}",
            f"{d.flops_per_token:,}",
            f"{s.flops_per_token:,}",
            f"{report.flops_kept_ratio:.1%}",
        ),
        _row(
            f"latency, batch {batch['input_ids'].shape[0]}x{batch['input_ids'].shape[1]}",
            f"{dense_ms:.1f} ms",
            f"{slim_ms:.1f} ms",
            f"{dense_ms / slim_ms:.2f}x faster (median of {args.latency_rounds}, interleaved)",
        ),
        _row(
            "exact match",
            f"{dense_scores['exact_match']:.2f}",
            f"{slim_scores['exact_match']:.2f}",
            "dense = group-sparse trained model",
        ),
        _row("F1", f"{dense_scores['f1']:.2f}", f"{slim_scores['f1']:.2f}", "slim = reloaded from disk"),
        "",
        "  layer   heads kept   ffn neurons kept",
    ]
    for index, (h, hd, f, fd) in enumerate(zip(s.heads, d.heads, s.ffn, d.ffn)):
        lines.append(f"  {index:>5}   {h:>4}/{hd:<6}  {f:>6}/{fd}")
    lines += [
        f"  total   {sum(s.heads):>4}/{sum(d.heads):<6}  {sum(s.ffn):>6}/{sum(d.ffn)}",
        "",
        f"  Q: {example['question']}",
        f"  context: {example['context'][:200]}{'...' if len(example['context']) > 200 else ''}",
        f"  slim model's answer: {answer['answer']!r} (score {answer['score']:.2f}); reference: {example['answers']['text'][0]!r}",
    ]
    print("\n".join(lines))

    results = {
        "model": model_name,
        "data": data_name,
        "max_steps": args.max_steps,
        "target_group_sparsity": args.target_sparsity,
        "report": report.to_dict(),
        "dense": {**dense_scores, "latency_ms": dense_ms},
        "slim": {**slim_scores, "latency_ms": slim_ms},
        "example": {
            "question": example["question"],
            "answer": answer["answer"],
            "reference": example["answers"]["text"][0],
        },
        "wall_time_s": time.perf_counter() - started,
    }
    results_path = os.path.join(out, "demo_results.json")
    with open(results_path, "w") as handle:
        json.dump(results, handle, indent=2)
    written.append(("results", results_path))
    print(f"\nFinished in {time.perf_counter() - started:.0f}s. Wrote:")
    for label, path in written:
        print(f"  {label:<24}{path}")
    print(f"Inspect the slim model with: hf-oto inspect {slim_dir}")
    return 0


# --------------------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-oto", description="Only-Train-Once structured pruning for transformers.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train and compress a small QA model offline, then compare dense vs slim")
    demo.add_argument("--output_dir", default="hf-oto-demo", help="where data, the slim model and results go")
    demo.add_argument(
        "--model", default=None, help="a local pretrained BERT-family folder instead of BERT from scratch"
    )
    demo.add_argument("--data", default=None, help="a SQuAD v1.1 JSON file instead of the synthetic set")
    demo.add_argument("--max_steps", type=int, default=1500, help="training steps")
    demo.add_argument("--target_sparsity", type=float, default=0.5, help="share of heads and FFN neurons to remove")
    demo.add_argument("--learning_rate", type=float, default=2e-3)
    demo.add_argument("--batch_size", type=int, default=16)
    demo.add_argument("--max_seq_length", type=int, default=128)
    demo.add_argument("--doc_stride", type=int, default=32)
    demo.add_argument(
        "--train_paragraphs", type=int, default=1500, help="synthetic training paragraphs (4 questions each)"
    )
    demo.add_argument("--max_people", type=int, default=4, help="synthetic paragraphs describe 2 to this many people")
    demo.add_argument("--eval_paragraphs", type=int, default=100, help="synthetic evaluation paragraphs")
    demo.add_argument("--max_eval_questions", type=int, default=None, help="score on at most this many questions")
    demo.add_argument("--vocab_size", type=int, default=2000, help="WordPiece vocabulary when training from scratch")
    demo.add_argument("--hidden_size", type=int, default=64, help="from-scratch BERT: hidden size (FFN is 4x)")
    demo.add_argument("--num_layers", type=int, default=3, help="from-scratch BERT: layers")
    demo.add_argument("--num_heads", type=int, default=4, help="from-scratch BERT: attention heads per layer")
    demo.add_argument("--latency_batch", type=int, default=32)
    demo.add_argument("--latency_rounds", type=int, default=20)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=demo_command)

    inspect = commands.add_parser("inspect", help="describe a saved slim model from its folder")
    inspect.add_argument("folder", help="a folder written by OTOTrainer.save_model or a slim model's save_pretrained")
    inspect.set_defaults(handler=inspect_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hf-oto``; returns the exit status (0, 1 on failure, 2 on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CLIError as error:
        print(f"hf-oto {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"hf-oto {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get("HF_OTO_DEBUG"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(
            f"hf-oto {args.command}: error: {type(error).__name__}: {message} (HF_OTO_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
