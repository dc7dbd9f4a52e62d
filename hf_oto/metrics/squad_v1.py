"""SQuAD v1.1 exact match and F1, as computed by the official evaluation script (evaluate-v1.1.py).

This is an `evaluate` metric module that lives inside hf_oto so it loads offline, by path:
``evaluate.load(hf_oto.metrics.squad_metric_path())``. `evaluate.load("squad")` would fetch the same
metric from the Hub, which fails on machines without internet.

Scoring follows the official script exactly:

- answers are normalized: lower-cased, punctuation removed, the articles a/an/the removed, whitespace
  collapsed;
- exact match and token-level F1 are each the maximum over a question's reference answers;
- both are averaged over every reference question (an unanswered question scores 0) and reported as
  percentages.

Inputs use the same format as the Hub's ``squad`` metric, so the two are interchangeable:
predictions ``{"id", "prediction_text"}`` and references ``{"id", "answers": {"text", "answer_start"}}``.

Evaluate's import scanner reads this file line by line: keep one import per line.
"""

import collections
import re
import string

import datasets
import evaluate

_CITATION = """\
@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "Proceedings of the 2016 Conference on Empirical Methods in Natural Language Processing",
    year = "2016",
    pages = "2383--2392",
}
"""

_DESCRIPTION = """\
Exact match and F1 of the official SQuAD v1.1 evaluation script, for extractive question answering.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str}.
    references: list of {"id": str, "answers": {"text": list[str], "answer_start": list[int]}}.
Returns:
    exact_match: percentage of questions whose normalized prediction equals a normalized reference answer.
    f1: average over questions of the best token-level F1 against the reference answers, in percent.
Examples:
    >>> metric = evaluate.load(hf_oto.metrics.squad_metric_path())
    >>> metric.compute(predictions=[{"id": "1", "prediction_text": "the Eiffel Tower"}],
    ...                references=[{"id": "1", "answers": {"text": ["Eiffel Tower"], "answer_start": [0]}}])
    {'exact_match': 100.0, 'f1': 100.0}
"""

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace (official order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-level F1 between two answers after normalization (0 when they share no token)."""
    prediction_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 when the two answers are equal after normalization, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def max_over_ground_truths(metric_fn, prediction: str, ground_truths: list) -> float:
    """The best score of `prediction` against any of the reference answers."""
    return max(metric_fn(prediction, truth) for truth in ground_truths)


def question_scores(predictions: dict, references: dict) -> dict[str, tuple[float, float]]:
    """Per question answered, {id: (EM, F1)} in [0, 1] of `predictions` ({id: text}) against `references`
    ({id: [answer texts]}), each the best over the reference answers."""
    return {
        question_id: (
            max_over_ground_truths(exact_match_score, predictions[question_id], ground_truths),
            max_over_ground_truths(f1_score, predictions[question_id], ground_truths),
        )
        for question_id, ground_truths in references.items()
        if question_id in predictions
    }


def squad_v1_scores(predictions: dict, references: dict) -> dict:
    """EM and F1 (percent) of `predictions` ({id: text}) against `references` ({id: [answer texts]}); an
    unanswered question counts as 0."""
    scores = question_scores(predictions, references).values()
    total = max(len(references), 1)
    return {
        "exact_match": 100.0 * sum(em for em, _ in scores) / total,
        "f1": 100.0 * sum(f1 for _, f1 in scores) / total,
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SquadV1(evaluate.Metric):
    """The official SQuAD v1.1 exact match and F1, as an `evaluate` metric."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.features.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
            codebase_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references):
        prediction_texts = {p["id"]: p["prediction_text"] for p in predictions}
        reference_texts = {r["id"]: list(r["answers"]["text"]) for r in references}
        return squad_v1_scores(prediction_texts, reference_texts)
