"""Offline `evaluate` metric modules shipped with hf_oto, loaded by file path.

`evaluate.load("squad")` and `evaluate.load("accuracy")` need the Hub. These modules compute the same
numbers from files inside the package, so examples, the demo and benchmarks score offline.
"""

from __future__ import annotations

import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def squad_metric_path() -> str:
    """Path of the SQuAD v1.1 metric module (pass it to `evaluate.load`)."""
    return os.path.join(_HERE, "squad_v1.py")


def accuracy_f1_metric_path() -> str:
    """Path of the accuracy + F1 classification metric module (pass it to `evaluate.load`)."""
    return os.path.join(_HERE, "accuracy_f1.py")


def load_squad_metric(**kwargs):
    """`evaluate.load` of the SQuAD v1.1 metric: official exact match and F1, in percent."""
    import evaluate

    return evaluate.load(squad_metric_path(), **kwargs)


def load_accuracy_f1_metric(**kwargs):
    """`evaluate.load` of the accuracy + F1 metric for classification."""
    import evaluate

    return evaluate.load(accuracy_f1_metric_path(), **kwargs)


__all__ = ["accuracy_f1_metric_path", "load_accuracy_f1_metric", "load_squad_metric", "squad_metric_path"]
