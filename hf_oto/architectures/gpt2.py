"""GPT-2: pre-LayerNorm decoder whose projections are `Conv1D`s (weights stored as in x out) and whose query, key
and value come from one fused ``c_attn`` (blocked: ``[Q | K | V]``)."""

from .spec import ArchitectureSpec

GPT2 = ArchitectureSpec(
    name="gpt2",
    model_types=("gpt2",),
    layers="h",
    attention_module="attn",
    qkv="attn.c_attn",
    o="attn.c_proj",
    ffn_in=("mlp.c_fc",),
    ffn_out="mlp.c_proj",
    intermediate_field="n_inner",
    attention_attrs={"split_size": "all_head_size", "num_heads": "num_heads"},
)
