"""The three tiers: the library imports neither Lightning, Hydra nor the layers above it."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import zegclip

UPPER = ("zegclip.training", "zegclip.cli")
ENTRY_MODULES = ("zegclip.__main__", "zegclip.train", "zegclip.eval", "zegclip.predict", "zegclip.demo")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_inference_path_imports_without_lightning_hydra_or_albumentations():
    code = (
        "import sys, zegclip, zegclip.model, zegclip.data.classes, zegclip.segmentation, zegclip.visualize,"
        " zegclip.cli.predict;"
        "heavy = ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf', 'albumentations');"
        "bad = [m for m in heavy if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = _run(code)
    assert result.returncode == 0, result.stdout + result.stderr


def test_library_modules_never_load_the_training_or_command_line_layers():
    library = [
        m.name
        for m in pkgutil.walk_packages(zegclip.__path__, "zegclip.")
        if not m.name.startswith(UPPER) and m.name not in ENTRY_MODULES
    ]
    assert "zegclip.model.build" in library and "zegclip.data.transforms" in library
    code = (
        f"import importlib, sys\nfor name in {library!r}:\n    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'hydra',"
        f" 'omegaconf') or m.startswith({UPPER!r}))\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = _run(code)
    assert result.returncode == 0, result.stdout + result.stderr
