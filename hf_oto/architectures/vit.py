"""ViT (stretch family): pre-LayerNorm encoder over image patches, GELU MLP."""

from .spec import ArchitectureSpec

VIT = ArchitectureSpec(
    name="vit",
    model_types=("vit",),
    layers="layers",
    attention_module="attention",
    q="attention.q_proj",
    k="attention.k_proj",
    v="attention.v_proj",
    o="attention.o_proj",
    ffn_in=("mlp.fc1",),
    ffn_out="mlp.fc2",
    attention_attrs={"num_attention_heads": "num_heads"},
)
