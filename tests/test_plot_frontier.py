"""bench/plot_frontier.py: results.json rows → dense / OTO / OTO+KD series → a PNG that decodes, with each series
drawn in its colour at the expected place."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from test_model_card import _decode_png

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "plot_frontier.py"
ROWS = [
    {"run": "dense", "target": None, "kd": False, "f1": 64.0, "speedup": 1.0},
    {"run": "oto_0.5", "target": 0.5, "kd": False, "f1": 61.0, "speedup": 1.9},
    {"run": "oto_0.3", "target": 0.3, "f1": 62.5, "speedup": 1.4},  # rows written before KD existed: no "kd"
    {"run": "oto_kd_0.5", "target": 0.5, "kd": True, "f1": 63.0, "speedup": 1.9},
    {"run": "oto_kd_0.3", "target": 0.3, "kd": True, "accuracy": 90.0, "speedup": 1.4},  # no f1: skipped
]


@pytest.fixture(scope="module")
def plot():
    spec = importlib.util.spec_from_file_location("plot_frontier", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_become_series(plot):
    series = plot.series_of(ROWS, "f1")
    assert series == {"dense": [(1.0, 64.0)], "OTO": [(1.4, 62.5), (1.9, 61.0)], "OTO+KD": [(1.9, 63.0)]}
    assert plot.series_of(ROWS, "accuracy")["OTO+KD"] == [(1.4, 90.0)]


def test_png_draws_each_series_where_it_belongs(plot, tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps({"rows": ROWS[:3]}))
    (tmp_path / "b.json").write_text(json.dumps({"rows": ROWS[3:]}))
    out = tmp_path / "frontier.png"
    plot.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out)])
    assert "OTO+KD  1.90x: 63.00" in capsys.readouterr().out
    image = _decode_png(out.read_bytes())
    assert len(image) == plot.HEIGHT and len(image[0]) == plot.WIDTH

    def rows_with(color, x):
        return [y for y in range(plot.HEIGHT) if image[y][x] == color]

    # at the last target's x (1.9x), KD's marker (63.0) lies above plain OTO's (61.0): smaller row index
    series = plot.series_of(ROWS, "f1")
    points = [p for values in series.values() for p in values]
    x_high = max(p[0] for p in points) * 1.05 + 0.05
    x = round(plot.LEFT + (1.9 - 1.0) / (x_high - 1.0) * (plot.WIDTH - plot.LEFT - plot.RIGHT))
    kd, oto = rows_with(plot.SERIES["OTO+KD"], x), rows_with(plot.SERIES["OTO"], x)
    assert kd and oto and max(kd) < min(oto)
    assert rows_with(plot.SERIES["dense"], x)  # the dense level spans the plot


def test_no_usable_rows_is_an_error(plot):
    with pytest.raises(ValueError, match="no run has both 'f1' and a speedup"):
        plot.frontier_png(plot.series_of(ROWS[4:], "f1"), "f1")
