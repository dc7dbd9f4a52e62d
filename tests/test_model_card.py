"""The accounting module and the model card: one cost formula, one set of report rows formatted everywhere, the
report stored in and read back from the config, the card's Hub metadata and its plot."""

import struct
import zlib

import pytest
import transformers
from conftest import tiny_model
from huggingface_hub import ModelCard
from test_slim import zero_pattern

import hf_oto
from hf_oto.accounting import SlimReport, removed_costs
from hf_oto.cli import format_inspection
from hf_oto.model_card import layer_fractions, layers_png, render_model_card, write_folder_card
from hf_oto.slim_folder import read_slim_config


def slimmed(model_type: str, pattern: str = "random", seq_len: int = 64):
    dense = tiny_model(model_type)
    groups = hf_oto.build_groups(dense)
    groups.zero_(zero_pattern(groups, pattern))
    slim, report = hf_oto.slim_model(dense, groups, seq_len=seq_len)
    return dense, groups, slim, report


@pytest.mark.parametrize("model_type", ["bert", "llama", "distilbert"])
def test_removed_costs_equal_dense_minus_slim(model_type):
    """The costs that training logs from the zero masks equal what physically slimming removes."""
    _, groups, _, report = slimmed(model_type)
    params, flops = removed_costs(groups, groups.zero_norm_mask(), seq_len=64)
    assert params > 0 and flops > 0
    assert params == report.dense.params - report.slim.params
    assert flops == report.dense.flops_per_token - report.slim.flops_per_token


def test_report_round_trips_through_the_saved_config(tmp_path):
    _, _, slim, report = slimmed("llama")
    slim.save_pretrained(tmp_path)
    config = read_slim_config(tmp_path)
    assert SlimReport.from_config(config) == report
    assert SlimReport.from_config({**config, "oto_report": None}) is None


def test_every_rendering_formats_the_same_rows(tmp_path):
    """str(report), the model card and `hf-oto inspect` show each row of `rows()` and `layer_rows()`."""
    _, _, slim, report = slimmed("bert")
    slim.save_pretrained(tmp_path)
    texts = {
        "str": str(report),
        "card": render_model_card(
            report, title="t", repo_id="t", auto_class="AutoModel", base_model=None, base_model_type="bert", settings={}
        ),
        "inspect": format_inspection(str(tmp_path), read_slim_config(tmp_path)),
    }
    for name, text in texts.items():
        for row in report.rows():
            assert row.label in text and f"{row.dense:,}" in text and f"{row.slim:,}" in text, name
            assert row.kept in text, name
        lines = text.splitlines()
        for row in report.layer_rows():
            fractions = [f"{row.heads[0]}/{row.heads[1]}", f"{row.ffn[0]}/{row.ffn[1]}"]
            assert any(all(f in line for f in fractions) for line in lines), (name, row)


CARD_ARGS = dict(
    title="me/tiny-oto",
    repo_id="me/tiny-oto",
    auto_class="AutoModelForQuestionAnswering",
    base_model="sentence-transformers/all-MiniLM-L6-v2",
    base_model_type="bert",
    settings={"oto_target_group_sparsity": 0.5},
)


def test_card_parses_back_with_modelcard_and_carries_the_eval_results():
    *_, report = slimmed("bert")
    metrics = {"exact_match": 50.39, "f1": 63.49}
    text = render_model_card(
        report,
        **CARD_ARGS,
        metrics=metrics,
        datasets=["squad"],
        dataset_name="SQuAD v1.1 dev, article-disjoint split",
        dataset_split="validation",
        license="apache-2.0",
    )
    card = ModelCard(text)
    assert card.text.lstrip().startswith("# me/tiny-oto\n")
    data = card.data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2" and data.license == "apache-2.0"
    assert data.pipeline_tag == "question-answering" and data.model_name == "me/tiny-oto"
    results = {r.metric_type: r for r in data.eval_results}
    assert {k: r.metric_value for k, r in results.items()} == metrics
    for result in results.values():
        assert result.task_type == "question-answering" and result.dataset_type == "squad"
        assert result.dataset_name == "SQuAD v1.1 dev, article-disjoint split" and result.dataset_split == "validation"
    assert "| f1 | 63.49 |" in card.text


