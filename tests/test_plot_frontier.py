"""bench/plot_frontier.py: results.json rows → dense / OTO / OTO+KD series → a PNG that decodes, with each series
drawn in its colour at the expected place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script
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
    return load_script(SCRIPT)


def test_rows_become_series(plot):
    series = plot.series_of(ROWS, "f1")
    as_pairs = {name: [(p.speedup, p.score) for p in points] for name, points in series.items()}
    assert as_pairs == {"dense": [(1.0, 64.0)], "OTO": [(1.4, 62.5), (1.9, 61.0)], "OTO+KD": [(1.9, 63.0)]}
    assert [p.vs_dense for p in series["OTO"]] == [-1.5, -3.0]  # rows without a seed pair with the seedless dense
    assert [(p.speedup, p.score) for p in plot.series_of(ROWS, "accuracy")["OTO+KD"]] == [(1.4, 90.0)]


SEEDED = [
    {"run": "dense", "target": None, "f1": 66.0, "speedup": 1.0, "seed": 42},
    {"run": "dense", "target": None, "f1": 66.0, "speedup": 1.0, "seed": 42},  # a KD file repeating its teacher
    {"run": "dense", "target": None, "f1": 64.0, "speedup": 1.0, "seed": 1},
    {"run": "oto_0.5", "target": 0.5, "f1": 63.0, "speedup": 1.8, "seed": 42},
    {"run": "oto_0.5", "target": 0.5, "f1": 62.0, "speedup": 2.0, "seed": 1},
    {"run": "oto_0.5", "target": 0.5, "f1": 58.0, "speedup": 1.9, "seed": 2},  # no dense at seed 2: not paired
]


def test_seeds_of_one_target_become_mean_and_range(plot, tmp_path, capsys):
    series = plot.series_of(SEEDED, "f1")
    assert series["dense"] == [plot.Point(1.0, 65.0, 64.0, 66.0, 2, None)]
    (oto,) = series["OTO"]
    assert (oto.speedup, oto.score, oto.low, oto.high, oto.seeds) == pytest.approx((1.9, 61.0, 58.0, 63.0, 3))
    assert oto.vs_dense == pytest.approx(-2.5)  # (63 - 66 + 62 - 64) / 2
    assert plot.describe(oto) == "1.90x: 61.00 (seeds 3, 58.00..63.00) [-2.50 vs dense]"

    # seeds come from each results file's args; the bar spans the range at the point's x
    for seed in (42, 1, 2):
        rows = [{k: v for k, v in row.items() if k != "seed"} for row in SEEDED if row["seed"] == seed]
        (tmp_path / f"{seed}.json").write_text(json.dumps({"args": {"seed": seed}, "rows": rows}))
    out = tmp_path / "seeds.png"
    plot.main([str(tmp_path / f"{seed}.json") for seed in (42, 1, 2)] + ["--out", str(out)])
    assert "OTO     1.90x: 61.00 (seeds 3, 58.00..63.00) [-2.50 vs dense]" in capsys.readouterr().out
    image = _decode_png(out.read_bytes())
    x_high = 1.9 * 1.05 + 0.05
    x = round(plot.LEFT + (1.9 - 1.0) / (x_high - 1.0) * (plot.WIDTH - plot.LEFT - plot.RIGHT))
    blue = [y for y in range(plot.HEIGHT) if image[y][x] == plot.SERIES["OTO"]]
    y_low, y_high = 58.0 - 0.8, 66.0 + 0.8  # the metric's range padded by 10%

    def row_of(score: float) -> int:
        return round(plot.TOP + (y_high - score) / (y_high - y_low) * (plot.HEIGHT - plot.TOP - plot.BOTTOM))

    assert min(blue) <= row_of(63.0) and max(blue) >= row_of(58.0)  # the mean's square alone spans 7 rows


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
    x_high = max(p.speedup for p in points) * 1.05 + 0.05
    x = round(plot.LEFT + (1.9 - 1.0) / (x_high - 1.0) * (plot.WIDTH - plot.LEFT - plot.RIGHT))
    kd, oto = rows_with(plot.SERIES["OTO+KD"], x), rows_with(plot.SERIES["OTO"], x)
    assert kd and oto and max(kd) < min(oto)
    assert rows_with(plot.SERIES["dense"], x)  # the dense level spans the plot


def test_two_settings_of_one_target_and_seed_are_an_error(plot):
    other_setting = {**SEEDED[3], "f1": 64.5}  # e.g. the same target and seed with other KD settings
    with pytest.raises(ValueError, match="two OTO runs at target 0.5 and seed 42 score 63.0 and 64.5"):
        plot.series_of([*SEEDED, other_setting], "f1")


def test_no_usable_rows_is_an_error(plot):
    with pytest.raises(ValueError, match="no run has both 'f1' and a speedup"):
        plot.frontier_png(plot.series_of(ROWS[4:], "f1"), "f1")
