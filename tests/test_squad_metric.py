"""The offline SQuAD v1.1 and accuracy/F1 metric modules, on hand-computed cases, loaded through `evaluate.load`."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from hf_oto.metrics import load_accuracy_f1_metric, load_squad_metric
from hf_oto.metrics.accuracy_f1 import accuracy_and_f1
from hf_oto.metrics.squad_v1 import exact_match_score, f1_score, normalize_answer, squad_v1_scores


@pytest.fixture(scope="module")
def squad():
    return load_squad_metric()


def _refs(*answer_lists):
    return [
        {"id": str(i), "answers": {"text": list(texts), "answer_start": [0] * len(texts)}}
        for i, texts in enumerate(answer_lists)
    ]


def _preds(*texts):
    return [{"id": str(i), "prediction_text": text} for i, text in enumerate(texts)]


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("The  Cat!", "cat"),
        ("an apple, a pear", "apple pear"),
        ("Banana Anthem", "banana anthem"),  # articles only as whole words
        ("A.B.", "ab"),  # punctuation is removed before articles, as in the official script
        ("the-end", "theend"),
        ("  Levi's\tStadium \n", "levis stadium"),
    ],
)
def test_normalization_matches_official_order(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_token_f1_by_hand():
    # prediction tokens [cat, sat, on, mat], reference [cat, on, mat]: P = 3/4, R = 1, F1 = 6/7
    assert f1_score("the cat sat on the mat", "Cat on mat.") == pytest.approx(6 / 7)
    assert f1_score("gold", "golden anniversary") == 0.0
    # repeated tokens count with multiplicity: [a-less] "x x y" vs "x y y": common x1 y1 -> P=R=2/3
    assert f1_score("x x y", "x y y") == pytest.approx(2 / 3)


def test_empty_answer_official_quirk():
    # Both normalize to "": exact match counts, F1 does not (official script behaviour).
    assert exact_match_score("", "the") == 1.0
    assert f1_score("", "the") == 0.0


def test_metric_module_max_over_references_and_percentages(squad):
    predictions = _preds("Denver Broncos", "Santa Clara, California", "gold")
    references = _refs(
        ["Denver Broncos", "The Denver Broncos"], ["Santa Clara", "Levi's Stadium"], ["golden anniversary"]
    )
    scores = squad.compute(predictions=predictions, references=references)
    # EM: 1 + 0 + 0 of 3; F1: 1 + 0.8 (P = 2/3, R = 1 vs "santa clara") + 0, in percent
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(60.0)


def test_metric_module_best_reference_wins(squad):
    scores = squad.compute(predictions=_preds("the Paris"), references=_refs(["Paris France", "paris"]))
    assert scores == {"exact_match": 100.0, "f1": 100.0}


def test_unanswered_question_scores_zero():
    # evaluate insists on as many predictions as references; the scorer itself follows the official script.
    scores = squad_v1_scores({"0": "One"}, {"0": ["one"], "1": ["two"]})
    assert scores == {"exact_match": 50.0, "f1": 50.0}


def test_accuracy_f1_module_by_hand():
    metric = load_accuracy_f1_metric()
    # tp=2, fp=1, fn=0 for class 1: F1 = 4/5
    assert metric.compute(predictions=[1, 0, 1, 1], references=[1, 0, 0, 1]) == {"accuracy": 0.75, "f1": 0.8}
    # class 0: 2/3, class 1: 2/3, class 2: 0 -> macro 4/9; weighted (2*2/3 + 1*2/3 + 1*0) / 4 = 1/2
    scores = metric.compute(predictions=[1, 0, 2, 1], references=[1, 0, 0, 2], average="macro")
    assert scores["accuracy"] == 0.5
    assert scores["f1"] == pytest.approx(4 / 9)
    assert accuracy_and_f1([1, 0, 2, 1], [1, 0, 0, 2], average="weighted")["f1"] == pytest.approx(0.5)
    assert accuracy_and_f1([1, 0, 2, 1], [1, 0, 0, 2], average="micro")["f1"] == pytest.approx(0.5)
    assert accuracy_and_f1([0, 0], [0, 0])["f1"] == 0.0  # no positive anywhere: zero_division=0
    with pytest.raises(ValueError, match="average"):
        accuracy_and_f1([1], [1], average="samples")
