"""The ``hf-oto`` command: `inspect` on a real slim folder, one-line errors on bad input, a short demo run."""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import transformers

import hf_oto
from hf_oto.cli import main

ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "HF_OTO_DEBUG": "",
}


def _run(*args, timeout=120):
    """Run the installed entry point as a real process (python -m hf_oto.cli is the same function)."""
    return subprocess.run(
        [sys.executable, "-m", "hf_oto.cli", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


@pytest.fixture(scope="module")
def slim_folder(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=24,
        max_position_embeddings=64,
    )
    model = transformers.BertForQuestionAnswering(config).eval()
    groups = hf_oto.build_groups(model)
    # layer 0: heads 1 and 3, neurons 0-9; layer 2: every head (an empty attention block)
    ffn0 = groups.block_ranges()[1][0]
    heads2 = groups.block_ranges()[4][0]
    groups.zero_([1, 3, *range(ffn0, ffn0 + 10), *range(heads2, heads2 + 4)])
    slim, report = hf_oto.slim_model(model, groups, settings={"oto_lambda": 0.001, "oto_target_group_sparsity": 0.2})
    folder = tmp_path_factory.mktemp("inspect") / "slim"
    slim.save_pretrained(folder)
    return folder, report


def test_inspect_prints_shapes_params_flops_and_settings(slim_folder, capsys):
    folder, report = slim_folder
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"{report.dense.params:,}" in out and f"{report.slim.params:,}" in out
    assert f"{report.dense.flops_per_token:,}" in out and f"{report.slim.flops_per_token:,}" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()[:1].isdigit()}
    # layer 0 keeps 2 of 4 heads (head dim 8 -> q is 16x32) and 14 of 24 neurons; layer 2 keeps no head
    assert "2/4" in rows["0"] and "14/24" in rows["0"] and "16x32" in rows["0"] and "14x32 / 32x14" in rows["0"]
    assert "0/4" in rows["2"] and "0x32" in rows["2"]
    assert "4/4" in rows["1"] and "24/24" in rows["1"]
    assert "oto_lambda: 0.001" in out and "oto_target_group_sparsity: 0.2" in out


def test_inspect_reads_config_only(slim_folder, tmp_path):
    folder, _ = slim_folder
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_text((folder / "config.json").read_text())
    result = _run("inspect", str(config_only))
    assert result.returncode == 0, result.stderr
    assert "weights: MISSING" in result.stdout and "layer" in result.stdout


def _fail_in_process(capsys, argv):
    """Run `main` in this process (as the console script does) and return its exit status and stderr."""
    status = main(argv)
    captured = capsys.readouterr()
    assert captured.out == "" or argv[0] == "demo"
    return status, captured.err


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: d, "no config.json"),
        (
            lambda d: (d / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}') and d,
            "not an hf_oto slim model",
        ),
        (lambda d: (d / "config.json").write_text("{not json") and d, "not valid JSON"),
    ],
    ids=["missing", "empty", "stock-model", "corrupt-json"],
)
def test_inspect_bad_input_is_one_line(tmp_path, capsys, make, message):
    status, err = _fail_in_process(capsys, ["inspect", str(make(tmp_path))])
    assert status == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_demo_bad_input_is_one_line(tmp_path, capsys):
    opt = tmp_path / "opt"  # an inferred family passes the groups check, then lacks a tokenizer
    transformers.OPTConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=2).save_pretrained(opt)
    moe = tmp_path / "mixtral"  # a family hf_oto refuses (mixture of experts)
    transformers.MixtralConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=2).save_pretrained(moe)
    not_json = tmp_path / "data.json"
    not_json.write_text("this is not json")
    not_squad = tmp_path / "other.json"
    not_squad.write_text(json.dumps({"data": [{"sentence": "x", "label": 1}]}))
    cases = [
        (["--model", str(tmp_path / "nope")], "does not exist"),
        (["--model", str(tmp_path)], "no config.json"),
        (["--model", str(moe)], "mixtral is a mixture-of-experts (MoE) model"),
        (["--model", str(opt)], "no tokenizer"),
        (["--data", str(tmp_path / "missing.json")], "no such file"),
        (["--data", str(not_json)], "could not read"),
        (["--data", str(not_squad)], "not SQuAD"),
        (["--target_sparsity", "1.5"], "--target_sparsity"),
    ]
    for extra, message in cases:
        status, err = _fail_in_process(capsys, ["demo", "--output_dir", str(tmp_path / "out"), *extra])
        assert status == 2, (extra, err)
        assert err.count("\n") == 1 and message in err, (extra, err)
        assert "Traceback" not in err


