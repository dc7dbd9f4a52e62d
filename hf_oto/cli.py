"""The ``hf-oto`` command: ``hf-oto demo`` (train and compress a QA model offline), ``hf-oto inspect DIR`` and
``hf-oto check MODEL`` (in `hf_oto.check`: find and verify a model's zero-invariant groups).

``hf-oto demo`` (in `hf_oto.demo`) trains a small QA model from scratch on a generated set with `OTOTrainer`,
then slims, saves, reloads, scores and queries it.

``hf-oto inspect DIR`` describes a saved slim model from its ``config.json`` alone: per-layer shapes,
parameters and FLOPs dense vs slim, and the OTO settings it was trained with.

Bad input (a missing folder, a folder that holds no hf_oto model, an unsupported model, an unreadable data
file) ends with a one-line message on stderr and exit status 2, never a traceback. Set ``HF_OTO_DEBUG=1``
to see the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from .check import add_check_parser

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


class CLIError(Exception):
    """A problem with the user's input; reported as one line, without a traceback."""


# --------------------------------------------------------------------------------------------------------------
# hf-oto inspect
# --------------------------------------------------------------------------------------------------------------


def read_slim_config(folder: str) -> dict[str, Any]:
    """The ``config.json`` of a saved hf_oto slim model, or `CLIError` saying why `folder` is not one."""
    from .errors import OTOLoadError
    from .slim_folder import read_slim_config as read

    try:
        return read(folder)
    except OTOLoadError as error:
        raise CLIError(str(error)) from None


def format_inspection(folder: str, config: dict[str, Any]) -> str:
    """The text `hf-oto inspect` prints for one slim config: `SlimReport.rows()` / `layer_rows()` plus the
    weight shapes that the config's layout implies, and the OTO settings."""
    from .accounting import LayerRow, SlimReport, kept_ratio

    layout = config["oto_layout"]
    head_dim = int(layout["head_dim"])
    hidden = config.get("hidden_size") or config.get("dim") or config.get("d_model")
    report = SlimReport.from_config(config)
    weights = [
        name
        for name in ("model.safetensors", "model.safetensors.index.json")
        if os.path.exists(os.path.join(folder, name))
    ]
    lines = [
        f"hf_oto slim model: {os.path.abspath(folder)}",
        f"  family {layout.get('family')} (model_type {config.get('model_type')}, "
        f"{', '.join(config.get('architectures') or ['?'])})",
        f"  {len(config['oto_num_attention_heads'])} layers, hidden size {hidden}, head dim {head_dim}; "
        f"weights: {', '.join(weights) or 'MISSING'}",
        "",
    ]
    if report is not None:
        lines += [f"  {'':<34}{'dense':>15}{'slim':>15}{'kept':>9}"]
        lines += [f"  {row.label:<34}{row.dense:>15,}{row.slim:>15,}{row.kept:>9}" for row in report.rows()]
        lines.append("")
        layer_rows = report.layer_rows()
    else:
        lines += ["  (no dense/slim report recorded in config.json)", ""]
        counts = zip(
            *(config[k] for k in ("oto_num_attention_heads", "oto_num_key_value_heads", "oto_intermediate_sizes"))
        )
        layer_rows = [LayerRow(i, (h, None), (kv, None), (f, None)) for i, (h, kv, f) in enumerate(counts)]

    ffn_in = ", ".join(e if isinstance(e, str) else e["path"] for e in layout.get("ffn_in", []))
    parts = max((e["parts"] for e in layout.get("ffn_in", []) if isinstance(e, dict)), default=1)  # fused gate+up
    lines.append(
        f"  {'layer':>5}  {'heads':>7}  {'kv heads':>8}  {'ffn':>11}  "
        f"{'q / k / v (out x in)':<30}  {'o (out x in)':<14}  ffn in / out ({ffn_in} / {layout.get('ffn_out')})"
    )
    for row in layer_rows:
        q, k, width = row.heads[0] * head_dim, row.kv_heads[0] * head_dim, row.ffn[0]
        lines.append(
            f"  {row.layer:>5}  {LayerRow.fraction(row.heads):>7}  {LayerRow.fraction(row.kv_heads):>8}  "
            f"{LayerRow.fraction(row.ffn):>11}  "
            f"{f'{q}x{hidden} / {k}x{hidden} / {k}x{hidden}':<30}  {f'{hidden}x{q}':<14}  "
            f"{width * parts}x{hidden} / {hidden}x{width}"
        )
    if report is not None:
        d, s = report.dense, report.slim
        lines.append(
            f"  {'total':>5}  {sum(s.heads):>3}/{sum(d.heads):<3}  {'':>8}  {sum(s.ffn):>5}/{sum(d.ffn):<5}  "
            f"({1 - kept_ratio(sum(s.heads), sum(d.heads)):.1%} of heads and "
            f"{1 - kept_ratio(sum(s.ffn), sum(d.ffn)):.1%} of FFN neurons removed)"
        )
    settings = config.get("oto_settings") or {}
    lines += ["", "  OTO settings:" if settings else "  OTO settings: (none recorded)"]
    for key in sorted(settings):
        lines.append(f"    {key}: {settings[key]}")
    return "\n".join(lines)


def inspect_command(args: argparse.Namespace) -> int:
    config = read_slim_config(args.folder)
    print(format_inspection(args.folder, config))
    return 0


# --------------------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from .demo import add_demo_parser

    parser = argparse.ArgumentParser(prog="hf-oto", description="Only-Train-Once structured pruning for transformers.")
    commands = parser.add_subparsers(dest="command", required=True)

    add_demo_parser(commands)

    inspect = commands.add_parser("inspect", help="describe a saved slim model from its folder")
    inspect.add_argument("folder", help="a folder written by OTOTrainer.save_model or a slim model's save_pretrained")
    inspect.set_defaults(handler=inspect_command)
    add_check_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hf-oto``; returns the exit status (0, 1 on failure, 2 on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CLIError as error:
        print(f"hf-oto {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"hf-oto {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get("HF_OTO_DEBUG"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(
            f"hf-oto {args.command}: error: {type(error).__name__}: {message} (HF_OTO_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    # `python -m hf_oto.cli` runs this file as __main__; call the imported module's main, so that the CLIError
    # that hf_oto.demo raises is the class main catches.
    from hf_oto.cli import main as imported_main

    sys.exit(imported_main())
