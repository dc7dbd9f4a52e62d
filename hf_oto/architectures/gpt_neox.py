"""GPT-NeoX (Pythia): parallel-residual decoder whose fused ``query_key_value`` is interleaved per head
(``[h0: q, k, v | h1: q, k, v | ...]``, read back with ``view(..., heads, 3·head_size)``): one contiguous chunk
per head."""

from .spec import ArchitectureSpec

GPT_NEOX = ArchitectureSpec(
    name="gpt_neox",
    model_types=("gpt_neox",),
    layers="layers",
    attention_module="attention",
    qkv="attention.query_key_value",
    qkv_layout="interleaved",
    o="attention.dense",
    ffn_in=("mlp.dense_h_to_4h",),
    ffn_out="mlp.dense_4h_to_h",
)
