"""bench/squad_paired.py: per-question F1 that averages to the official metric, and a paired bootstrap whose
standard error and interval behave as they must (zero for a constant shift, ≈ σ/√n for noise)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import transformers
from conftest import load_script, tiny_model

from hf_oto.qa import evaluate_squad, load_squad_json
from hf_oto.synthetic_qa import write_squad_splits

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "squad_paired.py"


@pytest.fixture(scope="module")
def paired():
    return load_script(SCRIPT)


def test_bootstrap_of_a_constant_shift_has_no_spread(paired):
    base = np.random.default_rng(0).uniform(0, 100, 500)
    se, low, high = paired.paired_bootstrap(base, base + 2.5, resamples=2000, seed=0)
    assert se == pytest.approx(0, abs=1e-9) and low == pytest.approx(2.5) and high == pytest.approx(2.5)


def test_bootstrap_standard_error_matches_sigma_over_root_n(paired):
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 100, 900)
    other = base + rng.normal(-1.0, 30.0, 900)
    difference = other - base
    se, low, high = paired.paired_bootstrap(base, other, resamples=4000, seed=0)
    assert se == pytest.approx(difference.std() / np.sqrt(900), rel=0.1)
    assert low < difference.mean() < high and high - low == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_scores_two_saved_models_on_the_same_questions(
    paired, tmp_path, tiny_tokenizer, one_thread, monkeypatch, capsys
):
    """The baseline's F1 is the official metric's; a model against itself differs by exactly 0 (SE 0)."""
    write_squad_splits(tmp_path / "data", train_paragraphs=4, validation_paragraphs=6)
    folders = []
    for seed in (0, 1):
        model = tiny_model("bert", transformers.BertForQuestionAnswering, seed=seed)
        folder = tmp_path / f"model{seed}"
        model.save_pretrained(folder), tiny_tokenizer.save_pretrained(folder)
        folders.append(str(folder))
    examples = load_squad_json(str(tmp_path / "data" / "validation.json"))
    official = [
        evaluate_squad(transformers.BertForQuestionAnswering.from_pretrained(f), tiny_tokenizer, examples,
                       max_seq_length=64, doc_stride=32)[0]["f1"]
        for f in folders
    ]  # fmt: skip
    argv = [*folders, folders[0], "--data_dir", str(tmp_path / "data"), "--max_seq_length", "64", "--doc_stride", "32"]
    monkeypatch.setattr(sys, "argv", ["squad_paired.py", *argv])
    paired.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"validation.json (article-disjoint split): {len(examples)} questions")
    numbers = [[float(x) for x in re.findall(r"[-+]?\d+\.\d+", line.split(" ", 1)[1])] for line in lines[2:5]]
    assert numbers[0] == [pytest.approx(official[0], abs=0.005)]
    f1, delta, se, low, high = numbers[1][:5]
    assert f1 == pytest.approx(official[1], abs=0.005) and delta == pytest.approx(official[1] - official[0], abs=0.01)
    assert low <= delta <= high and se >= 0
    assert numbers[2][:5] == [pytest.approx(official[0], abs=0.005), 0.0, 0.0, 0.0, 0.0]
    assert lines[4].endswith("0.0%")


def test_refuses_a_folder_without_a_model(paired, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["squad_paired.py", str(tmp_path), str(tmp_path)])
    with pytest.raises(SystemExit):
        paired.main()
