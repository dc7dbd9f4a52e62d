"""LLaMA family (LLaMA, Mistral, Qwen2): pre-RMSNorm decoder, rotary GQA attention, gated SiLU MLP.

A group is one key/value head together with the query heads that share it, so every layer keeps the
same number of query heads per key/value head.
"""

from .spec import ArchitectureSpec

LLAMA = ArchitectureSpec(
    name="llama",
    model_types=("llama", "mistral", "qwen2"),
    layers="layers",
    attention_module="self_attn",
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    o="self_attn.o_proj",
    ffn_in=("mlp.gate_proj", "mlp.up_proj"),
    ffn_out="mlp.down_proj",
    num_kv_heads_field="num_key_value_heads",
    attention_attrs={"num_key_value_groups": "num_kv_groups"},
)
