"""Exact slimming: for every family, zero pattern and attention implementation, slim logits == dense logits."""

import copy

import pytest
import torch
import transformers
from conftest import TINY_CONFIGS, tiny_model

import hf_oto
from hf_oto.groups import ATTENTION, FFN
from hf_oto.modeling_oto import max_output_difference
from hf_oto.slim import reference_inputs

FAMILIES = list(TINY_CONFIGS)
GQA_FAMILIES = [
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3_text",
    "granite",
    "smollm3",
    "starcoder2",
    "olmo2",
]
DECODER_FAMILIES = [*GQA_FAMILIES, "phi"]


def block_range(groups, layer, structure):
    for block, (start, end) in zip(groups.blocks, groups.block_ranges()):
        if block.layer == layer and block.structure == structure:
            return start, end
    raise KeyError((layer, structure))


def zero_pattern(groups, pattern):
    """Indices of the groups to zero for a named pattern (deterministic)."""
    if pattern == "none":
        return []
    if pattern == "all_heads_layer0":
        return list(range(*block_range(groups, 0, ATTENTION)))
    if pattern == "all_ffn_layer1":
        return list(range(*block_range(groups, 1, FFN)))
    if pattern == "one_kv_group":
        return [block_range(groups, 2, ATTENTION)[0] + 1]
    if pattern == "random":
        generator = torch.Generator().manual_seed(1)
        return torch.randperm(len(groups), generator=generator)[: len(groups) // 2].tolist()
    if pattern == "everything":
        return list(range(len(groups)))
    raise ValueError(pattern)


def assert_same_outputs(dense, slim, inputs=None):
    inputs = inputs or reference_inputs(dense, batch=3, seq_len=12, seed=7)
    with torch.no_grad():
        expected, actual = dense(**inputs), slim(**inputs)
    expected = [t for t in expected.to_tuple() if torch.is_tensor(t) and t.is_floating_point()]
    actual = [t for t in actual.to_tuple() if torch.is_tensor(t) and t.is_floating_point()]
    assert len(expected) == len(actual) > 0
    for e, a in zip(expected, actual):
        assert e.shape == a.shape
        assert (e - a).abs().max().item() <= 1e-5


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize(
    "pattern", ["none", "all_heads_layer0", "all_ffn_layer1", "one_kv_group", "random", "everything"]
)
@pytest.mark.parametrize("family", FAMILIES)
def test_slim_logits_equal_dense(family, pattern, attn):
    dense = tiny_model(family, attn_implementation=attn)
    groups = hf_oto.build_groups(dense)
    groups.zero_(zero_pattern(groups, pattern))
    slim, report = hf_oto.slim_model(dense, groups)
    assert_same_outputs(dense, slim)
    # slim_model's own check compared every layer's hidden states, not only the final outputs
    checked = slim.oto_reference["outputs"].hidden_states
    assert checked is not None and len(checked) == dense.config.num_hidden_layers + 1
    zero = groups.zero_norm_mask()
    # every zero group is physically gone, every non-zero group is kept
    assert sum(report.slim.kv_heads) + sum(report.slim.ffn) == int((~zero).sum())
    if pattern == "none":
        assert report.slim.params == report.dense.params
    else:
        assert report.slim.params < report.dense.params
        assert report.slim.flops_per_token < report.dense.flops_per_token
    if pattern == "all_heads_layer0":
        assert report.slim.heads[0] == 0 and report.slim.kv_heads[0] == 0
    if pattern == "all_ffn_layer1":
        assert report.slim.ffn[1] == 0


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_check_is_relative_to_output_scale(family):
    """Trained models' hidden states reach 10 to ~26,000, where a slimmer matmul's summation order alone moves them by
    more than 1e-5. The check measures differences relative to each output's scale: large activations pass,
    while removing a group at the weights' usual scale is still far above the tolerance."""
    dense = tiny_model(family)
    with torch.no_grad():
        for name, parameter in dense.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                parameter.mul_(300.0)  # hidden states of magnitude ~300
    groups = hf_oto.build_groups(dense)
    groups.zero_(zero_pattern(groups, "random"))
    slim, report = hf_oto.slim_model(dense, groups)
    inputs = reference_inputs(dense)
    with torch.no_grad():
        expected = dense(**inputs, output_hidden_states=True).hidden_states
        actual = slim(**inputs, output_hidden_states=True).hidden_states
    absolute = max((e - a).abs().max().item() for e, a in zip(expected, actual))
    assert absolute > 1e-5, "summation order did not change the outputs here: this test is moot"
    assert report.max_output_diff <= 1e-5

    # Had slimming removed a group at the weights' usual scale, the relative measure would still see it.
    wrong = copy.deepcopy(dense)
    wrong_groups = hf_oto.build_groups(wrong)
    start, end = block_range(wrong_groups, 1, FFN)
    victim = next(i for i in range(start, end) if wrong_groups.zero_norm_mask()[i])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, entries in wrong_groups[victim].slices:
            entries.copy_(0.02 * torch.randn(entries.shape, generator=generator))  # the initializer's scale
        reference = wrong(**inputs, output_hidden_states=True)
        assert max_output_difference(reference, slim(**inputs, output_hidden_states=True)) > 1e-5


def test_input_model_is_left_untouched():
    dense = tiny_model("bert")
    groups = hf_oto.build_groups(dense)
    groups.zero_(zero_pattern(groups, "random"))
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    slim, _ = hf_oto.slim_model(dense, groups)
    with torch.no_grad():
        for parameter in slim.parameters():
            parameter.add_(1.0)
    for key, value in dense.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert type(dense) is transformers.BertModel


@pytest.mark.parametrize("family", GQA_FAMILIES)
def test_single_query_head_zero_is_kept_and_exact(family):
    """Zeroing one query head of a GQA group is not a whole group: nothing is removed, outputs still match."""
    dense = tiny_model(family)
    layer = dense.layers[1].self_attn
    head_dim = layer.head_dim
    with torch.no_grad():
        layer.q_proj.weight[head_dim : 2 * head_dim] = 0
        layer.o_proj.weight[:, head_dim : 2 * head_dim] = 0
    slim, report = hf_oto.slim_model(dense)
    assert report.slim.heads == report.dense.heads
    assert_same_outputs(dense, slim)


@pytest.mark.parametrize("family", GQA_FAMILIES)
def test_mha_llama_single_head_group(family):
    """With as many KV heads as query heads, every group is one head and a single head is removed."""
    dense = tiny_model(family, num_key_value_heads=4)
    groups = hf_oto.build_groups(dense)
    assert str(groups[len(groups) - 1]).startswith("layer 2 ffn neuron")
    start, _ = block_range(groups, 1, ATTENTION)
    assert str(groups[start + 3]) == "layer 1 attention head 3"
    groups.zero_([start + 3])
    slim, report = hf_oto.slim_model(dense, groups)
    assert report.slim.heads[1] == 3 and report.slim.kv_heads[1] == 3
    assert slim.layers[1].self_attn.num_key_value_groups == 1
    assert_same_outputs(dense, slim)


@pytest.mark.parametrize("family", GQA_FAMILIES)
def test_gqa_groups_and_cached_attributes(family):
    dense = tiny_model(family)  # 4 query heads, 2 KV heads
    groups = hf_oto.build_groups(dense)
    start, end = block_range(groups, 0, ATTENTION)
    assert end - start == 2
    assert str(groups[start + 1]) == "layer 0 attention kv group 1 (query heads 2-3)"
    groups.zero_([start])
    slim, report = hf_oto.slim_model(dense, groups)
    attention = slim.layers[0].self_attn
    assert (report.slim.heads[0], report.slim.kv_heads[0]) == (2, 1)
    assert attention.num_key_value_groups == 2
    assert attention.q_proj.out_features == 2 * attention.head_dim
    assert attention.k_proj.out_features == attention.head_dim


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_generate_matches_dense(family):
    dense = tiny_model(family, transformers.AutoModelForCausalLM._model_mapping[type(tiny_model(family).config)])
    groups = hf_oto.build_groups(dense)
    groups.zero_(zero_pattern(groups, "all_heads_layer0") + zero_pattern(groups, "one_kv_group")[:1])
    slim, _ = hf_oto.slim_model(dense, groups)
    prompt = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(prompt)
    kwargs = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(dense.generate(prompt, **kwargs), slim.generate(prompt, **kwargs))


def task_classes(families=FAMILIES):
    """(family, class name) for every task head the Auto classes map each family to."""
    from transformers.models.auto import modeling_auto

    from hf_oto.hub import _AUTO_CLASSES

    cases = []
    for family in families:
        for mapping_name in _AUTO_CLASSES.values():
            name = getattr(modeling_auto, mapping_name).get(family)
            if name and name not in {c[1] for c in cases if c[0] == family}:
                cases.append((family, name))
    return cases


@pytest.mark.parametrize("family,class_name", task_classes())
def test_every_task_head(family, class_name):
    model_class = getattr(transformers, class_name)
    dense = tiny_model(family, model_class)
    groups = hf_oto.build_groups(dense)
    groups.zero_(zero_pattern(groups, "random"))
    slim, report = hf_oto.slim_model(dense, groups)
    assert type(slim).__name__ == "OTO" + class_name
    assert isinstance(slim, model_class)
    assert report.slim.params < report.dense.params
    assert_same_outputs(dense, slim)


def test_slim_of_slim_and_training_mode():
    dense = tiny_model("bert").train()
    groups = hf_oto.build_groups(dense)
    groups.zero_(zero_pattern(groups, "random"))
    slim, _ = hf_oto.slim_model(dense, groups)
    assert slim.training
    slim.eval()
    again_groups = hf_oto.build_groups(slim)
    again_groups.zero_([0])
    slimmer, report = hf_oto.slim_model(slim, again_groups)
    assert sum(report.slim.kv_heads) + sum(report.slim.ffn) == len(again_groups) - 1
    assert_same_outputs(slim, slimmer)


def test_report_counts_and_str():
    dense = tiny_model("bert")
    groups = hf_oto.build_groups(dense)
    groups.zero_(zero_pattern(groups, "all_heads_layer0"))
    _, report = hf_oto.slim_model(dense, groups, seq_len=64)
    assert report.dense.heads == [4, 4, 4] and report.slim.heads == [0, 4, 4]
    assert report.dense.ffn == report.slim.ffn == [24, 24, 24]
    # four 32x32 projections less in layer 0 (Q, K, V with biases, O without)
    assert report.dense.params - report.slim.params == 4 * 32 * 32 + 3 * 32
    head_dim, seq = 8, 64
    assert report.dense.flops_per_token - report.slim.flops_per_token == 2 * 4 * 32 * 32 + 4 * seq * 4 * head_dim
    text = str(report)
    assert "0/4" in text and "FLOPs per token (seq len 64)" in text


def test_groupset_interface(capsys):
    dense = tiny_model("bert")
    groups = hf_oto.build_groups(dense)
    assert len(groups) == 3 * (4 + 24) and groups.norms().shape == (len(groups),)
    assert str(groups[0]) == "layer 0 attention head 0" and str(groups[4 + 23]) == "layer 0 ffn neuron 23"
    groups.zero_([1, 4 + 5, 28 + 2])  # layer 0 head 1, layer 0 neuron 5, layer 1 head 2
    norms = groups.norms()
    assert norms[1] == 0 and norms[9] == 0 and norms[30] == 0
    assert int((norms == 0).sum()) == 3
    print(groups)
    lines = capsys.readouterr().out.splitlines()
    assert "0 | 3/4 heads | 23/24 neurons" in lines[2]
    assert "1 | 3/4 heads | 24/24 neurons" in lines[3]
    assert "2 | 4/4 heads | 24/24 neurons" in lines[4]
