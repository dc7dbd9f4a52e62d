"""SQuAD utilities: flattening, local JSON loading, window tokenization and answer post-processing."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
import numpy as np
import pytest

from hf_oto.metrics import load_squad_metric
from hf_oto.qa import (
    flatten_squad,
    format_predictions,
    load_squad_json,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
    split_by_article,
    squad_references,
)
from hf_oto.synthetic_qa import build_wordpiece_tokenizer, generate_squad, squad_texts

MAX_LEN, STRIDE = 40, 12


@pytest.fixture(scope="module")
def squad():
    return generate_squad(12, seed=3)


@pytest.fixture(scope="module")
def tokenizer():
    return build_wordpiece_tokenizer(squad_texts(generate_squad(60, seed=0)), vocab_size=600)


@pytest.fixture(scope="module")
def examples(tmp_path_factory, squad):
    path = tmp_path_factory.mktemp("squad") / "dev.json"
    path.write_text(json.dumps(squad))
    return load_squad_json(str(path))


def test_flatten_one_row_per_question(squad):
    columns = flatten_squad(squad["data"])
    questions = [qa for a in squad["data"] for p in a["paragraphs"] for qa in p["qas"]]
    assert len(columns["id"]) == len(questions) == 12 * 4
    assert columns["question"][5] == questions[5]["question"]
    first = squad["data"][0]["paragraphs"][0]
    assert columns["context"][0] == first["context"]
    assert columns["answers"][0] == {
        "text": [first["qas"][0]["answers"][0]["text"]],
        "answer_start": [first["qas"][0]["answers"][0]["answer_start"]],
    }


def test_load_squad_json_matches_flatten(examples, squad):
    assert set(examples.column_names) == {"id", "title", "context", "question", "answers"}
    assert examples["id"] == flatten_squad(squad["data"])["id"]
    assert examples[7]["answers"] == flatten_squad(squad["data"])["answers"][7]


def test_split_by_article_holds_out_whole_last_articles():
    titles = ["a"] * 3 + ["b"] * 2 + ["c"] * 4 + ["d"] * 1
    questions = datasets.Dataset.from_dict({"title": titles, "id": [str(i) for i in range(len(titles))]})
    train, held_out = split_by_article(questions, eval_fraction=0.5)  # 2 of the 4 articles
    assert train["id"] == ["0", "1", "2", "3", "4"] and set(train["title"]) == {"a", "b"}
    assert held_out["id"] == ["5", "6", "7", "8", "9"] and set(held_out["title"]) == {"c", "d"}
    train, held_out = split_by_article(questions, eval_fraction=0.1)  # rounds to 0 articles: still holds out one
    assert set(held_out["title"]) == {"d"} and len(train) == 9
    one_article = datasets.Dataset.from_dict({"title": ["a"] * 10, "id": [str(i) for i in range(10)]})
    train, held_out = split_by_article(one_article, eval_fraction=0.2)  # falls back to the last questions
    assert train["id"] == [str(i) for i in range(8)] and held_out["id"] == ["8", "9"]
    with pytest.raises(ValueError, match="eval_fraction"):
        split_by_article(questions, eval_fraction=1.0)


def test_load_squad_json_bad_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_squad_json(str(tmp_path / "missing.json"))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"data": [{"text": "not squad"}]}))
    with pytest.raises(ValueError, match="not SQuAD"):
        load_squad_json(str(wrong))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{ this is not json")
    with pytest.raises(ValueError, match="could not read"):
        load_squad_json(str(garbage))


def _train_features(examples, tokenizer):
    return examples.map(
        prepare_train_features,
        batched=True,
        remove_columns=examples.column_names,
        fn_kwargs={"tokenizer": tokenizer, "max_seq_length": MAX_LEN, "doc_stride": STRIDE},
    )


def _eval_features(examples, tokenizer):
    return examples.map(
        prepare_eval_features,
        batched=True,
        remove_columns=examples.column_names,
        fn_kwargs={"tokenizer": tokenizer, "max_seq_length": MAX_LEN, "doc_stride": STRIDE},
    )


def _window_to_example(examples, tokenizer):
    encoded = tokenizer(
        list(examples["question"]),
        list(examples["context"]),
        truncation="only_second",
        max_length=MAX_LEN,
        stride=STRIDE,
        return_overflowing_tokens=True,
    )
    return encoded["overflow_to_sample_mapping"]


def test_train_features_point_at_the_answer(examples, tokenizer):
    features = _train_features(examples, tokenizer)
    assert len(features) > len(examples)  # long contexts are split into overlapping windows
    assert all(len(ids) == MAX_LEN for ids in features["input_ids"])
    mapping = _window_to_example(examples, tokenizer)
    answered = set()
    for i, row in enumerate(features):
        start, end = row["start_positions"], row["end_positions"]
        if start == 0:
            assert end == 0  # answer not inside this window: both point at [CLS]
            continue
        example = examples[mapping[i]]
        decoded = tokenizer.decode(row["input_ids"][start : end + 1])
        assert decoded == example["answers"]["text"][0].lower()
        answered.add(mapping[i])
    assert answered == set(range(len(examples)))  # every answer fits in some window


def test_postprocess_recovers_answers_from_oracle_logits(examples, tokenizer):
    train = _train_features(examples, tokenizer)
    features = _eval_features(examples, tokenizer)
    assert features["example_id"] == [examples["id"][m] for m in _window_to_example(examples, tokenizer)]
    start = np.full((len(features), MAX_LEN), -5.0)
    end = np.full((len(features), MAX_LEN), -5.0)
    for i, row in enumerate(train):
        if row["start_positions"]:
            start[i, row["start_positions"]] = 5.0
            end[i, row["end_positions"]] = 5.0
    predictions, nbest = postprocess_qa_predictions(examples, features, start, end, n_best_size=5, return_nbest=True)
    scores = load_squad_metric().compute(
        predictions=format_predictions(predictions), references=squad_references(examples)
    )
    assert scores == {"exact_match": 100.0, "f1": 100.0}
    first = nbest[examples["id"][0]]
    assert len(first) <= 5 and first[0]["score"] >= first[-1]["score"]
    assert sum(c["probability"] for c in first) == pytest.approx(1.0)


def test_postprocess_respects_constraints(examples, tokenizer):
    features = _eval_features(examples, tokenizer).select([0])
    example = examples.select([0])
    offsets = features[0]["offset_mapping"]
    context_tokens = [k for k, o in enumerate(offsets) if o is not None]
    start = np.full((1, MAX_LEN), -100.0)
    end = np.full((1, MAX_LEN), -100.0)
    start[0, 1], end[0, 2] = 100.0, 100.0  # best pair lies in the question: must be ignored
    first, last = context_tokens[2], context_tokens[2] + 6
    start[0, first], end[0, last] = 10.0, 10.0  # a 7-token span in the context: the answer
    start[0, last + 1], end[0, first - 1] = 30.0, 30.0  # a reversed span: must be ignored
    text = postprocess_qa_predictions(example, features, start, end, max_answer_length=10)[example[0]["id"]]
    context = example[0]["context"]
    assert text == context[offsets[first][0] : offsets[last][1]]
    short = postprocess_qa_predictions(example, features, start, end, max_answer_length=3)[example[0]["id"]]
    assert short != text and len(tokenizer.tokenize(short)) <= 3
