"""Spec inference and its numerical verification: families without a hand-written spec, refusals, `hf-oto check`.

The per-family exactness tests (zero patterns × eager/sdpa, every task head, generate, strict reload) run over
every family in `conftest.TINY_CONFIGS`, inferred ones included; this file covers what inference adds.
"""

import pytest
import torch
import transformers
from conftest import FUSED_CONFIGS, INFERRED_FAMILIES, SPECIAL_TOKENS, TINY, TINY_CONFIGS, tiny_config, tiny_model
from test_trainer import make_args, make_dataset

import hf_oto
from hf_oto import verification
from hf_oto.architectures import _first_verified, get_spec
from hf_oto.architectures.inference import candidate_specs
from hf_oto.cli import main

REFUSED = {
    "mixtral": (transformers.MixtralConfig, "mixture-of-experts (MoE)"),
    "qwen2_moe": (transformers.Qwen2MoeConfig, "mixture-of-experts (MoE)"),
    "qwen3_moe": (transformers.Qwen3MoeConfig, "mixture-of-experts (MoE)"),
    "t5": (transformers.T5Config, "encoder-decoder"),
    "bart": (transformers.BartConfig, "encoder-decoder"),
}


@pytest.mark.parametrize("family", INFERRED_FAMILIES)
def test_inferred_spec_is_used_only_once_verified_and_says_so(family, monkeypatch):
    model = tiny_model(family)
    spec = get_spec(model)
    assert spec.inferred and spec.origin == "inferred"
    verification._VERDICTS.pop((type(model), "attention"), None)
    verification._VERDICTS.pop((type(model), "ffn"), None)
    calls = []
    check = verification.check_structure
    monkeypatch.setattr(verification, "check_structure", lambda *a: calls.append(a[2]) or check(*a))
    groups = hf_oto.build_groups(model)
    hf_oto.build_groups(model)  # the verdict is cached per class
    assert sorted(calls) == ["attention", "ffn"]
    assert f"({spec.name}, inferred spec)" in str(groups)
    assert verification.verdicts(model) == {"attention": None, "ffn": None}


NEEDS_HAND_WRITTEN = {
    "mpnet": "size of tensor",  # its per-head position bias is computed outside the layers
    "gpt2": "not enough values to unpack",  # its attention caches the width as `split_size`
}
HAND_WRITTEN_FAMILIES = [f for f in [*TINY_CONFIGS, *FUSED_CONFIGS] if f not in INFERRED_FAMILIES]


@pytest.mark.parametrize("family", HAND_WRITTEN_FAMILIES)
def test_inference_alone_recovers_the_hand_written_specs(family):
    """Inference, ignoring the hand-written spec, finds the same projections and verifies, fused ones included
    (where a fused q/k/v's row order cannot be read off its shape, only the exact reading verifies), except for the
    two families that need a hand-written spec, whose attention verification refuses with the reason."""
    model = tiny_model(family)
    written = get_spec(model)
    candidates = candidate_specs(model)
    outcomes = {spec.qkv_layout: verification.check_structure(model, spec, "attention") for spec in candidates}
    chosen = _first_verified(model, candidates)
    assert (chosen.q, chosen.k, chosen.v, chosen.qkv, chosen.o) == (
        written.q,
        written.k,
        written.v,
        written.qkv,
        written.o,
    )
    assert chosen.ffn_out == written.ffn_out and verification.check_structure(model, chosen, "ffn") is None
    if family in NEEDS_HAND_WRITTEN:
        assert NEEDS_HAND_WRITTEN[family] in outcomes[chosen.qkv_layout]
        return
    assert outcomes[chosen.qkv_layout] is None and chosen.qkv_layout == written.qkv_layout
    if family == "gpt_neox":  # per-head q, k, v rows: the blocked reading removes the wrong rows, and is refused
        assert outcomes["blocked"] is not None and chosen.qkv_layout == "interleaved"


def test_hand_written_spec_says_so():
    assert "(bert, hand-written spec)" in str(hf_oto.build_groups(tiny_model("bert")))


@pytest.mark.parametrize("model_type", list(REFUSED))
def test_moe_and_encoder_decoder_are_refused_by_name(model_type):
    config_class, reason = REFUSED[model_type]
    config = config_class(**{k: v for k, v in TINY.items() if k != "max_position_embeddings"}, **SPECIAL_TOKENS)
    model = transformers.AutoModel.from_config(config)
    for call in (hf_oto.build_groups, hf_oto.slim_model):
        with pytest.raises(hf_oto.UnsupportedModelError, match="cannot prune this model") as error:
            call(model)
        assert reason in str(error.value) and model_type in str(error.value) and "\n" not in str(error.value)


