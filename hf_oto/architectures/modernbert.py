"""ModernBERT: pre-LayerNorm encoder with alternating global/local attention, a fused, blocked ``Wqkv``
(``[Q | K | V]``) and a GLU MLP whose ``Wi`` holds ``[input | gate]``."""

from .spec import ArchitectureSpec, Fused

MODERNBERT = ArchitectureSpec(
    name="modernbert",
    model_types=("modernbert",),
    layers="layers",
    attention_module="attn",
    qkv="attn.Wqkv",
    o="attn.Wo",
    ffn_in=(Fused("mlp.Wi", 2),),
    ffn_out="mlp.Wo",
)
