"""The wheel as a user installs it: it carries every package and the card template from the top-level
`model_cards/`, and a default install (no extras, so no matplotlib) saves a card whose plot is really there.

How the default install is made, and why it is honest: the wheel is built from a copy of the sources
(``pip wheel --no-deps --no-build-isolation``, offline) and installed with ``pip --no-deps`` into a fresh
virtual environment that does *not* see the system or the test environment's site-packages. The only other
packages it can import are the project's default dependencies and their own dependencies, resolved from the
wheel's metadata (extras excluded) and linked in from this environment, where `pip install hf-oto` would have
put the same versions. Downloading them instead would need the network. The script asserts that matplotlib
(in the `test` extra) cannot be imported there, and that hf_oto and its template come from the installed
wheel, not from this checkout.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _build_wheel(tmp: Path) -> Path:
    source = tmp / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("hf_oto", "model_cards"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", tmp, "."],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp.glob("hf_oto-*.whl")
    return wheel


def _default_dependencies(wheel: Path) -> list[importlib.metadata.Distribution]:
    """The distributions a default install of `wheel` brings: its Requires-Dist without extras, recursively."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    pending = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    found: dict[str, importlib.metadata.Distribution] = {}
    while pending:
        requirement = Requirement(pending.pop())
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name not in found:
            found[name] = importlib.metadata.distribution(requirement.name)
            pending += found[name].requires or []
    return list(found.values())


def _link_distributions(distributions, target: Path) -> None:
    """Symlink each distribution's top-level files and folders (and its .dist-info) into `target`."""
    target.mkdir()
    for distribution in distributions:
        site = Path(distribution.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in distribution.files or []}
        for top in tops - {"..", "__pycache__"}:
            if (site / top).exists() and not (target / top).exists():
                (target / top).symlink_to(site / top)


CHECK_SCRIPT = textwrap.dedent(
    """
    import importlib.util, os, sys
    assert importlib.util.find_spec("matplotlib") is None, "matplotlib is visible: not a default install"
    import torch, transformers
    import hf_oto
    from hf_oto.model_card import template_path
    venv = sys.prefix
    assert hf_oto.__file__.startswith(venv), hf_oto.__file__
    assert template_path().startswith(os.path.join(os.path.dirname(hf_oto.__file__), "model_cards")), template_path()
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=16, max_position_embeddings=16)
    model = transformers.BertForSequenceClassification(config)
    data = [{"input_ids": torch.randint(0, 50, (8,)), "labels": int(i % 2)} for i in range(16)]
    args = hf_oto.OTOTrainingArguments(output_dir="run", max_steps=4, per_device_train_batch_size=8, report_to=[],
                                       save_strategy="no", oto_target_group_sparsity=0.5, use_cpu=True)
    trainer = hf_oto.OTOTrainer(model=model, args=args, train_dataset=data)
    trainer.train()
    trainer.save_model("slim-out")
    card = open(os.path.join("slim-out", "README.md"), encoding="utf-8").read()
    links = [line for line in card.splitlines() if line.startswith("![")]
    assert links == ["![heads and FFN neurons kept per layer](oto_layers.png)"], links
    with open(os.path.join("slim-out", "oto_layers.png"), "rb") as handle:
        assert handle.read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
    assert "\\n# slim-out\\n" in card
    print("default install OK:", hf_oto.__file__)
    """
)


@pytest.fixture(scope="module")
def default_install(tmp_path_factory):
    """A fresh venv holding the built wheel and only the default dependencies; returns (python, wheel)."""
    tmp = tmp_path_factory.mktemp("packaging")
    wheel = _build_wheel(tmp)
    venv = tmp / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
        check=True,
        capture_output=True,
    )
    _link_distributions(_default_dependencies(wheel), tmp / "deps")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "hf_oto_default_dependencies.pth").write_text(f"{tmp / 'deps'}\n")
    return python, wheel


def test_wheel_holds_every_package_and_the_template(default_install):
    """Every package folder of hf_oto/ is in the wheel (pyproject lists them by hand), and model_cards/'s
    template is installed as hf_oto/model_cards/."""
    _, wheel = default_install
    names = zipfile.ZipFile(wheel).namelist()
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "hf_oto").rglob("__init__.py")}
    in_wheel = {os.path.dirname(n) for n in names if n.endswith("/__init__.py")}
    assert packages <= in_wheel, packages - in_wheel
    assert "hf_oto/model_cards/oto_model_card.md" in names
    assert not any(re.match(r"model_cards/", n) for n in names)


def test_default_install_draws_the_plot_the_card_links(default_install, tmp_path):
    """From the installed wheel, without matplotlib: training and save_model write a card that links
    oto_layers.png, and the PNG is there; the card is rendered from the installed template."""
    python, _ = default_install
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(
        [python, "-c", CHECK_SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "default install OK" in result.stdout
