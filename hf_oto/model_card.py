"""The model card of a slim model: README.md from the template in `model_cards/`, and its per-layer plot.

The metadata is a `huggingface_hub.ModelCardData` (with `EvalResult`s for the model-index), so the YAML is the
one the Hub reads and validates. The body formats `SlimReport.rows()` / `layer_rows()`. The plot is a PNG drawn
here with zlib alone, so every install writes it and the card never links a missing image.

The template lives in the top-level `model_cards/` folder of the repository; wheels install it as
`hf_oto/model_cards/` (see pyproject.toml), and a source checkout reads it from the repository.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .accounting import LayerRow, SlimReport, kept_ratio

TEMPLATE_NAME = "oto_model_card.md"
PLOT_FILE = "oto_layers.png"
BASE_TAGS = ["hf-oto", "pruning", "structured-pruning"]
TASK_BY_AUTO_CLASS = {
    "AutoModelForQuestionAnswering": "question-answering",
    "AutoModelForSequenceClassification": "text-classification",
    "AutoModelForTokenClassification": "token-classification",
    "AutoModelForMultipleChoice": "multiple-choice",
    "AutoModelForMaskedLM": "fill-mask",
    "AutoModelForCausalLM": "text-generation",
    "AutoModelForImageClassification": "image-classification",
}


def template_path() -> str:
    """The card template: installed next to the package (wheels), else the repository's `model_cards/`."""
    package = os.path.dirname(os.path.abspath(__file__))
    for folder in (os.path.join(package, "model_cards"), os.path.join(os.path.dirname(package), "model_cards")):
        path = os.path.join(folder, TEMPLATE_NAME)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"the model card template {TEMPLATE_NAME} is missing; reinstall hf-oto")