class MeanCenteredNormOlmo2(transformers.Olmo2Model):
    """OLMo 2 with LayerNorm (mean-centering) q/k norms over the full width: removing a head changes their mean,
    which the slim model cannot compensate, so the verification must refuse the heads."""

    def __init__(self, config):
        super().__init__(config)
        for layer in self.layers:
            attention = layer.self_attn
            attention.q_norm = torch.nn.LayerNorm(attention.q_proj.out_features)
            attention.k_norm = torch.nn.LayerNorm(attention.k_proj.out_features)


def test_a_group_that_is_not_zero_invariant_is_refused_with_the_layer_and_what_to_do():
    model = MeanCenteredNormOlmo2(tiny_config("olmo2"))
    with pytest.raises(hf_oto.UnsupportedModelError) as error:
        hf_oto.build_groups(model)
    message = str(error.value)
    assert "MeanCenteredNormOlmo2 (inferred spec): the attention groups are not zero-invariant" in message
    assert "changed the outputs after layer" in message and 'oto_prune="ffn"' in message and "\n" not in message
    groups = hf_oto.build_groups(model, prune=["ffn"])  # what the message advises works, exactly
    groups.zero_(range(len(groups) - 5, len(groups)))
    hf_oto.slim_model(model, groups)


@pytest.mark.parametrize("family", [*INFERRED_FAMILIES, "mpnet"])
def test_oto_trainer_trains_and_saves_a_slim_model_end_to_end(family, tmp_path, one_thread):
    """Each newly covered family under OTOTrainer: HSPG reaches the exact target, the slim save reloads equal."""
    config_class = type(tiny_config(family))
    data = make_dataset(32)
    if config_class in transformers.AutoModelForSequenceClassification._model_mapping:
        model_class = transformers.AutoModelForSequenceClassification._model_mapping[config_class]
    else:  # Granite has no classifier: language modelling on the same tokens
        model_class = transformers.AutoModelForCausalLM._model_mapping[config_class]
        data = data.map(lambda row: {"labels": row["input_ids"]})
    model = tiny_model(family, model_class, num_labels=2)
    args = make_args(tmp_path / "out", oto_target_group_sparsity=0.3, oto_projection_deadline=0.5)
    trainer = hf_oto.OTOTrainer(model=model, args=args, train_dataset=data)
    trainer.train()
    groups = hf_oto.build_groups(model)
    assert int(groups.zero_norm_mask().sum()) == int(0.3 * len(groups))
    trainer.save_model()
    slim = hf_oto.load_slim(tmp_path / "out")
    batch = {"input_ids": torch.tensor(make_dataset(4)["input_ids"])}
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
        torch.testing.assert_close(slim(**batch).logits, expected, atol=1e-5 * max(1.0, expected.abs().max()), rtol=0)
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())


def test_trainer_refuses_before_training_and_trains_with_the_advised_setting(tmp_path):
    model = MeanCenteredNormOlmo2(tiny_config("olmo2"))
    data = [{"input_ids": torch.arange(3, 11)} for _ in range(8)]
    args = dict(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to=[], use_cpu=True)
    with pytest.raises(hf_oto.UnsupportedModelError, match='oto_prune="ffn"'):
        hf_oto.OTOTrainer(model=model, args=hf_oto.OTOTrainingArguments(**args), train_dataset=data).train()


def test_check_command_prints_groups_or_the_reason(tmp_path, capsys):
    tiny_config("qwen3", architectures=["Qwen3ForCausalLM"]).save_pretrained(tmp_path / "qwen3")
    assert main(["check", str(tmp_path / "qwen3")]) == 0
    out = capsys.readouterr().out
    assert "Qwen3ForCausalLM (model_type qwen3)" in out and "spec: inferred" in out
    assert "attention: verified on a random copy" in out and "ffn: verified on a random copy" in out
    assert "kv groups of 2 query heads" in out and "150 zero-invariant groups (6 attention, 144 ffn)" not in out
    assert f"{3 * 2 + 3 * 24} zero-invariant groups (6 attention, 72 ffn)" in out
    transformers.MixtralConfig(**{k: v for k, v in TINY.items() if k != "max_position_embeddings"}).save_pretrained(
        tmp_path / "moe"
    )
    assert main(["check", str(tmp_path / "moe")]) == 1
    assert (
        "refused: hf_oto cannot prune this model: mixtral is a mixture-of-experts (MoE) model"
        in capsys.readouterr().out
    )
