"""``hf-oto demo``: train a small QA model with OTO offline, slim it, save, reload, score and query it.

It generates a reading-comprehension set (`hf_oto.synthetic_qa`), builds a WordPiece tokenizer from it, and
trains a small LLaMA-style model (or, with ``--architecture bert``, a BERT) from scratch with `OTOTrainer`,
which removes a target share of attention heads and FFN neurons during that same run. It then prints what the
compression bought (parameters, FLOPs, measured latency) and what it cost (EM/F1 of the slim model, equal to
the group-sparse model's), saves the Hub-format folder, reloads it with plain ``from_pretrained(...,
trust_remote_code=True)`` and answers the first evaluation question with it. ``--model`` and ``--data``
switch to a real pretrained BERT folder and real SQuAD v1.1 JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .cli import CLIError
from .synthetic_qa import LAYOUTS

if TYPE_CHECKING:
    from .slim import SlimReport


def _check_model_folder(path: str, max_seq_length: int | None = None) -> None:
    """One-line errors, before any work, for a --model that is missing, not a model folder, of an unsupported
    family, without a tokenizer, or with fewer positions than --max_seq_length."""
    from .check import meta_model
    from .errors import OTOLoadError, UnsupportedModelError
    from .groups import build_groups
    from .hub import TOKENIZER_FILES, has_tokenizer
    from .slim_folder import read_config_json

    try:
        config = read_config_json(path)
    except OTOLoadError as error:
        raise CLIError(f"--model: {error} (pass a local pretrained model folder)") from None
    model_type = str(config.get("model_type", ""))
    if model_type.startswith("oto_"):
        raise CLIError(f"--model {path} is already an hf_oto slim model; start from a dense pretrained model")

    try:  # the groups of its QA model, found (and for an inferred spec verified) from the config alone
        build_groups(meta_model(path, "AutoModelForQuestionAnswering"))
    except KeyError:
        raise CLIError(f"--model {path}: transformers has no question-answering head for {model_type!r}") from None
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


def choose_thread_count(requested: int | None = None) -> int:
    """Threads for the demo: `requested`, else the physical cores this process may use, minus the busy ones.

    Oversubscribing a busy machine is what turned a 1-minute demo into 10: each busy core (the 1-minute load
    average, rounded) is left to whoever keeps it busy, but the demo always gets at least one thread.
    """
    if requested is not None:
        return requested
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        import psutil

        usable = min(usable, psutil.cpu_count(logical=False) or usable)
    except ImportError:
        pass
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(usable, (os.cpu_count() or usable) - busy))


@dataclass
class DemoData:
    """The questions the demo trains and scores on, and where they came from."""

    train: Any
    evaluation: Any
    name: str
    evaluation_name: str
    files: list[tuple[str, str]]


@dataclass
class DemoScores:
    """EM/F1 and median latency of the group-sparse (dense-shaped) model and of the reloaded slim model."""

    dense: dict[str, float]
    slim: dict[str, float]
    latency_batch: tuple[int, int]


def _validate_demo_args(args: argparse.Namespace) -> None:
    if args.model is not None:
        _check_model_folder(args.model, args.max_seq_length)
    if not 0.0 < args.target_sparsity < 1.0:
        raise CLIError(f"--target_sparsity must be in (0, 1), got {args.target_sparsity}")
    if args.max_steps < 1:
        raise CLIError(f"--max_steps must be positive, got {args.max_steps}")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be positive, got {args.threads}")
    if not 1 <= args.min_people <= args.max_people:
        raise CLIError(
            f"--min_people and --max_people must satisfy 1 <= min <= max, got {args.min_people}, {args.max_people}"
        )
    if args.tune_holdout is not None and not 0.0 < args.tune_holdout < 1.0:
        raise CLIError(f"--tune_holdout must be in (0, 1), got {args.tune_holdout}")


def _demo_data(args: argparse.Namespace, out: str) -> DemoData:
    """The training and evaluation questions: a SQuAD file split by article, or the generated set.

    With `--tune_holdout`, the evaluation questions are held-out articles of the training data instead, so that
    settings are chosen without looking at the evaluation set."""
    from .qa import split_by_article
    from .synthetic_qa import FACT_QUESTIONS, QUESTION_KINDS, write_squad_splits

    files: list[tuple[str, str]] = []
    if args.data is not None:
        train, evaluation = split_by_article(_load_questions(args.data), eval_fraction=0.1)
        name, evaluation_name = args.data, "held-out articles"
    else:
        train_path, eval_path = write_squad_splits(
            os.path.join(out, "data"),
            train_paragraphs=args.train_paragraphs,
            validation_paragraphs=args.eval_paragraphs,
            seed=args.seed,
            people_per_paragraph=(args.min_people, args.max_people),
            question_kinds=QUESTION_KINDS if args.architecture == "bert" else FACT_QUESTIONS,
            layout=args.layout,
        )
        files = [("synthetic train set", train_path), ("synthetic eval set", eval_path)]
        train, evaluation = _load_questions(train_path), _load_questions(eval_path)
        name, evaluation_name = f"synthetic QA (hf_oto.synthetic_qa, layout {args.layout})", "evaluation set"
    if args.tune_holdout is not None:
        train, evaluation = split_by_article(train, eval_fraction=args.tune_holdout)
        evaluation_name = f"tuning split ({args.tune_holdout:.0%} of the training articles, held out)"
    if args.max_eval_questions:
        evaluation = evaluation.select(range(min(args.max_eval_questions, len(evaluation))))
    return DemoData(train, evaluation, name, evaluation_name, files)


def _demo_config(vocab_size: int, args: argparse.Namespace):
    """The from-scratch model of the demo: small enough to train in minutes on 2 CPU cores.

    ``llama`` (the default) reads left to right with rotary positions: "the name k words back" is the same
    rotation everywhere, and pre-norm layers train fast from scratch. ``bert`` is bidirectional with learned
    absolute positions."""
    from transformers import BertConfig, LlamaConfig

    shape = dict(
        vocab_size=vocab_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        intermediate_size=4 * args.hidden_size,
        max_position_embeddings=max(128, args.max_seq_length),
    )
    if args.architecture == "llama":
        return LlamaConfig(
            **shape,
            num_key_value_heads=args.num_heads,
            head_dim=args.head_dim or args.hidden_size // args.num_heads,
            rope_parameters={"rope_type": "default", "rope_theta": args.rope_theta},
            tie_word_embeddings=False,
        )
    return BertConfig(**shape, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _demo_model(args: argparse.Namespace, train_questions) -> tuple[Any, Any, str]:
    """(model, tokenizer, display name): the `--model` folder, or a WordPiece tokenizer and a BERT from scratch."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from .synthetic_qa import build_wordpiece_tokenizer

    if args.model is not None:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForQuestionAnswering.from_pretrained(args.model)
        return model, tokenizer, args.model  # as typed: a package folder is often just ".../model"
    texts = [*train_questions["context"], *train_questions["question"]]
    tokenizer = build_wordpiece_tokenizer(
        dict.fromkeys(texts), vocab_size=args.vocab_size, token_type_ids=args.architecture == "bert"
    )
    model = AutoModelForQuestionAnswering.from_config(_demo_config(len(tokenizer), args))
    if args.architecture == "bert" and args.position_init == "sinusoidal":
        _sinusoidal_positions(model.base_model.embeddings.position_embeddings.weight, model.config.initializer_range)
    return model, tokenizer, f"{'LLaMA' if args.architecture == 'llama' else 'BERT'} from scratch"


