"""Extractive question answering in the SQuAD v1.1 style: data loading, tokenization, answer decoding, scoring.

Shared by `examples/run_squad.py`, `hf-oto demo` and the benchmarks, so that all of them read data,
cut long contexts into windows, and turn start/end logits into answer strings the same way. The recipe is
the one of transformers' `examples/pytorch/question-answering/run_qa.py`:

1. `load_squad_json` reads nested SQuAD v1.1 JSON offline and flattens it to one row per question
   (``id, title, context, question, answers={"text": [...], "answer_start": [...]}``).
2. `prepare_train_features` tokenizes question + context into windows of `max_seq_length` tokens that
   overlap by `doc_stride`; each window gets the token positions of the answer, or the [CLS] position when
   the answer is not inside it.
3. `prepare_eval_features` does the same windowing and keeps, per window, the example id and the offset
   mapping of the context tokens.
4. `postprocess_qa_predictions` scores every (start, end) pair among the `n_best_size` best starts and ends
   of every window, drops spans that are reversed, longer than `max_answer_length` or outside the context,
   and keeps the best span text per question.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from datasets import Dataset


def flatten_squad(articles: Iterable[dict[str, Any]]) -> dict[str, list]:
    """Columns of one row per question from SQuAD v1.1 articles (``{"title", "paragraphs": [...]}``)."""
    columns: dict[str, list] = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                columns["id"].append(str(qa["id"]))
                columns["title"].append(article.get("title", ""))
                columns["context"].append(paragraph["context"])
                columns["question"].append(qa["question"])
                columns["answers"].append(
                    {
                        "text": [answer["text"] for answer in qa.get("answers", [])],
                        "answer_start": [int(answer["answer_start"]) for answer in qa.get("answers", [])],
                    }
                )
    return columns


def _flatten_batch(batch: dict[str, list]) -> dict[str, list]:
    articles = [{"title": t, "paragraphs": p} for t, p in zip(batch["title"], batch["paragraphs"])]
    return flatten_squad(articles)


def load_squad_json(data_files: str | Sequence[str] | dict[str, Any]):
    """Local SQuAD v1.1 JSON file(s) as a flat `datasets.Dataset` (or `DatasetDict` when given a dict of splits).

    Reads with ``datasets.load_dataset("json", data_files=..., field="data")``, which works offline, then
    flattens articles → paragraphs → questions. Raises `ValueError` naming the file when it is missing or
    is not SQuAD v1.1 JSON.
    """
    import datasets

    paths = data_files.values() if isinstance(data_files, dict) else [data_files]
    for entry in paths:
        for path in [entry] if isinstance(entry, (str, os.PathLike)) else entry:
            if not os.path.isfile(path):
                raise ValueError(f"data file {path} does not exist")
    try:
        raw = datasets.load_dataset("json", data_files=data_files, field="data")
    except Exception as error:
        raise ValueError(f"could not read {data_files} as SQuAD v1.1 JSON (a top-level 'data' list): {error}") from None
    for split in raw.values():
        if not {"title", "paragraphs"} <= set(split.column_names):
            raise ValueError(
                f"{data_files} is not SQuAD v1.1 JSON: its 'data' entries have columns {split.column_names}, "
                "expected 'title' and 'paragraphs'"
            )
    flat = raw.map(_flatten_batch, batched=True, remove_columns=next(iter(raw.values())).column_names)
    if isinstance(data_files, dict):
        return flat
    return flat["train"]


def split_by_article(questions: Dataset, eval_fraction: float = 0.1) -> tuple[Dataset, Dataset]:
    """Split flattened questions into (train, held-out) datasets by whole articles (titles), last ones held out.

    No paragraph is shared between the two, as in the article-disjoint SQuAD split. With a single article,
    the split falls back to the last `eval_fraction` of the questions.
    """
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction={eval_fraction!r} must be in (0, 1): the share of articles to hold out.")
    row_titles = questions["title"]  # one read: each column access copies the whole column out of Arrow
    titles = list(dict.fromkeys(row_titles))
    if len(titles) < 2:
        cut = max(1, int(len(questions) * (1 - eval_fraction)))
        return questions.select(range(cut)), questions.select(range(cut, len(questions)))
    held_out = set(titles[-max(1, round(len(titles) * eval_fraction)) :])
    train = [i for i, t in enumerate(row_titles) if t not in held_out]
    evaluation = [i for i, t in enumerate(row_titles) if t in held_out]
    return questions.select(train), questions.select(evaluation)


def _pad_on_right(tokenizer) -> bool:
    return getattr(tokenizer, "padding_side", "right") == "right"


def _tokenize_windows(examples: dict[str, list], tokenizer, max_seq_length: int, doc_stride: int, pad: bool):
    pad_on_right = _pad_on_right(tokenizer)
    questions = [q.lstrip() for q in examples["question"]]
    max_length = min(max_seq_length, tokenizer.model_max_length)
    if doc_stride >= max_length:
        raise ValueError(f"doc_stride ({doc_stride}) must be smaller than max_seq_length ({max_length})")
    return tokenizer(
        questions if pad_on_right else examples["context"],
        examples["context"] if pad_on_right else questions,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length" if pad else False,
    )


def prepare_train_features(
    examples: dict[str, list],
    tokenizer,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    pad_to_max_length: bool = True,
) -> dict[str, list]:
    """Tokenized training windows with `start_positions`/`end_positions` (the [CLS] index when the answer is cut off).

    Use with ``dataset.map(prepare_train_features, batched=True, remove_columns=dataset.column_names,
    fn_kwargs={...})``. Needs a fast tokenizer (offset mappings).
    """
    pad_on_right = _pad_on_right(tokenizer)
    tokenized = _tokenize_windows(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    offset_mapping = tokenized.pop("offset_mapping")
    context_index = 1 if pad_on_right else 0
    starts, ends = [], []
    for i, offsets in enumerate(offset_mapping):
        input_ids = tokenized["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
        sequence_ids = tokenized.sequence_ids(i)
        answers = examples["answers"][sample_mapping[i]]
        if len(answers["answer_start"]) == 0:
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        token_start = 0
        while sequence_ids[token_start] != context_index:
            token_start += 1
        token_end = len(input_ids) - 1
        while sequence_ids[token_end] != context_index:
            token_end -= 1
        if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        context_end = token_end  # never walk past the context: [SEP] and padding have offsets (0, 0)
        while token_start <= context_end and offsets[token_start][0] <= start_char:
            token_start += 1
        starts.append(token_start - 1)
        while offsets[token_end][1] >= end_char:
            token_end -= 1
        ends.append(token_end + 1)
    tokenized["start_positions"] = starts
    tokenized["end_positions"] = ends
    return tokenized


def prepare_eval_features(
    examples: dict[str, list],
    tokenizer,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    pad_to_max_length: bool = True,
) -> dict[str, list]:
    """Tokenized evaluation windows with `example_id` and an `offset_mapping` that is None outside the context."""
    pad_on_right = _pad_on_right(tokenizer)
    tokenized = _tokenize_windows(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    context_index = 1 if pad_on_right else 0
    tokenized["example_id"] = []
    for i in range(len(tokenized["input_ids"])):
        sequence_ids = tokenized.sequence_ids(i)
        tokenized["example_id"].append(examples["id"][sample_mapping[i]])
        tokenized["offset_mapping"][i] = [
            tuple(offset) if sequence_ids[k] == context_index else None
            for k, offset in enumerate(tokenized["offset_mapping"][i])
        ]
    return tokenized


def postprocess_qa_predictions(
    examples,
    features,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    return_nbest: bool = False,
):
    """Best answer text per question id from window-level start/end logits (the standard SQuAD v1.1 recipe).

    Args:
        examples: the flat questions (with ``id`` and ``context``).
        features: their evaluation windows from `prepare_eval_features` (with ``example_id``, ``offset_mapping``).
        start_logits, end_logits: arrays of shape (num_windows, seq_len).
        n_best_size: how many top start and end positions of each window are paired.
        max_answer_length: longest answer, in tokens.
        return_nbest: also return, per id, the `n_best_size` best candidates with text, score and probability.

    Returns:
        ``{id: answer text}``, or ``(that, {id: [candidates]})`` with `return_nbest`.
    """
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    if len(features["example_id"]) != len(start_logits):
        raise ValueError(f"got {len(start_logits)} logit rows for {len(features['example_id'])} features")
    features_per_example = collections.defaultdict(list)
    for index, example_id in enumerate(features["example_id"]):
        features_per_example[example_id].append(index)
    offset_mappings = features["offset_mapping"]

    predictions: dict[str, str] = {}
    all_nbest: dict[str, list] = {}
    for example in examples:
        context = example["context"]
        candidates = []
        for feature_index in features_per_example[example["id"]]:
            starts, ends = start_logits[feature_index], end_logits[feature_index]
            offsets = offset_mappings[feature_index]
            for start in np.argsort(starts)[-1 : -n_best_size - 1 : -1].tolist():
                for end in np.argsort(ends)[-1 : -n_best_size - 1 : -1].tolist():
                    if start >= len(offsets) or end >= len(offsets) or offsets[start] is None or offsets[end] is None:
                        continue
                    if end < start or end - start + 1 > max_answer_length:
                        continue
                    char_start, char_end = offsets[start][0], offsets[end][1]
                    candidates.append(
                        {
                            "score": float(starts[start] + ends[end]),
                            "text": context[char_start:char_end],
                            "offsets": (char_start, char_end),
                        }
                    )
        candidates = sorted(candidates, key=lambda c: c["score"], reverse=True)[:n_best_size]
        if not candidates:
            candidates = [{"score": 0.0, "text": "", "offsets": (0, 0)}]
        scores = np.array([c["score"] for c in candidates])
        probabilities = np.exp(scores - scores.max())
        probabilities /= probabilities.sum()
        for candidate, probability in zip(candidates, probabilities):
            candidate["probability"] = float(probability)
        predictions[example["id"]] = candidates[0]["text"]
        all_nbest[example["id"]] = candidates
    return (predictions, all_nbest) if return_nbest else predictions


def squad_references(examples) -> list[dict[str, Any]]:
    """References in the format of the SQuAD metric: ``[{"id", "answers": {"text", "answer_start"}}]``."""
    return [{"id": example["id"], "answers": example["answers"]} for example in examples]


def format_predictions(predictions: dict[str, str]) -> list[dict[str, str]]:
    """``{id: text}`` as the SQuAD metric's predictions: ``[{"id", "prediction_text"}]``."""
    return [{"id": key, "prediction_text": text} for key, text in predictions.items()]