def card_metadata(
    *,
    model_name: str,
    auto_class: str,
    base_model: str | None,
    metrics: Mapping[str, Any] | None,
    datasets: Sequence[str] | None,
    dataset_name: str | None = None,
    dataset_split: str | None = None,
    tags: Sequence[str] | None = None,
    language: str | None = None,
    license: str | None = None,
) -> ModelCardData:
    """The card's YAML metadata. Eval results go into the model-index only with a dataset to attach them to (the
    Hub requires one); without it the metrics are listed in the card's text only."""
    task = TASK_BY_AUTO_CLASS.get(auto_class)
    numbers = {
        name: value
        for name, value in sorted((metrics or {}).items())
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    eval_results = None
    if numbers and datasets:
        eval_results = [
            EvalResult(
                task_type=task or "other",
                dataset_type=datasets[0],
                dataset_name=dataset_name or datasets[0],
                dataset_split=dataset_split,
                metric_type=name.removeprefix("eval_"),
                metric_name=name,
                metric_value=value,
            )
            for name, value in numbers.items()
        ]
    return ModelCardData(
        library_name="transformers",
        base_model=base_model or None,
        tags=list(dict.fromkeys([*BASE_TAGS, *(tags or [])])),
        datasets=list(datasets) if datasets else None,
        language=language,
        license=license,
        metrics=sorted({name.removeprefix("eval_") for name in numbers}) or None,
        pipeline_tag=task,
        model_name=model_name if eval_results else None,
        eval_results=eval_results,
    )


def _table(rows: list[str]) -> str:
    return "\n".join(rows)


def render_model_card(
    report: SlimReport,
    *,
    title: str,
    repo_id: str,
    auto_class: str,
    base_model_type: str,
    settings: Mapping[str, Any],
    base_model: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    metrics_source: str = "the evaluation run by the trainer",
    datasets: Sequence[str] | None = None,
    dataset_name: str | None = None,
    dataset_split: str | None = None,
    tags: Sequence[str] | None = None,
    language: str | None = None,
    license: str | None = None,
    plot_file: str = PLOT_FILE,
) -> str:
    """README.md text: metadata, dense → slim accounting, per-layer table and plot, settings, metrics, loading.

    `title` is the card's heading (the Hub repo id, or the saved folder's name); `repo_id` is what the loading
    snippets pass to `from_pretrained`."""
    metadata = card_metadata(
        model_name=title,
        auto_class=auto_class,
        base_model=base_model,
        metrics=metrics,
        datasets=datasets,
        dataset_name=dataset_name,
        dataset_split=dataset_split,
        tags=tags,
        language=language,
        license=license,
    )
    if report.max_output_diff is None:
        exactness = "Its outputs were not compared with the group-sparse model's (slimmed with `verify=False`)."
    else:
        exactness = (
            "Its outputs equal those of the trained group-sparse model (checked before saving on every layer's "
            f"hidden states: max difference {report.max_output_diff:.1e}, relative to their scale)."
        )
    if metrics:
        metrics_section = f"Metrics of the slim model, from {metrics_source}.\n\n| metric | value |\n|---|---:|\n"
        metrics_section += _table(
            [
                f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |"
                for name, value in sorted(metrics.items())
            ]
        )
    else:
        metrics_section = "No evaluation was run during training."
    with open(template_path(), encoding="utf-8") as handle:
        template = handle.read()
    body = template.format(
        title=title,
        exactness=exactness,
        base_model=base_model or "trained from scratch",
        base_model_type=base_model_type,
        cost_rows=_table([f"| {row.label} | {row.dense:,} | {row.slim:,} | {row.kept} |" for row in report.rows()]),
        plot_file=plot_file,
        layer_rows=_table(
            [
                f"| {row.layer} | {LayerRow.fraction(row.heads)} | {LayerRow.fraction(row.kv_heads)} | "
                f"{LayerRow.fraction(row.ffn)} |"
                for row in report.layer_rows()
            ]
        ),
        settings_rows=_table([f"| `{key}` | `{value}` |" for key, value in settings.items()]) or "| - | - |",
        metrics_section=metrics_section,
        auto_class=auto_class,
        repo_id=repo_id,
    )
    return str(ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n{body}"))


# ---------------------------------------------------------------------------------------------------- the plot

HEADS_COLOR, FFN_COLOR = (31, 119, 180), (255, 127, 14)
GRID_COLOR, AXIS_COLOR, TEXT_COLOR, BACKGROUND = (200, 200, 200), (60, 60, 60), (60, 60, 60), (255, 255, 255)
# 3x5 pixel digits for the layer numbers under the bars (rows top to bottom, 3 bits each, left bit first)
DIGITS = {
    "0": (7, 5, 5, 5, 7),
    "1": (2, 6, 2, 2, 7),
    "2": (7, 1, 7, 4, 7),
    "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1),
    "5": (7, 4, 7, 1, 7),
    "6": (7, 4, 7, 5, 7),
    "7": (7, 1, 1, 1, 1),
    "8": (7, 5, 7, 5, 7),
    "9": (7, 5, 7, 1, 7),
}
BAR, GAP, SPACING, MARGIN, PLOT_HEIGHT, SCALE = 10, 2, 10, 24, 150, 2


def layer_fractions(report: SlimReport) -> list[tuple[float, float]]:
    """Per layer: (fraction of attention heads kept, fraction of FFN neurons kept)."""
    d, s = report.dense, report.slim
    return [(kept_ratio(s.heads[i], d.heads[i]), kept_ratio(s.ffn[i], d.ffn[i])) for i in range(len(d.heads))]


def encode_png(pixels: list[bytearray], width: int) -> bytes:
    """An 8-bit RGB PNG of `pixels` (rows of 3·width bytes), with zlib only (also used by bench/plot_frontier.py)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, len(pixels), 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)  # filter type 0 on every row
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def layers_png(fractions: Sequence[tuple[float, float]]) -> bytes:
    """Bar chart PNG: per layer a blue bar (heads kept) and an orange bar (FFN neurons kept), on grey lines at
    0, 50% and 100%, with the layer number below."""
    group = 2 * BAR + GAP
    width = 2 * MARGIN + len(fractions) * (group + SPACING)
    height = MARGIN + PLOT_HEIGHT + 8 + 5 * SCALE + MARGIN // 2
    base = MARGIN + PLOT_HEIGHT  # the row of the 0 line
    pixels = [bytearray(BACKGROUND * width) for _ in range(height)]

    def fill(x0: int, x1: int, y0: int, y1: int, color: tuple[int, int, int]) -> None:
        for y in range(max(y0, 0), min(y1, height)):
            pixels[y][3 * x0 : 3 * x1] = bytes(color) * (x1 - x0)

    for level in (0.5, 1.0):
        fill(
            MARGIN // 2,
            width - MARGIN // 2,
            base - round(level * PLOT_HEIGHT),
            base - round(level * PLOT_HEIGHT) + 1,
            GRID_COLOR,
        )
    for index, (heads, ffn) in enumerate(fractions):
        left = MARGIN + index * (group + SPACING) + SPACING // 2
        fill(left, left + BAR, base - round(heads * PLOT_HEIGHT), base, HEADS_COLOR)
        fill(left + BAR + GAP, left + group, base - round(ffn * PLOT_HEIGHT), base, FFN_COLOR)
        label = str(index)
        x = left + group // 2 - (len(label) * 4 * SCALE - SCALE) // 2
        for digit in label:
            for row, bits in enumerate(DIGITS[digit]):
                for column in range(3):
                    if bits >> (2 - column) & 1:
                        top = base + 8 + row * SCALE
                        fill(x + column * SCALE, x + (column + 1) * SCALE, top, top + SCALE, TEXT_COLOR)
            x += 4 * SCALE
    fill(MARGIN // 2, width - MARGIN // 2, base, base + 1, AXIS_COLOR)
    return encode_png(pixels, width)


def plot_layers(report: SlimReport, path: str) -> None:
    """Write the per-layer bar chart of `report` to `path` (PNG)."""
    with open(path, "wb") as handle:
        handle.write(layers_png(layer_fractions(report)))


# ------------------------------------------------------------------------------------------- a saved folder's card


def auto_class_of(config: Mapping[str, Any]) -> str:
    """The Auto class that loads a saved slim folder (e.g. AutoModelForSequenceClassification)."""
    import transformers

    from .configuration_oto import OTO_PREFIX
    from .modeling_oto import auto_class_name

    architecture = (config.get("architectures") or [""])[0]
    stock = getattr(transformers, architecture.removeprefix(OTO_PREFIX), None)
    return auto_class_name(stock) if isinstance(stock, type) else "AutoModel"


def write_folder_card(folder: str, target: str, *, title: str | None = None, **card: Any) -> None:
    """Render the card of the slim model saved in `folder` from its config.json alone, into `target`
    (README.md and the plot). `card` takes `render_model_card`'s metadata arguments (metrics, datasets...)."""
    from .slim_folder import read_slim_config

    config = read_slim_config(folder)
    report = SlimReport.from_config(config)
    if report is None:
        raise ValueError(f"{folder}/config.json records no dense/slim report (oto_report); save it with hf_oto")
    title = title or os.path.basename(os.path.abspath(target))
    text = render_model_card(
        report,
        title=title,
        repo_id=card.pop("repo_id", title),
        auto_class=auto_class_of(config),
        base_model_type=config.get("oto_base_model_type", "?"),
        settings=config.get("oto_settings") or {},
        **card,
    )
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    plot_layers(report, os.path.join(target, PLOT_FILE))