def _sinusoidal_positions(weight, std: float) -> None:
    """Start learned position embeddings at the sinusoids of "Attention is all you need", scaled to `std`.

    An offset between two positions is then a fixed rotation of their embeddings, so "the token k places
    before" is one linear map that attention learns early, instead of one pattern per absolute position."""
    import math

    import torch

    positions, width = weight.shape
    angles = torch.arange(positions)[:, None] * torch.exp(torch.arange(0, width, 2) * (-math.log(10000.0) / width))
    table = torch.zeros(positions, width)
    table[:, 0::2], table[:, 1::2] = torch.sin(angles), torch.cos(angles)
    with torch.no_grad():
        weight.copy_(table * (std / table.std()))


def _window(args: argparse.Namespace, tokenizer) -> dict[str, Any]:
    return {"tokenizer": tokenizer, "max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride}


def _train(args: argparse.Namespace, out: str, model, tokenizer, train_questions):
    """Train and compress in one run: `OTOTrainer` with the demo's settings. Returns the trainer."""
    import transformers

    from .qa import prepare_train_features
    from .trainer import OTOTrainer, OTOTrainingArguments

    features = train_questions.map(
        prepare_train_features,
        batched=True,
        remove_columns=train_questions.column_names,
        fn_kwargs={**_window(args, tokenizer), "pad_to_max_length": False},
    )
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
        train_dataset=features,
        processing_class=tokenizer,
        data_collator=transformers.DataCollatorWithPadding(tokenizer),
    )
    trainer.train()
    return trainer


