"""Phi-3: LLaMA-like decoder with a fused, blocked ``qkv_proj`` (``[Q: heads | K: kv heads | V: kv heads]``, GQA)
and a fused ``gate_up_proj`` (``[gate | up]``). Its attention reads ``config.num_attention_heads`` in forward,
which the slim model answers per layer (`modeling_oto.LayerConfig`)."""

from .spec import ArchitectureSpec, Fused

PHI3 = ArchitectureSpec(
    name="phi3",
    model_types=("phi3",),
    layers="layers",
    attention_module="self_attn",
    qkv="self_attn.qkv_proj",
    o="self_attn.o_proj",
    ffn_in=(Fused("mlp.gate_up_proj", 2),),
    ffn_out="mlp.down_proj",
    num_kv_heads_field="num_key_value_heads",
    attention_attrs={"num_key_value_groups": "num_kv_groups", "num_key_value_heads": "num_kv_heads"},
)
