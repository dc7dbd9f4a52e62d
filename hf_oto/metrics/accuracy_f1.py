"""Accuracy and F1 for classification, as an `evaluate` metric module loadable offline by path.

`evaluate.load("accuracy")` and `evaluate.load("f1")` fetch their code from the Hub; this module gives the
same numbers without a network: ``evaluate.load(hf_oto.metrics.accuracy_f1_metric_path())``.

- accuracy: fraction of predictions equal to the reference label;
- f1: for ``average="binary"`` (the default, as in scikit-learn), the F1 of `pos_label`; for ``"macro"``
  the unweighted mean of per-class F1, for ``"weighted"`` the mean weighted by class support, for
  ``"micro"`` the F1 of the pooled counts (equal to accuracy for single-label data). A class that is never
  predicted nor present scores 0, as scikit-learn's ``zero_division=0``.

Evaluate's import scanner reads this file line by line: keep one import per line.
"""

import collections

import datasets
import evaluate

_DESCRIPTION = "Accuracy and F1 (binary, macro, micro or weighted) of integer class predictions."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of int, the predicted labels.
    references: list of int, the true labels.
    average: "binary" (default), "macro", "micro" or "weighted".
    pos_label: the positive class for average="binary" (default 1).
Returns:
    accuracy: float in [0, 1].
    f1: float in [0, 1].
Examples:
    >>> metric = evaluate.load(hf_oto.metrics.accuracy_f1_metric_path())
    >>> metric.compute(predictions=[1, 0, 1, 1], references=[1, 0, 0, 1])
    {'accuracy': 0.75, 'f1': 0.8}
"""

AVERAGES = ("binary", "macro", "micro", "weighted")


def _f1(true_positive: int, false_positive: int, false_negative: int) -> float:
    denominator = 2 * true_positive + false_positive + false_negative
    return 2 * true_positive / denominator if denominator else 0.0


def accuracy_and_f1(predictions: list, references: list, average: str = "binary", pos_label: int = 1) -> dict:
    """Accuracy and F1 of `predictions` against `references` (see the module docstring for `average`)."""
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    pairs = list(zip(predictions, references))
    if not pairs:
        return {"accuracy": 0.0, "f1": 0.0}
    accuracy = sum(p == r for p, r in pairs) / len(pairs)
    true_positive = collections.Counter(r for p, r in pairs if p == r)
    predicted = collections.Counter(p for p, _ in pairs)
    support = collections.Counter(r for _, r in pairs)

    def class_f1(label) -> float:
        tp = true_positive[label]
        return _f1(tp, predicted[label] - tp, support[label] - tp)

    if average == "binary":
        f1 = class_f1(pos_label)
    elif average == "micro":
        tp = sum(true_positive.values())
        f1 = _f1(tp, len(pairs) - tp, len(pairs) - tp)
    else:
        labels = sorted(set(predicted) | set(support))
        scores = [class_f1(label) for label in labels]
        if average == "macro":
            f1 = sum(scores) / len(scores)
        else:
            f1 = sum(score * support[label] for score, label in zip(scores, labels)) / len(pairs)
    return {"accuracy": float(accuracy), "f1": float(f1)}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AccuracyF1(evaluate.Metric):
    """Accuracy and F1 of classification predictions, as an `evaluate` metric."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, average="binary", pos_label=1):
        return accuracy_and_f1(list(predictions), list(references), average=average, pos_label=pos_label)