def _save_and_reload(trainer, slim_dir: str) -> tuple[Any, Any, SlimReport]:
    """Save the slim model, reload it as a user would, and account dense vs slim from the two models."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from .slim import SlimReport, model_shape

    trainer.save_model(slim_dir)
    slim = AutoModelForQuestionAnswering.from_pretrained(slim_dir, trust_remote_code=True)
    seq_len = trainer.args.oto_flops_seq_len
    report = SlimReport(seq_len, dense=model_shape(trainer.model, seq_len), slim=model_shape(slim, seq_len))
    return slim, AutoTokenizer.from_pretrained(slim_dir), report


def _score_and_time(args: argparse.Namespace, data: DemoData, dense, slim, tokenizer) -> DemoScores:
    """EM/F1 of both models on the evaluation questions, and their median latency on one batch."""
    import torch

    from .metrics import load_squad_metric
    from .qa import evaluate_squad, prepare_eval_features

    options = {"max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride, "metric": load_squad_metric()}
    dense_scores, _ = evaluate_squad(dense, tokenizer, data.evaluation, **options)
    slim_scores, _ = evaluate_squad(slim, tokenizer, data.evaluation, **options)
    questions = data.evaluation.select(range(min(args.latency_batch, len(data.evaluation))))
    features = questions.map(
        prepare_eval_features,
        batched=True,
        remove_columns=questions.column_names,
        fn_kwargs=_window(args, tokenizer),
    )
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in features.column_names]
    batch = {n: torch.tensor(features[n][: args.latency_batch]) for n in names}
    dense_ms, slim_ms = _median_latency_ms([dense, slim], batch, args.latency_rounds)
    return DemoScores(
        dense={**dense_scores, "latency_ms": dense_ms},
        slim={**slim_scores, "latency_ms": slim_ms},
        latency_batch=tuple(batch["input_ids"].shape),
    )


def answer_example(args: argparse.Namespace, slim, tokenizer, example: dict[str, Any]) -> dict[str, Any]:
    """The answer of `pipeline("question-answering")` on the reloaded slim model to one question."""
    import transformers

    qa = transformers.pipeline("question-answering", model=slim, tokenizer=tokenizer)
    return qa(
        question=example["question"],
        context=example["context"],
        max_seq_len=args.max_seq_length,
        doc_stride=args.doc_stride,
    )


def _row(label: str, dense: str, slim: str, note: str = "") -> str:
    return f"  {label:<28}{dense:>16}{slim:>16}  {note}"


def format_demo_table(title: str, report: SlimReport, scores: DemoScores, rounds: int) -> list[str]:
    """The dense-vs-slim rows the demo prints: size, FLOPs, latency, EM/F1, and heads/neurons kept per layer."""
    d, s = report.dense, report.slim
    dense_ms, slim_ms = scores.dense["latency_ms"], scores.slim["latency_ms"]
    rows, width = scores.latency_batch
    lines = [
        "",
        title,
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
            f"latency, batch {rows}x{width}",
            f"{dense_ms:.1f} ms",
            f"{slim_ms:.1f} ms",
            f"{dense_ms / slim_ms:.2f}x faster (median of {rounds}, interleaved)",
        ),
        _row(
            "exact match",
            f"{scores.dense['exact_match']:.2f}",
            f"{scores.slim['exact_match']:.2f}",
            "dense = group-sparse trained model",
        ),  # fmt: skip
        _row("F1", f"{scores.dense['f1']:.2f}", f"{scores.slim['f1']:.2f}", "slim = reloaded from disk"),
        "",
        "  layer   heads kept   ffn neurons kept",
    ]
    for index, (h, hd, f, fd) in enumerate(zip(s.heads, d.heads, s.ffn, d.ffn)):
        lines.append(f"  {index:>5}   {h:>4}/{hd:<6}  {f:>6}/{fd}")
    lines.append(f"  total   {sum(s.heads):>4}/{sum(d.heads):<6}  {sum(s.ffn):>6}/{sum(d.ffn)}")
    return lines


def format_example(example: dict[str, Any], answer: dict[str, Any], sparse_answer: dict[str, Any]) -> list[str]:
    """The question, its context, and the answers of the slim and the group-sparse models next to the reference."""
    context = example["context"]
    reference = example["answers"]["text"][0]
    verdict = "correct" if answer["answer"].strip() == reference else "WRONG"
    return [
        "",
        "  The first question of the evaluation set (not chosen; correct/WRONG is computed against the reference):",
        f"  Q: {example['question']}",
        f"  context: {context[:200]}{'...' if len(context) > 200 else ''}",
        f"  slim model's answer: {answer['answer']!r} (score {answer['score']:.2f}); reference: {reference!r}"
        f" ({verdict})",
        f"  group-sparse model's answer: {sparse_answer['answer']!r} (score {sparse_answer['score']:.2f})",
    ]


def demo_command(args: argparse.Namespace) -> int:
    """`hf-oto demo`: data, model, training with OTO, slim save and reload, scoring, one answered question."""
    _validate_demo_args(args)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    out = os.path.abspath(args.output_dir)

    def step(number: int, text: str) -> None:
        print(f"[{number}/6] {text} ({time.perf_counter() - started:.0f}s)", flush=True)

    threads = _quiet_heavy_imports(args)
    step(1, f"reading {args.data}" if args.data else "generating the synthetic QA set")
    data = _demo_data(args, out)
    print(
        f"      {len(data.train)} training and {len(data.evaluation)} {data.evaluation_name} questions from {data.name}"
    )
    step(
        2, f"loading {args.model}" if args.model else f"building a WordPiece tokenizer and a small {args.architecture}"
    )
    model, tokenizer, model_name = _demo_model(args, data.train)
    step(3, f"training {model_name} with OTOTrainer (target group sparsity {args.target_sparsity}, {threads} threads)")
    trainer = _train(args, out, model, tokenizer, data.train)
    slim_dir = os.path.join(out, "slim-model")
    step(4, f"saving the slim model to {slim_dir} and reloading it")
    slim, slim_tokenizer, report = _save_and_reload(trainer, slim_dir)
    step(5, f"scoring both models on {len(data.evaluation)} questions and timing them")
    scores = _score_and_time(args, data, trainer.model, slim, slim_tokenizer)
    step(6, 'answering a question with pipeline("question-answering") on the reloaded slim model')
    example = data.evaluation[0]
    answer = answer_example(args, slim, slim_tokenizer, example)
    sparse_answer = answer_example(args, trainer.model, tokenizer, example)
    title = (
        f"hf-oto demo: {model_name}, {data.name}, {args.max_steps} steps, target group sparsity "
        f"{args.target_sparsity}; scored on the {data.evaluation_name}"
    )
    print(
        "\n".join(
            format_demo_table(title, report, scores, args.latency_rounds)
            + format_example(example, answer, sparse_answer)
        )
    )
    record = {
        "model": model_name,
        "data": data.name,
        "evaluated_on": data.evaluation_name,
        "max_steps": args.max_steps,
        "target_group_sparsity": args.target_sparsity,
        "threads": threads,
        "report": report.to_dict(),
        "dense": scores.dense,
        "slim": scores.slim,
        "example": {
            "question": example["question"],
            "answer": answer["answer"],
            "group_sparse_answer": sparse_answer["answer"],
            "reference": example["answers"]["text"][0],
        },  # fmt: skip
    }
    _write_results(out, [*data.files, ("slim model (Hub format)", slim_dir)], record, started)
    return 0


def _write_results(out: str, files: list[tuple[str, str]], record: dict[str, Any], started: float) -> None:
    """Write ``demo_results.json`` (with the wall time), then list every file the demo wrote."""
    path = os.path.join(out, "demo_results.json")
    with open(path, "w") as handle:
        json.dump({**record, "wall_time_s": time.perf_counter() - started}, handle, indent=2)
    print(f"\nFinished in {time.perf_counter() - started:.0f}s. Wrote:")
    for label, written in [*files, ("results", path)]:
        print(f"  {label:<24}{written}")
    print(f"Inspect the slim model with: hf-oto inspect {os.path.join(out, 'slim-model')}")


def _quiet_heavy_imports(args: argparse.Namespace) -> int:
    """Import torch/transformers/datasets only now (so `inspect` and argument errors stay fast), silence their
    progress output, seed, and set the thread count. Returns the thread count."""
    import datasets
    import torch
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    torch.manual_seed(args.seed)
    threads = choose_thread_count(args.threads)
    torch.set_num_threads(threads)
    return threads


def add_demo_parser(commands) -> argparse.ArgumentParser:
    """The ``demo`` subcommand and its options, on the subparsers of ``hf-oto``."""
    demo = commands.add_parser("demo", help="train and compress a small QA model offline, then compare dense vs slim")
    demo.add_argument("--output_dir", default="hf-oto-demo", help="where data, the slim model and results go")
    demo.add_argument(
        "--model", default=None, help="a local pretrained BERT-family folder instead of BERT from scratch"
    )
    demo.add_argument("--data", default=None, help="a SQuAD v1.1 JSON file instead of the synthetic set")
    demo.add_argument("--max_steps", type=int, default=2000, help="training steps")
    demo.add_argument("--target_sparsity", type=float, default=0.5, help="share of heads and FFN neurons to remove")
    demo.add_argument("--learning_rate", type=float, default=2e-3)
    demo.add_argument("--batch_size", type=int, default=16)
    demo.add_argument("--max_seq_length", type=int, default=128)
    demo.add_argument("--doc_stride", type=int, default=32)
    demo.add_argument(
        "--train_paragraphs", type=int, default=1500, help="synthetic training paragraphs (4 questions each)"
    )
    demo.add_argument(
        "--min_people",
        type=int,
        default=2,
        help="synthetic paragraphs describe at least this many people (not --layout relations: one person)",
    )
    demo.add_argument("--max_people", type=int, default=3, help="... and at most this many")
    demo.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="relations",
        help="synthetic set: one person whose facts differ by relation words (relations); or several people, "
        "one sentence per fact, per person, or one kind of fact per paragraph (see hf_oto.synthetic_qa)",
    )
    demo.add_argument("--eval_paragraphs", type=int, default=100, help="synthetic evaluation paragraphs")
    demo.add_argument("--max_eval_questions", type=int, default=None, help="score on at most this many questions")
    demo.add_argument("--vocab_size", type=int, default=2000, help="WordPiece vocabulary when training from scratch")
    demo.add_argument(
        "--architecture", choices=("llama", "bert"), default="llama", help="the from-scratch model's family"
    )
    demo.add_argument("--hidden_size", type=int, default=64, help="from-scratch model: hidden size (FFN is 4x)")
    demo.add_argument("--num_layers", type=int, default=3, help="from-scratch model: layers")
    demo.add_argument("--head_dim", type=int, default=None, help="from-scratch LLaMA: head size (hidden/heads)")
    demo.add_argument("--rope_theta", type=float, default=10000.0, help="from-scratch LLaMA: rotary base")
    demo.add_argument("--num_heads", type=int, default=4, help="from-scratch model: attention heads per layer")
    demo.add_argument(
        "--position_init",
        choices=("sinusoidal", "random"),
        default="sinusoidal",
        help="from-scratch BERT: start position embeddings at sinusoids or at random",
    )
    demo.add_argument("--latency_batch", type=int, default=32)
    demo.add_argument("--latency_rounds", type=int, default=20)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: the idle physical cores, at least 1)"
    )
    demo.add_argument(
        "--tune_holdout",
        type=float,
        default=None,
        help="score on this share of the training articles, held out, instead of the evaluation set "
        "(to choose settings without looking at it)",
    )
    demo.set_defaults(handler=demo_command)
    return demo