def test_console_script_exit_status_and_stderr(tmp_path):
    """The same errors through a real process: exit status 2, one stderr line, nothing on stdout."""
    for argv, message in (
        (["inspect", str(tmp_path / "missing")], "does not exist"),
        (["demo", "--data", str(tmp_path / "missing.json")], "no such file"),
    ):
        result = _run(*argv)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("architecture", ["llama", "bert"])
def test_short_demo_end_to_end(tmp_path, architecture):
    """A shortened `hf-oto demo` in a real process: table, saved Hub folder, the printed example answered by
    the reloaded slim model through the pipeline, and the slim model agreeing with the group-sparse model
    (same answer to the example, same EM/F1). Too short to learn the task: the measured EM is in README."""
    out = tmp_path / "demo"
    result = _run(
        "demo", "--output_dir", str(out), "--architecture", architecture, "--max_steps", "10",
        "--train_paragraphs", "30", "--eval_paragraphs", "4", "--hidden_size", "32", "--num_layers", "2",
        "--num_heads", "4", "--batch_size", "8", "--latency_batch", "4", "--latency_rounds", "2",
        "--target_sparsity", "0.4", "--threads", "1",
        timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stdout = result.stdout
    for row in ("parameters", "FLOPs/token", "latency", "exact match", "F1", "heads kept", "slim model's answer"):
        assert row in stdout
    results = json.loads((out / "demo_results.json").read_text())
    assert results["dense"]["exact_match"] == results["slim"]["exact_match"]
    assert results["dense"]["f1"] == results["slim"]["f1"]
    assert results["report"]["params_kept_ratio"] < 1.0
    example = results["example"]
    validation = json.loads((out / "data" / "validation.json").read_text())
    context = next(p["context"] for a in validation["data"] for p in a["paragraphs"] if any(
        q["question"] == example["question"] for q in p["qas"]))  # fmt: skip
    assert example["answer"] and example["answer"] in context
    assert example["answer"] == example["group_sparse_answer"]
    verdict = "correct" if example["answer"] == example["reference"] else "WRONG"
    assert f"reference: {example['reference']!r} ({verdict})" in stdout
    assert f"group-sparse model's answer: {example['answer']!r}" in stdout
    for path in (out / "slim-model", out / "data" / "train.json", out / "demo_results.json"):
        assert str(path) in stdout and path.exists()
    slim = transformers.AutoModelForQuestionAnswering.from_pretrained(out / "slim-model", trust_remote_code=True)
    assert sum(p.numel() for p in slim.parameters()) == results["report"]["slim"]["params"]
    assert main(["inspect", str(out / "slim-model")]) == 0


def test_demo_with_a_given_model_and_squad_file(tmp_path):
    """`hf-oto demo --model DIR --data FILE`: a saved pretrained-style QA model (with its tokenizer) and a SQuAD
    v1.1 file replace the from-scratch BERT and the synthetic set; articles are held out for evaluation."""
    from hf_oto.synthetic_qa import build_wordpiece_tokenizer, write_squad_splits

    train_path, _ = write_squad_splits(tmp_path / "squad", train_paragraphs=40, validation_paragraphs=2, seed=3)
    articles = json.loads(Path(train_path).read_text())["data"]
    assert len(articles) >= 2  # so the demo holds out whole articles
    texts = [p["context"] for a in articles for p in a["paragraphs"]]
    tokenizer = build_wordpiece_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    model_dir = tmp_path / "pretrained"
    transformers.BertForQuestionAnswering(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    out = tmp_path / "demo"
    result = _run(
        "demo", "--model", str(model_dir), "--data", str(train_path), "--output_dir", str(out),
        "--max_steps", "6", "--batch_size", "8", "--latency_batch", "2", "--latency_rounds", "1",
        "--target_sparsity", "0.3",
        timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pretrained" in result.stdout and os.path.basename(train_path) in result.stdout
    results = json.loads((out / "demo_results.json").read_text())
    for metric in ("exact_match", "f1"):
        assert results["dense"][metric] == results["slim"][metric]
    assert results["report"]["slim"]["params"] < results["report"]["dense"]["params"]
    assert not (out / "data").exists()  # no synthetic set was generated
    slim = transformers.AutoModelForQuestionAnswering.from_pretrained(out / "slim-model", trust_remote_code=True)
    assert sum(p.numel() for p in slim.parameters()) == results["report"]["slim"]["params"]
