"""BERT and its look-alikes (RoBERTa, ELECTRA, XLM-RoBERTa): post-LayerNorm encoder, GELU FFN."""

from .spec import ArchitectureSpec

BERT = ArchitectureSpec(
    name="bert",
    model_types=("bert", "roberta", "electra", "xlm-roberta"),
    layers="encoder.layer",
    attention_module="attention.self",
    q="attention.self.query",
    k="attention.self.key",
    v="attention.self.value",
    o="attention.output.dense",
    ffn_in=("intermediate.dense",),
    ffn_out="output.dense",
    attention_attrs={"num_attention_heads": "num_heads", "all_head_size": "all_head_size"},
)
