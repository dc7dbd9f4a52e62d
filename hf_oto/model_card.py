"""The model card of a slim model: README.md rendered from `model_cards/oto_model_card.md`, and its plot.

The template ships inside the package (hf_oto/model_cards/) so that installed wheels can render it.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from .slim import SlimReport

TEMPLATE_PATH = os.path.join(os.path.dirname(__file__), "model_cards", "oto_model_card.md")
PLOT_FILE = "oto_layers.png"
BASE_TAGS = ["hf-oto", "pruning", "structured-pruning"]


def _ratio(kept: int, total: int) -> str:
    return f"{kept / total:.1%}" if total else "-"


def render_model_card(
    report: SlimReport,
    *,
    model_name: str,
    repo_id: str,
    auto_class: str,
    base_model: str | None,
    base_model_type: str,
    settings: dict[str, Any],
    metrics: dict[str, float] | None = None,
    datasets: list[str] | None = None,
    tags: list[str] | None = None,
    language: str | None = None,
    license: str | None = None,
    plot_file: str = PLOT_FILE,
) -> str:
    """README.md text: YAML metadata, dense → slim accounting, per-layer table, settings, metrics, loading."""
    metadata: dict[str, Any] = {"library_name": "transformers"}
    if base_model:
        metadata["base_model"] = base_model
    metadata["tags"] = list(dict.fromkeys([*BASE_TAGS, *(tags or [])]))
    if datasets:
        metadata["datasets"] = list(datasets)
    if language:
        metadata["language"] = language
    if license:
        metadata["license"] = license
    if metrics:
        metadata["metrics"] = sorted({name.removeprefix("eval_").split("_")[0] for name in metrics})
        metadata["model-index"] = [
            {
                "name": model_name,
                "results": [
                    {
                        "task": {"type": auto_class.removeprefix("AutoModelFor").lower() or "model"},
                        "metrics": [
                            {"type": name.removeprefix("eval_"), "value": value, "name": name}
                            for name, value in sorted(metrics.items())
                            if isinstance(value, (int, float))
                        ],
                    }
                ],
            }
        ]
    d, s = report.dense, report.slim
    layer_rows = "\n".join(
        f"| {i} | {s.heads[i]}/{d.heads[i]} | {s.kv_heads[i]}/{d.kv_heads[i]} | {s.ffn[i]}/{d.ffn[i]} |"
        for i in range(len(d.heads))
    )
    settings_rows = "\n".join(f"| `{key}` | `{value}` |" for key, value in settings.items()) or "| - | - |"
    if metrics:
        metrics_section = (
            "Metrics of the slim model, from the evaluation run by the trainer:\n\n| metric | value |\n|---|---:|\n"
        )
        metrics_section += "\n".join(
            f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |"
            for name, value in sorted(metrics.items())
        )
    else:
        metrics_section = "No evaluation was run during training."
    with open(TEMPLATE_PATH, encoding="utf-8") as handle:
        template = handle.read()
    return template.format(
        metadata=yaml.safe_dump(metadata, sort_keys=False).strip(),
        model_name=model_name,
        base_model=base_model or "trained from scratch",
        base_model_type=base_model_type,
        max_output_diff=f"{report.max_output_diff:.1e}",
        params_dense=f"{d.params:,}",
        params_slim=f"{s.params:,}",
        params_ratio=_ratio(s.params, d.params),
        nonemb_dense=f"{d.non_embedding_params:,}",
        nonemb_slim=f"{s.non_embedding_params:,}",
        nonemb_ratio=_ratio(s.non_embedding_params, d.non_embedding_params),
        seq_len=report.seq_len,
        flops_dense=f"{d.flops_per_token:,}",
        flops_slim=f"{s.flops_per_token:,}",
        flops_ratio=_ratio(s.flops_per_token, d.flops_per_token),
        plot_file=plot_file,
        layer_rows=layer_rows,
        settings_rows=settings_rows,
        metrics_section=metrics_section,
        auto_class=auto_class,
        repo_id=repo_id,
    )


def plot_layers(report: SlimReport, path: str) -> bool:
    """Bar chart of heads and FFN neurons kept per layer (fraction of dense). False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    d, s = report.dense, report.slim
    layers = list(range(len(d.heads)))
    heads = [s.heads[i] / d.heads[i] if d.heads[i] else 0 for i in layers]
    ffn = [s.ffn[i] / d.ffn[i] if d.ffn[i] else 0 for i in layers]
    figure, axis = plt.subplots(figsize=(max(4, 0.5 * len(layers) + 2), 3))
    width = 0.4
    axis.bar([i - width / 2 for i in layers], heads, width, label="attention heads kept")
    axis.bar([i + width / 2 for i in layers], ffn, width, label="FFN neurons kept")
    axis.set_xlabel("layer")
    axis.set_ylabel("fraction of dense")
    axis.set_ylim(0, 1.05)
    axis.set_xticks(layers)
    axis.legend(loc="lower right", fontsize="small")
    axis.set_title("Structure kept per layer (hf_oto)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
