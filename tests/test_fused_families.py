"""Fused projections (issue 12): GPT-2 (Conv1D, blocked c_attn), GPT-NeoX (interleaved query_key_value), Phi-3
(blocked GQA qkv_proj, fused gate_up_proj) and ModernBERT (blocked Wqkv, GLU Wi).

HSPG on region slices of one fused parameter follows the trajectory of the same model with separate parameters;
slim models of every task head of these families equal the dense ones (eager and sdpa), generate the same tokens,
reload without hf_oto, and OTOTrainer trains and saves them."""

import copy
import json

import pytest
import torch
import transformers
from conftest import FUSED_CONFIGS, run_fresh, tiny_model
from test_slim import assert_same_outputs, block_range, task_classes
from test_trainer import make_args, make_dataset
from torch import nn
from transformers.pytorch_utils import Conv1D

import hf_oto
from hf_oto import HSPG, OTOTrainer
from hf_oto.accounting import removed_costs
from hf_oto.architectures import ArchitectureSpec
from hf_oto.groups import ATTENTION, FFN, GroupBlock, GroupSet, ParamSlice
from hf_oto.optim.layout import Block
from hf_oto.optim.sharded import ShardedGroupLayout

FAMILIES = list(FUSED_CONFIGS)
DECODERS = ["gpt2", "gpt_neox", "phi3"]
CASES = task_classes(FAMILIES) + [("gpt2", "GPT2DoubleHeadsModel")]  # the one head no Auto class maps to


def fused_zero_pattern(groups):
    """Every head of layer 0, every FFN neuron of layer 1, and every other group of the rest."""
    zero = list(range(*block_range(groups, 0, ATTENTION))) + list(range(*block_range(groups, 1, FFN)))
    for block, (start, end) in zip(groups.blocks, groups.block_ranges()):
        if (block.layer, block.structure) not in ((0, ATTENTION), (1, FFN)):
            zero += list(range(start, end, 2))
    return zero


def slim_pair(family, model_class=None, attn="eager", **overrides):
    dense = tiny_model(family, model_class, attn_implementation=attn, **overrides)
    groups = hf_oto.build_groups(dense)
    groups.zero_(fused_zero_pattern(groups))
    slim, report = hf_oto.slim_model(dense, groups)  # itself checks every hidden state at 1e-5 (relative)
    return dense, slim, report


# ---------------------------------------------------------------------------------------------- optimizer


def to_conv1d(linear: nn.Linear) -> Conv1D:
    """The same projection as GPT-2's Conv1D: weight stored (in, out), always a bias."""
    with torch.random.fork_rng():
        conv = Conv1D(linear.out_features, linear.in_features)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.T)
        conv.bias.copy_(linear.bias if linear.bias is not None else torch.zeros(linear.out_features))
    return conv


