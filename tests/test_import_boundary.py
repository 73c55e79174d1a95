"""The three tiers: the library imports neither Lightning, Hydra nor the layers above it."""

from __future__ import annotations

import json
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


def _loaded_by(modules: list[str]) -> list[str]:
    """The names in ``sys.modules`` of a fresh interpreter after importing ``modules``."""
    code = f"import importlib, json, sys\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
    result = _run(code + "print(json.dumps(sorted(sys.modules)))")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def _top(names: list[str], packages: tuple[str, ...]) -> list[str]:
    return [n for n in names if n.split(".")[0] in packages]


def test_inference_path_imports_without_lightning_hydra_or_albumentations():
    inference = ["zegclip", "zegclip.model", "zegclip.data.classes", "zegclip.segmentation", "zegclip.visualize"]
    loaded = _loaded_by([*inference, "zegclip.cli.predict"])
    assert _top(loaded, ("lightning", "pytorch_lightning", "hydra", "omegaconf", "albumentations")) == []


def test_library_modules_never_load_the_training_or_command_line_layers():
    library = [
        m.name
        for m in pkgutil.walk_packages(zegclip.__path__, "zegclip.")
        if not m.name.startswith(UPPER) and m.name not in ENTRY_MODULES and not m.name.endswith(".__main__")
    ]
    assert "zegclip.model.build" in library and "zegclip.data.transforms" in library
    loaded = _loaded_by(library)
    assert _top(loaded, ("lightning", "pytorch_lightning", "hydra", "omegaconf")) == []
    assert [n for n in loaded if n.startswith(UPPER)] == []


def test_data_transforms_and_readers_do_not_load_the_model():
    """DataLoader workers import the transforms and readers: they must not load open_clip."""
    loaded = _loaded_by(["zegclip.data.transforms", "zegclip.data.datasets", "zegclip.data.folder", "zegclip.resize"])
    assert "zegclip.data.transforms" in loaded
    assert _top(loaded, ("open_clip",)) + [n for n in loaded if n.startswith("zegclip.model")] == []


def test_no_import_cycle_in_the_package_deferred_imports_included():
    graph = import_graph()
    assert "zegclip.data.folder" in graph and "zegclip.model.build" in graph["zegclip.model"]
    assert cycles(graph) == []


def test_library_sources_never_name_the_upper_tiers_even_in_deferred_imports():
    graph = import_graph()
    library = [m for m in graph if not m.startswith(UPPER) and m not in ENTRY_MODULES and not m.endswith("__main__")]
    bad = {m: sorted(e for e in graph[m] if e.startswith(UPPER)) for m in library}
    assert {m: e for m, e in bad.items() if e} == {}


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
