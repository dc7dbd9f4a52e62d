"""OTOTrainer.push_to_hub and hub_strategy (issue 4), against a loopback stand-in for the Hub API
(tests/hub_stub.py): exactly the slim folder arrives, with the OTO model card; every_save pushes consistent slim
snapshots; strategies that would push dense checkpoints are refused."""

import json
import os
import re

import pytest
import safetensors.torch
import torch
import transformers
import transformers.utils.hub
import yaml
from hub_stub import FAKE_TOKEN, loopback_hub
from test_trainer import make_args, make_dataset, make_model
from test_trainer_save import SLIM_FILES
from transformers import TrainerCallback

import hf_oto
from hf_oto import OTOTrainer, OTOTrainingArguments


@pytest.fixture
def hub(monkeypatch):
    """huggingface_hub (and transformers' shared HfApi) pointed at a HubStub on 127.0.0.1 (see `loopback_hub`)."""
    with loopback_hub(monkeypatch) as stub:
        yield stub


def slim_weights_match_config(weights: dict[str, torch.Tensor], config: dict) -> bool:
    """The weights have exactly the per-layer shapes that the config of the same commit declares."""
    for layer in range(3):
        prefix = f"bert.encoder.layer.{layer}"
        heads, width = config["oto_num_attention_heads"][layer], config["oto_intermediate_sizes"][layer]
        if weights[f"{prefix}.attention.self.query.weight"].shape != (heads * 8, 32):
            return False
        if weights[f"{prefix}.attention.output.dense.weight"].shape != (32, heads * 8):
            return False
        if weights[f"{prefix}.intermediate.dense.weight"].shape != (width, 32):
            return False
        if weights[f"{prefix}.output.dense.weight"].shape != (32, width):
            return False
    return True


def test_push_to_hub_uploads_only_the_slim_folder(tmp_path, hub, tiny_tokenizer):
    """After a run that wrote dense checkpoints into output_dir, push_to_hub() commits exactly the slim folder
    (weights, config, code files, OTO card, plot, tokenizer), byte for byte as saved, to the repo create_repo
    resolved; never checkpoints, dense weights or training_args.bin, and never the hub_token."""
    output_dir = tmp_path / "tiny-oto"
    args = make_args(
        output_dir,
        push_to_hub=True,
        hub_strategy="end",
        hub_token=FAKE_TOKEN,
        save_strategy="steps",
        save_steps=5,
        max_steps=10,
        oto_target_group_sparsity=0.3,
    )
    trainer = OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset(), processing_class=tiny_tokenizer)
    assert hub.repos == ["tester/tiny-oto"] and trainer.hub_model_id == "tester/tiny-oto"
    trainer.train()
    assert hub.commits == [], "hub_strategy='end' pushed during training"
    assert {"checkpoint-5", "checkpoint-10"} <= set(os.listdir(output_dir))
    for decoy in ("training_args.bin", "optimizer.pt", "pytorch_model.bin"):  # what dense saves leave around
        (output_dir / decoy).write_bytes(b"dense")

    trainer.push_to_hub(dataset_tags="glue", tags="text-classification")
    assert hub.unexpected == []
    (commit,) = hub.commits
    assert commit.repo_id == "tester/tiny-oto" and commit.revision == "main" and commit.message == "End of training"
    tiny_tokenizer.save_pretrained(tmp_path / "tokenizer_only")
    tokenizer_files = set(os.listdir(tmp_path / "tokenizer_only"))
    assert "tokenizer.json" in tokenizer_files
    assert set(commit.files) == SLIM_FILES | tokenizer_files
    for name, content in commit.files.items():
        assert content == (output_dir / name).read_bytes(), f"{name} differs from the saved slim folder"
        assert FAKE_TOKEN.encode() not in content, f"{name} leaks hub_token"
    assert json.loads(commit.files["training_args.json"])["hub_token"] == "<HUB_TOKEN>"

    config = json.loads(commit.files["config.json"])
    assert config["model_type"] == "oto_bert"
    weights = safetensors.torch.load(commit.files["model.safetensors"])
    assert slim_weights_match_config(weights, config)
    assert (
        sum(t.numel() for t in weights.values()) == trainer.slim_report.slim.params < trainer.slim_report.dense.params
    )
    with open(hf_oto.modeling_oto.__file__, "rb") as handle:
        assert commit.files["modeling_oto.py"] == handle.read()

    card = commit.files["README.md"].decode()
    assert hub.validated_cards == [card]
    metadata = yaml.safe_load(card.split("---\n", 2)[1])
    assert {"hf-oto", "pruning", "structured-pruning", "text-classification"} <= set(metadata["tags"])
    assert metadata["datasets"] == ["glue"]
    assert "## Per-layer structure kept" in card and "More information needed" not in card
    assert 'from_pretrained("tester/tiny-oto", trust_remote_code=True)' in card  # the repo it was pushed to
    assert "\n# tester/tiny-oto\n" in card  # titled with the repo id, namespace included
    assert commit.files["oto_layers.png"].startswith(b"\x89PNG\r\n\x1a\n")