class TinyNet(nn.Module):
    """Two layers of a GQA-like attention-free block: q/k/v (fused or separate) into o, gate/up into down; with
    `transposed`, every projection a Conv1D (regions along the weight's dim 1)."""

    def __init__(self, fused: bool, transposed: bool = False, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fused = fused
        self.rows, self.columns = (1, 0) if transposed else (0, 1)
        self.layers = nn.ModuleList()
        for _ in range(2):
            q, k, v, o = nn.Linear(6, 8), nn.Linear(6, 4), nn.Linear(6, 4), nn.Linear(8, 6, bias=False)
            gate, up, down = nn.Linear(6, 5), nn.Linear(6, 5), nn.Linear(5, 6)
            layer = nn.Module()
            if fused:
                with torch.random.fork_rng():  # both models draw the same random numbers
                    layer.qkv, layer.gate_up = nn.Linear(6, 16), nn.Linear(6, 10, bias=False)
                with torch.no_grad():
                    layer.qkv.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))
                    layer.qkv.bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
                    layer.gate_up.weight.copy_(torch.cat([gate.weight, up.weight]))
            else:
                layer.q, layer.k, layer.v, layer.gate, layer.up = q, k, v, gate, up
                gate.bias, up.bias = None, None
            layer.o, layer.down = o, down
            if transposed:
                for name, child in list(layer.named_children()):
                    setattr(layer, name, to_conv1d(child))
            self.layers.append(layer)

    def split(self, layer):
        """(q, k, v, gate, up) weights of a layer, as separate tensors."""
        if self.fused:
            qkv, gate_up = layer.qkv.weight.split([8, 4, 4], self.rows), layer.gate_up.weight.split(5, self.rows)
            return (*qkv, *gate_up)
        return layer.q.weight, layer.k.weight, layer.v.weight, layer.gate.weight, layer.up.weight

    def forward(self, x):
        for layer in self.layers:
            if self.fused:
                q, k, v = layer.qkv(x).split([8, 4, 4], dim=-1)
                gate, up = layer.gate_up(x).chunk(2, dim=-1)
            else:
                q, k, v, gate, up = layer.q(x), layer.k(x), layer.v(x), layer.gate(x), layer.up(x)
            x = x + layer.o(q * torch.sigmoid(k.repeat_interleave(2, -1)) + v.repeat_interleave(2, -1))
            x = x + layer.down(nn.functional.silu(gate) * up)
        return x

    def groups(self) -> GroupSet:
        """Per layer: 2 KV groups (2 query heads of width 2 each, K and V heads of width 2), 5 FFN neurons."""
        blocks, rows = [], self.rows
        for index, layer in enumerate(self.layers):
            if self.fused:
                spans = ((0, 8), (8, 4), (12, 4))
                attention = [ParamSlice("qkv.w", layer.qkv.weight, rows, *span) for span in spans]
                attention += [ParamSlice("qkv.b", layer.qkv.bias, 0, *span) for span in spans]
                ffn = [ParamSlice("gate_up.w", layer.gate_up.weight, rows, *span) for span in ((0, 5), (5, 5))]
            else:
                attention = [ParamSlice("w", m.weight, rows) for m in (layer.q, layer.k, layer.v)]
                attention += [ParamSlice("b", m.bias, 0) for m in (layer.q, layer.k, layer.v)]
                ffn = [ParamSlice("w", m.weight, rows) for m in (layer.gate, layer.up)]
            attention.append(ParamSlice("o", layer.o.weight, self.columns))
            ffn.append(ParamSlice("down", layer.down.weight, self.columns))
            blocks += [GroupBlock(ATTENTION, 2, attention, layer=index), GroupBlock(FFN, 5, ffn, layer=index)]
        return GroupSet(blocks)


