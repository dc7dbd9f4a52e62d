"""MPNet: a BERT-like encoder whose relative-position bias is computed once, for every head, by the encoder.

The bias table (``encoder.relative_attention_bias``, one column per head) is shared by all layers, so it cannot
belong to one layer's head group. Zeroing a head's query/key/value rows and output columns is exact whatever the
bias (the head's values are zero); the slim model keeps, in each layer, the bias entries of that layer's heads
(`per_head_inputs`). Inference finds everything else; this spec exists to name that input.
"""

from .spec import ArchitectureSpec

MPNET = ArchitectureSpec(
    name="mpnet",
    model_types=("mpnet",),
    layers="encoder.layer",
    attention_module="attention.attn",
    q="attention.attn.q",
    k="attention.attn.k",
    v="attention.attn.v",
    o="attention.attn.o",
    ffn_in=("intermediate.dense",),
    ffn_out="output.dense",
    attention_attrs={"num_attention_heads": "num_heads", "all_head_size": "all_head_size"},
    per_head_inputs={"position_bias": 2},
)