class PushCounter(TrainerCallback):
    def __init__(self) -> None:
        self.count = 0

    def on_push_begin(self, args, state, control, **kwargs):
        self.count += 1


def test_every_save_pushes_consistent_slim_snapshots(tmp_path, hub):
    """hub_strategy="every_save": each commit made during training is one consistent slim snapshot (config with
    model_type oto_bert, code files, weights of the config's shapes, card, plot), equal to the dense checkpoint of
    that step slimmed; no checkpoint files. A final push_to_hub() commits the final slim model."""
    output_dir = tmp_path / "out"
    args = make_args(
        output_dir,
        push_to_hub=True,
        hub_model_id="tester/every-save",
        hub_strategy="every_save",
        save_strategy="steps",
        save_steps=4,
        max_steps=8,
        oto_target_group_sparsity=0.4,
    )
    pushes = PushCounter()
    trainer = OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset(), callbacks=[pushes])
    trainer.train()
    assert hub.unexpected == []
    assert len(hub.commits) >= 1
    assert pushes.count == len(hub.commits)  # callbacks hear of every snapshot push
    assert "step 4" in hub.commits[0].message  # the first save always pushes; later ones skip while one is in flight
    with open(hf_oto.modeling_oto.__file__, "rb") as handle:
        code = handle.read()
    for commit in hub.commits:
        assert commit.repo_id == "tester/every-save"
        assert set(commit.files) == SLIM_FILES, commit.message
        config = json.loads(commit.files["config.json"])
        assert config["model_type"] == "oto_bert"
        assert (
            config["auto_map"]["AutoModelForSequenceClassification"] == "modeling_oto.OTOBertForSequenceClassification"
        )
        assert commit.files["modeling_oto.py"] == code
        assert "hf-oto" in commit.files["README.md"].decode()
        weights = safetensors.torch.load(commit.files["model.safetensors"])
        assert slim_weights_match_config(weights, config)
        step = int(re.search(r"step (\d+)", commit.message).group(1))
        dense = transformers.BertForSequenceClassification.from_pretrained(output_dir / f"checkpoint-{step}")
        expected = hf_oto.slim_model(dense)[0].state_dict()
        assert weights.keys() == expected.keys()
        assert all(torch.equal(weights[key], expected[key]) for key in weights), f"step {step} snapshot mismatch"

    pushed = len(hub.commits)
    trainer.push_to_hub()
    assert len(hub.commits) == pushed + 1 == pushes.count
    final = hub.commits[-1]
    config = json.loads(final.files["config.json"])
    kept = sum(config["oto_num_attention_heads"]) + sum(config["oto_intermediate_sizes"])
    assert kept == 84 - int(0.4 * 84)
    assert slim_weights_match_config(safetensors.torch.load(final.files["model.safetensors"]), config)


@pytest.mark.parametrize("strategy", ["checkpoint", "all_checkpoints"])
def test_hub_strategies_pushing_dense_checkpoints_are_refused(tmp_path, strategy):
    with pytest.raises(ValueError, match=f"hub_strategy='{strategy}' would push dense checkpoints") as error:
        OTOTrainingArguments(output_dir=str(tmp_path), push_to_hub=True, hub_strategy=strategy)
    assert "Use hub_strategy='every_save'" in str(error.value) and "'end'" in str(error.value)
    # without push_to_hub the strategy is irrelevant and accepted
    OTOTrainingArguments(output_dir=str(tmp_path), hub_strategy=strategy)