def train(fused: bool, transposed: bool, steps: int = 24, **options):
    model = TinyNet(fused, transposed)
    groups = model.groups()
    optimizer = HSPG(model.parameters(), groups, total_steps=steps, target_group_sparsity=0.5, n_p=0.25, **options)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=generator)
        loss = (model(x) - x.flip(-1)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize(
    "options",
    [
        dict(variant="adamw", weight_decay=0.01, layout="workspace"),
        dict(variant="adamw", saliency="magnitude", layout="stacked", lam=1e-2),
        dict(variant="sgd", lr=0.05, momentum=0.9, weight_decay=0.01, layout="workspace"),
        dict(variant="sgd", lr=0.05, momentum=0.9, layout="stacked", prox=True, lam=1e-2),
    ],
    ids=["adamw-workspace", "adamw-stacked-magnitude", "sgd-momentum-workspace", "sgd-stacked-prox"],
)
@pytest.mark.parametrize("transposed", [False, True], ids=["linear", "conv1d"])
def test_region_slices_follow_the_separate_parameters_trajectory(options, transposed):
    options = {"lr": 0.02, **options}
    fused, fused_opt = train(True, transposed, **options)
    split, split_opt = train(False, transposed, **options)
    assert torch.equal(fused_opt.zero_mask(), split_opt.zero_mask())
    assert int(fused_opt.zero_mask().sum()) == 7  # ⌊0.5 · 14⌋ groups, heads and neurons alike
    for a, b in zip(fused.layers, split.layers):
        for x, y in zip(fused.split(a), split.split(b)):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.qkv.bias, torch.cat([b.q.bias, b.k.bias, b.v.bias]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.o.weight, b.o.weight, rtol=1e-5, atol=1e-6)
    fused_groups = fused.groups()
    assert torch.equal(fused_groups.zero_norm_mask(), fused_opt.zero_mask())
    if options["variant"] == "adamw":  # one moment update per parameter and step, not one per region
        assert fused_opt.state[fused.layers[0].qkv.weight]["step"].item() == 24


def test_region_slices_are_refused_when_they_do_not_tile_or_span_blocks():
    weight = torch.zeros(6, 4, requires_grad=True)
    with pytest.raises(ValueError, match="cover it entirely"):
        GroupBlock("x", 2, [ParamSlice("a", weight, 0, 0, 4)])  # rows 4-5 in no region
    with pytest.raises(ValueError, match="not overlap"):
        GroupBlock("x", 2, [ParamSlice("a", weight, 0, 0, 4), ParamSlice("b", weight, 0, 2, 4)])
    with pytest.raises(ValueError, match="does not fit"):
        ParamSlice("a", weight, 0, 4, 4)
    halves = [GroupBlock("x", 1, [ParamSlice("a", weight, 0, 0, 3), ParamSlice("b", weight, 0, 3, 3)])]
    GroupSet(halves)  # two regions of one parameter in one block: fine
    two_blocks = GroupSet(
        [GroupBlock("x", 2, [ParamSlice("a", weight, 0)]), GroupBlock("y", 2, [ParamSlice("b", weight, 1)])]
    )
    with pytest.raises(ValueError, match="two group blocks"):
        HSPG([weight], two_blocks, lr=0.1)
    with pytest.raises(NotImplementedError, match="region slices"):
        ShardedGroupLayout([Block(halves[0], 0, 1, [0, 0])], torch.device("cpu"))


@pytest.mark.parametrize(
    "fields",
    [
        dict(q="a.q", k="a.k", v="a.v", qkv="a.qkv"),  # both
        dict(q="a.q", k="a.k"),  # no v
        dict(qkv="a.qkv", qkv_layout="rows"),
        dict(qkv="a.qkv", qkv_layout="interleaved", num_kv_heads_field="num_key_value_heads"),
    ],
)
def test_spec_refuses_ambiguous_attention(fields):
    with pytest.raises(ValueError, match="spec 'x'"):
        ArchitectureSpec(
            name="x",
            model_types=("x",),
            layers="l",
            attention_module="a",
            o="a.o",
            ffn_in=("f",),
            ffn_out="d",
            **fields,
        )


# ---------------------------------------------------------------------------------------------- slim models


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family,class_name", CASES)
def test_slim_equals_dense_for_every_task_head(family, class_name, attn):
    model_class = getattr(transformers, class_name)
    dense, slim, report = slim_pair(family, model_class, attn)
    assert type(slim).__name__ == "OTO" + class_name and isinstance(slim, model_class)
    assert report.slim.heads[0] == 0 and report.slim.ffn[1] == 0
    assert report.slim.heads[1:] == [h // 2 for h in report.dense.heads[1:]]
    assert report.slim.params < report.dense.params and report.slim.flops_per_token < report.dense.flops_per_token
    assert_same_outputs(dense, slim)
    groups = hf_oto.build_groups(dense)  # what training logs as removed is what slimming removes
    params, flops = removed_costs(groups, groups.zero_norm_mask(), report.seq_len)
    assert (params, flops) == (
        report.dense.params - report.slim.params,
        report.dense.flops_per_token - report.slim.flops_per_token,
    )
    # the slim model is of the shapes its config says: slimming it again is a no-op
    again = hf_oto.build_groups(slim)
    assert len(again) == sum(report.slim.kv_heads) + sum(report.slim.ffn)


@pytest.mark.parametrize(
    "family,model_class,overrides",
    [
        (
            "gpt2",
            transformers.GPT2LMHeadModel,
            dict(reorder_and_upcast_attn=True, scale_attn_by_inverse_layer_idx=True),
        ),
        ("gpt_neox", transformers.GPTNeoXForCausalLM, dict(use_parallel_residual=False)),
        ("phi3", transformers.Phi3ForCausalLM, dict(num_key_value_heads=4)),  # MHA: one head per group
        ("modernbert", transformers.ModernBertForMaskedLM, dict(local_attention=4)),  # global, local, global
    ],
)
def test_config_variants(family, model_class, overrides):
    dense, slim, report = slim_pair(family, model_class, **overrides)
    assert_same_outputs(dense, slim)
    if family == "phi3":
        assert report.slim.kv_heads == report.slim.heads == [0, 2, 2]
    if family == "modernbert":
        layers = slim.base_model.layers  # global and local layers keep their kind and window
        kinds = [(layer.attention_type, layer.attn.sliding_window) for layer in layers[1:]]  # layer 0: 0 heads
        assert kinds == [(layer.attention_type, layer.attn.sliding_window) for layer in dense.base_model.layers[1:]]
        assert len(set(kinds)) == 2


@pytest.mark.parametrize("family", DECODERS)
def test_generate_with_kv_cache_matches_dense(family):
    model_class = transformers.AutoModelForCausalLM._model_mapping[type(tiny_model(family).config)]
    dense, slim, _ = slim_pair(family, model_class)
    prompt = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(3))
    kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(dense.generate(prompt, **kwargs), slim.generate(prompt, **kwargs))


def test_layer_config_follows_the_shared_config():
    """Phi-3's attention reads its head count from `self.config`: each layer sees its own count, everything else
    (the attention implementation switched on the model) live from the shared config; copies keep working."""
    dense, slim, _ = slim_pair("phi3", transformers.Phi3ForCausalLM)
    attention = slim.model.layers[1].self_attn
    assert attention.config.num_attention_heads == 2 and attention.config.num_key_value_heads == 1
    assert slim.config.num_attention_heads == 4
    slim.set_attn_implementation("sdpa")
    dense.set_attn_implementation("sdpa")
    assert attention.config._attn_implementation == "sdpa"
    assert_same_outputs(dense, slim)
    copied = copy.deepcopy(slim)
    assert copied.model.layers[1].self_attn.config._oto_shared is copied.config
    assert_same_outputs(dense, copied)


def test_layouts_saved_before_fused_projections_still_load(tmp_path):
    _, slim, _ = slim_pair("llama", transformers.LlamaForCausalLM)
    slim.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("qkv", "qkv_layout", "queries_per_group", "config_fields"):
        del config["oto_layout"][key]
    (tmp_path / "config.json").write_text(json.dumps(config))
    reloaded = hf_oto.load_slim(tmp_path).eval()
    assert_same_outputs(slim, reloaded)


RELOAD = """
import torch, transformers
for folder, auto in {cases!r}:
    model = getattr(transformers, auto).from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        out = model(**torch.load(folder + "/inputs.pt", weights_only=True))
    torch.save([t for t in out.to_tuple() if torch.is_tensor(t)], folder + "/result.pt")
"""


def test_reload_without_hf_oto_in_a_fresh_process(tmp_path):
    cases, expected = [], {}
    for family, class_name, auto in [
        ("gpt2", "GPT2LMHeadModel", "AutoModelForCausalLM"),
        ("gpt_neox", "GPTNeoXForTokenClassification", "AutoModelForTokenClassification"),
        ("phi3", "Phi3ForCausalLM", "AutoModelForCausalLM"),
        ("modernbert", "ModernBertForMaskedLM", "AutoModelForMaskedLM"),
    ]:
        dense, slim, _ = slim_pair(family, getattr(transformers, class_name))
        folder = tmp_path / family
        slim.save_pretrained(folder)
        inputs = {"input_ids": torch.randint(3, 97, (2, 10)), "attention_mask": torch.ones(2, 10, dtype=torch.long)}
        torch.save(inputs, folder / "inputs.pt")
        with torch.no_grad():
            expected[family] = [t for t in dense(**inputs).to_tuple() if torch.is_tensor(t)]
        cases.append((str(folder), auto))
    result = run_fresh(RELOAD.format(cases=cases), hf_oto_importable=False)
    assert result.returncode == 0, result.stderr[-3000:]
    for family in expected:
        actual = torch.load(tmp_path / family / "result.pt", weights_only=True)
        assert len(actual) == len(expected[family])
        for e, a in zip(expected[family], actual):
            assert (e - a).abs().max().item() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_oto_trainer_trains_and_saves_slim(tmp_path, family):
    model_class = transformers.AutoModelForSequenceClassification._model_mapping[type(tiny_model(family).config)]
    model = tiny_model(family, model_class, pad_token_id=0, num_labels=2).train()
    args = make_args(tmp_path / "out", max_steps=8, oto_target_group_sparsity=0.5)
    trainer = OTOTrainer(model=model, args=args, train_dataset=make_dataset(32))
    trainer.train()
    groups = hf_oto.build_groups(trainer.model)
    assert int(groups.zero_norm_mask().sum()) == len(groups) // 2
    trainer.save_model()
    reloaded = hf_oto.load_slim(tmp_path / "out").eval()
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (
        sum(saved["oto_num_key_value_heads"]) + sum(saved["oto_intermediate_sizes"]) == len(groups) - len(groups) // 2
    )
    trainer.model.eval()
    assert_same_outputs(trainer.model, reloaded)
