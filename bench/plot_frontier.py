"""Quality vs measured CPU speedup of dense, OTO and OTO+KD runs, as a PNG (no matplotlib: zlib only).

Reads the ``results.json`` files that bench/quality_squad.py and bench/quality_sst2.py write (any number, e.g. a
plain run and a ``--distill`` run) and draws the metric (F1 for SQuAD, accuracy for SST-2; ``--metric`` to choose)
against the slim model's measured CPU speedup: dense as a grey horizontal line at 1×, OTO in blue and OTO+KD in
orange, each a line through its targets (sorted by speedup). A target run at several seeds is drawn at its mean
with a bar over its range, and printed with the range and the mean change against the same seeds' dense runs.
Axes carry their range in digits; the legend names the lines. The same figures are printed as a table.

Run: python bench/plot_frontier.py runs/squad/results.json runs/squad_kd/results.json --out frontier.png
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from statistics import mean
from typing import Any

from hf_oto.model_card import DIGITS, encode_png

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM, SCALE = 520, 340, 70, 20, 40, 50, 2
WHITE, GRID, AXIS, TEXT = (255, 255, 255), (215, 215, 215), (60, 60, 60), (60, 60, 60)
SERIES = {"dense": (128, 128, 128), "OTO": (31, 119, 180), "OTO+KD": (255, 127, 14)}
# 3x5 glyphs for the few letters the labels need (rows top to bottom, 3 bits each, left bit first)
GLYPHS = {
    **DIGITS,
    ".": (0, 0, 0, 0, 2),
    "+": (0, 2, 7, 2, 0),
    "-": (0, 0, 7, 0, 0),
    " ": (0, 0, 0, 0, 0),
    "A": (2, 5, 7, 5, 5),
    "C": (7, 4, 4, 4, 7),
    "D": (6, 5, 5, 5, 6),
    "E": (7, 4, 6, 4, 7),
    "F": (7, 4, 6, 4, 4),
    "K": (5, 5, 6, 5, 5),
    "N": (6, 5, 5, 5, 5),
    "O": (7, 5, 5, 5, 7),
    "P": (7, 5, 7, 4, 4),
    "S": (7, 4, 7, 1, 7),
    "T": (7, 2, 2, 2, 2),
    "U": (5, 5, 5, 5, 7),
    "X": (5, 5, 2, 5, 5),
    "Y": (5, 5, 2, 2, 2),
}


class Canvas:
    """An RGB pixel grid with rectangles, thick lines and 3x5-pixel text."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.pixels = [bytearray(WHITE * width) for _ in range(height)]

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        x0, x1 = max(x0, 0), min(x1, self.width)
        for y in range(max(y0, 0), min(y1, self.height)):
            self.pixels[y][3 * x0 : 3 * x1] = bytes(color) * max(x1 - x0, 0)

    def line(self, x0: float, y0: float, x1: float, y1: float, color: tuple[int, int, int], width: int = 2) -> None:
        steps = max(int(max(abs(x1 - x0), abs(y1 - y0))), 1)
        for i in range(steps + 1):
            x, y = round(x0 + (x1 - x0) * i / steps), round(y0 + (y1 - y0) * i / steps)
            self.rect(x - width // 2, y - width // 2, x - width // 2 + width, y - width // 2 + width, color)

    def text(self, x: int, y: int, label: str, color: tuple[int, int, int] = TEXT) -> int:
        """Draw `label` (upper case; unknown characters as blanks) with its top left at (x, y); returns its width."""
        for char in label.upper():
            for row, bits in enumerate(GLYPHS.get(char, GLYPHS[" "])):
                for column in range(3):
                    if bits >> (2 - column) & 1:
                        left, top = x + column * SCALE, y + row * SCALE
                        self.rect(left, top, left + SCALE, top + SCALE, color)
            x += 4 * SCALE
        return len(label) * 4 * SCALE

    def png(self) -> bytes:
        return encode_png(self.pixels, self.width)


@dataclass(frozen=True)
class Point:
    """One target of one series, over the seeds run: mean speedup and metric, the metric's range, and the mean
    change against the dense run of the same seed (None where no seed has its dense run)."""

    speedup: float
    score: float
    low: float
    high: float
    seeds: int
    vs_dense: float | None = None


def series_of(rows: Sequence[dict[str, Any]], metric: str) -> dict[str, list[Point]]:
    """Points per series, "dense", "OTO" and "OTO+KD", one per target sorted by speedup. A run repeated with the same
    score counts once (each KD results file repeats its teacher's dense row); two runs of one series, target and seed
    that score differently (e.g. two KD settings) are an error. Rows without the metric are skipped."""
    runs: dict[tuple[str, Any], dict[Any, tuple[float, float]]] = {}
    for row in rows:
        if row.get(metric) is None or row.get("speedup") is None:
            continue
        name = "dense" if row.get("target") is None else "OTO+KD" if row.get("kd") else "OTO"
        by_seed = runs.setdefault((name, row.get("target")), {})
        point = (float(row["speedup"]), float(row[metric]))
        if by_seed.setdefault(row.get("seed"), point)[1] != point[1]:
            raise ValueError(
                f"two {name} runs at target {row.get('target')} and seed {row.get('seed')} score "
                f"{by_seed[row.get('seed')][1]} and {point[1]}: plot one setting per series and target at a time"
            )
    dense = runs.get(("dense", None), {})
    series: dict[str, list[Point]] = {name: [] for name in SERIES}
    for (name, _), by_seed in runs.items():
        speedups, scores = zip(*by_seed.values())
        paired = [score - dense[seed][1] for seed, (_, score) in by_seed.items() if seed in dense]
        point = Point(mean(speedups), mean(scores), min(scores), max(scores), len(scores), None)
        series[name].append(replace(point, vs_dense=mean(paired)) if paired and name != "dense" else point)
    return {name: sorted(points, key=lambda p: (p.speedup, p.score)) for name, points in series.items()}


def describe(point: Point) -> str:
    """One point as text: "1.90x: 61.00", then the range over seeds and the change against dense where known."""
    text = f"{point.speedup:.2f}x: {point.score:.2f}"
    if point.seeds > 1:
        text += f" (seeds {point.seeds}, {point.low:.2f}..{point.high:.2f})"
    if point.vs_dense is not None:
        text += f" [{point.vs_dense:+.2f} vs dense]"
    return text


def _ticks(low: float, high: float) -> list[float]:
    return [low + (high - low) * i / 4 for i in range(5)]


def frontier_png(series: dict[str, list[Point]], metric: str) -> bytes:
    """The plot of `series_of` as PNG bytes: a square at each mean, a vertical bar over the range across seeds."""
    points = [p for values in series.values() for p in values]
    if not points:
        raise ValueError(f"no run has both {metric!r} and a speedup")
    xs, ys = [p.speedup for p in points], [y for p in points for y in (p.low, p.high)]
    x_low, x_high = 1.0, max(max(xs), 1.0) * 1.05 + 0.05
    y_pad = max((max(ys) - min(ys)) * 0.1, 0.5)
    y_low, y_high = min(ys) - y_pad, max(ys) + y_pad
    canvas = Canvas(WIDTH, HEIGHT)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def at(x: float, y: float) -> tuple[float, float]:
        return LEFT + (x - x_low) / (x_high - x_low) * plot_w, TOP + (y_high - y) / (y_high - y_low) * plot_h

    for tick in _ticks(y_low, y_high):
        _, y = at(x_low, tick)
        canvas.rect(LEFT, round(y), LEFT + plot_w, round(y) + 1, GRID)
        canvas.text(LEFT - 8 - len(f"{tick:.1f}") * 4 * SCALE, round(y) - 5, f"{tick:.1f}")
    for tick in _ticks(x_low, x_high):
        x, _ = at(tick, y_low)
        canvas.rect(round(x), TOP, round(x) + 1, TOP + plot_h, GRID)
        canvas.text(round(x) - 10, TOP + plot_h + 8, f"{tick:.2f}")
    canvas.rect(LEFT, TOP + plot_h, LEFT + plot_w, TOP + plot_h + 1, AXIS)
    canvas.rect(LEFT, TOP, LEFT + 1, TOP + plot_h, AXIS)
    canvas.text(LEFT + plot_w // 2 - 40, HEIGHT - 18, "CPU SPEEDUP X")
    canvas.text(8, 12, "F1" if metric.endswith("f1") else metric[:3])
    dense = series["dense"]
    for name, values in series.items():
        color = SERIES[name]
        if name == "dense":
            for point in values:  # a reference level across the plot
                _, y = at(x_low, point.score)
                canvas.rect(LEFT, round(y), LEFT + plot_w, round(y) + 2, color)
            continue
        line = dense[:1] + values if dense else values  # every frontier starts at the dense model (1x)
        for a, b in zip(line, line[1:]):
            canvas.line(*at(a.speedup, a.score), *at(b.speedup, b.score), color)
        for point in line:
            px, py = at(point.speedup, point.score)
            canvas.rect(round(px) - 3, round(py) - 3, round(px) + 4, round(py) + 4, color)
            if point.low < point.high:  # the spread over seeds
                (_, top), (_, bottom) = at(point.speedup, point.high), at(point.speedup, point.low)
                canvas.rect(round(px), round(top), round(px) + 1, round(bottom) + 1, color)
                for y in (top, bottom):
                    canvas.rect(round(px) - 4, round(y), round(px) + 5, round(y) + 1, color)
    legend_x = LEFT + 10
    for name, color in SERIES.items():
        canvas.rect(legend_x, 14, legend_x + 12, 24, color)
        legend_x += 18 + canvas.text(legend_x + 18, 15, name) + 16
    return canvas.png()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.json files of quality_squad.py / quality_sst2.py")
    parser.add_argument("--metric", default=None, help="row key to plot (default: f1 if present, else accuracy)")
    parser.add_argument("--out", default="frontier.png")
    args = parser.parse_args(argv)
    rows = []
    for path in args.results:
        with open(path) as handle:
            results = json.load(handle)
        seed = results.get("args", {}).get("seed")  # rows inherit their run's seed
        rows += [{"seed": seed, **row} for row in results["rows"]]
    metric = args.metric or ("f1" if any("f1" in row for row in rows) else "accuracy")
    series = series_of(rows, metric)
    with open(args.out, "wb") as handle:
        handle.write(frontier_png(series, metric))
    for name, values in series.items():
        print(f"{name:7s} " + ", ".join(describe(point) for point in values))
    print(f"wrote {args.out} ({metric} vs CPU speedup)")


if __name__ == "__main__":
    main()