def test_card_without_a_dataset_keeps_metrics_out_of_the_model_index():
    """The Hub's model-index needs a dataset; without one the metrics are only in the text, never invented."""
    *_, report = slimmed("bert")
    card = ModelCard(render_model_card(report, **CARD_ARGS, metrics={"eval_f1": 60.0}))
    assert card.data.eval_results is None and "model-index" not in card.content.split("---")[1]
    assert "| eval_f1 | 60 |" in card.text


def _decode_png(data: bytes) -> list[list[tuple[int, int, int]]]:
    """A minimal PNG reader (8-bit RGB, filter 0, as layers_png writes), checking signature and every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks[kind] = chunks.get(kind, b"") + body
        position += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, color) == (8, 2) and b"IEND" in chunks
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = 1 + 3 * width
    assert len(raw) == height * stride
    rows = [raw[y * stride + 1 : (y + 1) * stride] for y in range(height)]
    return [[tuple(row[3 * x : 3 * x + 3]) for x in range(width)] for row in rows]


def test_plot_bars_have_the_kept_fractions():
    """The PNG decodes, and each bar's height is its layer's kept fraction of the plot height."""
    from hf_oto import model_card

    fractions = [(1.0, 0.5), (0.0, 0.25)]
    image = _decode_png(layers_png(fractions))
    base = model_card.MARGIN + model_card.PLOT_HEIGHT

    def bar_height(x: int, color) -> int:
        return sum(1 for y in range(base) if image[y][x] == color)

    group = 2 * model_card.BAR + model_card.GAP + model_card.SPACING
    for index, (heads, ffn) in enumerate(fractions):
        left = model_card.MARGIN + index * group + model_card.SPACING // 2
        heads_x, ffn_x = left + 1, left + model_card.BAR + model_card.GAP + 1
        assert bar_height(heads_x, model_card.HEADS_COLOR) == round(heads * model_card.PLOT_HEIGHT)
        assert bar_height(ffn_x, model_card.FFN_COLOR) == round(ffn * model_card.PLOT_HEIGHT)


def test_layer_fractions_of_a_report():
    *_, report = slimmed("bert", "all_heads_layer0")
    assert layer_fractions(report) == [(0.0, 1.0), (1.0, 1.0), (1.0, 1.0)]


def test_card_of_a_saved_folder(tmp_path):
    """write_folder_card renders a saved slim folder's card from its config.json alone (as
    bench/make_reference_cards.py does for the reference models): titled with the target folder's name, with the
    recorded accounting and settings, the task's Auto class, the eval results and the plot."""
    dense = tiny_model("bert", transformers.BertForQuestionAnswering)
    groups = hf_oto.build_groups(dense)
    groups.zero_(zero_pattern(groups, "random"))
    slim, report = hf_oto.slim_model(dense, groups, settings={"oto_target_group_sparsity": 0.5})
    slim.save_pretrained(tmp_path / "saved")
    write_folder_card(
        str(tmp_path / "saved"), str(tmp_path / "tiny-squad-oto50"), metrics={"f1": 12.5}, datasets=["squad"]
    )
    card = ModelCard.load(tmp_path / "tiny-squad-oto50" / "README.md")
    assert card.text.lstrip().startswith("# tiny-squad-oto50\n")
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("f1", 12.5)]
    assert "AutoModelForQuestionAnswering.from_pretrained" in card.text
    assert "| `oto_target_group_sparsity` | `0.5` |" in card.text
    assert f"max difference {report.max_output_diff:.1e}" in card.text
    for row in report.rows():
        assert f"| {row.label} | {row.dense:,} | {row.slim:,} | {row.kept} |" in card.text
    png = (tmp_path / "tiny-squad-oto50" / "oto_layers.png").read_bytes()
    assert png == layers_png(layer_fractions(report))
