"""Every third-party module the package imports is declared in pyproject.toml (not left to arrive
through another dependency), and the installed versions satisfy the declared ranges."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import packages_distributions, version
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers.import_graph import module_names

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = {"gradio", "onnx", "onnxruntime", "hydra_plugins", "submitit", "optuna"}  # extras, imported lazily


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def _imported_top_levels() -> set[str]:
    names = set()
    for path in module_names().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n != "zegclip" and n not in sys.stdlib_module_names} - OPTIONAL


def _extras() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]


def test_every_imported_distribution_is_declared():
    # an extra's package counts as declared: the package imports it only where that extra is used
    declared = {canonicalize_name(r.name) for r in [*_declared(), *_extras()]}
    providers = packages_distributions()
    undeclared = {
        module: providers.get(module)
        for module in _imported_top_levels()
        if not any(canonicalize_name(d) in declared for d in providers.get(module, []))
    }
    assert undeclared == {}


def test_installed_versions_meet_the_declared_ranges():
    outside = {r.name: version(r.name) for r in _declared() if not r.specifier.contains(version(r.name), True)}
    assert outside == {}