@torch.no_grad()
def predict_logits(model, features, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Start and end logits of `model` over evaluation windows, in batches, in eval mode (no Trainer needed)."""
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in features.column_names]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    starts, ends = [], []
    try:
        for begin in range(0, len(features), batch_size):
            batch = features[begin : begin + batch_size]
            inputs = {name: torch.tensor(batch[name], device=device) for name in names}
            output = model(**inputs)
            starts.append(output.start_logits.float().cpu().numpy())
            ends.append(output.end_logits.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(starts), np.concatenate(ends)


@torch.no_grad()
def answer_question(
    model,
    tokenizer,
    question: str,
    context: str,
    *,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    n_best_size: int = 20,
    max_answer_length: int = 30,
) -> dict[str, Any]:
    """Answer one question from one context: ``{"answer", "score", "start", "end"}`` (character offsets).

    transformers 5 removed ``pipeline("question-answering")``; this is its extractive recipe in one call,
    with the same windowing and decoding as the evaluation above, for any ``*ForQuestionAnswering`` model.
    """
    examples = {"id": ["q"], "question": [question], "context": [context]}
    features = prepare_eval_features(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length=False)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in features]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        starts, ends = [], []
        for i in range(len(features["input_ids"])):
            output = model(**{n: torch.tensor([features[n][i]], device=device) for n in names})
            starts.append(output.start_logits[0].float().cpu().numpy())
            ends.append(output.end_logits[0].float().cpu().numpy())
    finally:
        model.train(was_training)
    width = max(len(row) for row in starts)
    start_logits = np.stack([np.pad(r, (0, width - len(r)), constant_values=-1e4) for r in starts])
    end_logits = np.stack([np.pad(r, (0, width - len(r)), constant_values=-1e4) for r in ends])
    _, nbest = postprocess_qa_predictions(
        [{"id": "q", "context": context}],
        features,
        start_logits,
        end_logits,
        n_best_size=n_best_size,
        max_answer_length=max_answer_length,
        return_nbest=True,
    )
    best = nbest["q"][0]
    return {
        "answer": best["text"],
        "score": best["probability"],
        "start": best["offsets"][0],
        "end": best["offsets"][1],
    }


def evaluate_squad(
    model,
    tokenizer,
    examples,
    *,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    batch_size: int = 64,
    metric=None,
) -> tuple[dict[str, float], dict[str, str]]:
    """Exact match and F1 (percent) of `model` on flat SQuAD `examples`, and its predictions ``{id: text}``.

    `metric` defaults to the official SQuAD v1.1 metric shipped in `hf_oto.metrics`.
    """
    if metric is None:
        from .metrics import load_squad_metric

        metric = load_squad_metric()
    features = examples.map(
        prepare_eval_features,
        batched=True,
        remove_columns=examples.column_names,
        fn_kwargs={"tokenizer": tokenizer, "max_seq_length": max_seq_length, "doc_stride": doc_stride},
    )
    start_logits, end_logits = predict_logits(model, features, batch_size)
    predictions = postprocess_qa_predictions(
        examples, features, start_logits, end_logits, n_best_size=n_best_size, max_answer_length=max_answer_length
    )
    scores = metric.compute(predictions=format_predictions(predictions), references=squad_references(examples))
    return {key: float(value) for key, value in scores.items()}, predictions


__all__ = [
    "answer_question",
    "evaluate_squad",
    "flatten_squad",
    "format_predictions",
    "load_squad_json",
    "postprocess_qa_predictions",
    "predict_logits",
    "prepare_eval_features",
    "prepare_train_features",
    "squad_references",
]
