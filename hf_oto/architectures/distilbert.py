"""DistilBERT: BERT-like, with its own module and config names."""

from .spec import ArchitectureSpec

DISTILBERT = ArchitectureSpec(
    name="distilbert",
    model_types=("distilbert",),
    layers="transformer.layer",
    attention_module="attention",
    q="attention.q_lin",
    k="attention.k_lin",
    v="attention.v_lin",
    o="attention.out_lin",
    ffn_in=("ffn.lin1",),
    ffn_out="ffn.lin2",
    num_heads_field="n_heads",
    intermediate_field="hidden_dim",
    hidden_field="dim",
    num_layers_field="n_layers",
    attention_attrs={"n_heads": "num_heads"},
)
