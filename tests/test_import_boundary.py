"""The three tiers: the library imports neither Lightning, Hydra nor the layers above it."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import zegclip
from tests.helpers.import_graph import cycles, import_graph

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
        if not m.name.startswith(UPPER) and m.name not in ENTRY_MODULES and not m.name.endswith(".__main__")
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


def test_no_import_cycle_in_the_package_deferred_imports_included():
    graph = import_graph()
    assert "zegclip.data.folder" in graph and "zegclip.model.build" in graph["zegclip.model"]
    assert cycles(graph) == []


def test_library_sources_never_name_the_upper_tiers_even_in_deferred_imports():
    graph = import_graph()
    library = [m for m in graph if not m.startswith(UPPER) and m not in ENTRY_MODULES and not m.endswith("__main__")]
    bad = {m: sorted(e for e in graph[m] if e.startswith(UPPER)) for m in library}
    assert {m: e for m, e in bad.items() if e} == {}


def test_data_transforms_and_readers_do_not_load_the_model():
    """DataLoader workers import the transforms and readers: they must not load open_clip."""
    code = (
        "import sys, zegclip.data.transforms, zegclip.data.datasets, zegclip.data.folder, zegclip.resize;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'open_clip' or m.startswith('zegclip.model'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = _run(code)
    assert result.returncode == 0, result.stdout + result.stderr


PYTHON_M_ROUTES = ("zegclip.export", "zegclip.efficiency", "zegclip.data.prepare", "zegclip.data.verify")


@pytest.mark.parametrize("route", [*PYTHON_M_ROUTES, "zegclip.data.synthetic"])
def test_python_m_route_runs_the_command_and_loads_its_module_once(route):
    """`python -m route --help` (runpy, as `-m` does) prints the command's help, and no module
    file is loaded twice (as `__main__` and by name)."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{route!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_module({route!r}, run_name='__main__', alter_sys=True)\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "files = [getattr(m, '__file__', None) for m in list(sys.modules.values())]\n"
        "files = [f for f in files if f and 'zegclip' in f]\n"
        "twice = sorted({f for f in files if files.count(f) > 1})\n"
        "print('twice:', twice); sys.exit(code or (3 if twice else 0))"
    )
    result = _run(code)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "usage:" in result.stdout and "twice: []" in result.stdout
