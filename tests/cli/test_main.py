"""``zegclip <command>``: one command dispatching to every tool, each also reachable as before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.configs import TINY_DEMO
from zegclip.cli.main import COMMANDS, main


def test_every_command_has_help(capsys):
    for name in COMMANDS:
        if name in ("train", "eval"):
            continue  # Hydra apps: their --help is Hydra's, checked below through a process
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0, name
        assert "usage:" in capsys.readouterr().out, name


def test_usage_and_unknown_command(capsys):
    assert main([]) == 2 and "commands:" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown command 'trian'") and "train" in err


def test_subcommand_runs_the_tool(tmp_path: Path, capsys):
    assert main(["synthetic", "--out", str(tmp_path / "syn"), "--num-train", "2", "--num-val", "1"]) == 0
    assert any((tmp_path / "syn").rglob("*.png"))


def _console(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed ``zegclip`` console script (next to this interpreter), as users run it."""
    script = Path(sys.executable).with_name("zegclip")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def test_console_script_trains_with_hydra_overrides(tmp_path: Path):
    common = [*TINY_DEMO, f"paths.data_dir={tmp_path / 'data'}", "logger=none"]
    run = tmp_path / "run"
    result = _console("train", *common, "trainer.max_steps=2", "eval_every=2", f"paths.output_dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "metrics.json").is_file()
    bad = _console("eval", "setting=semi", "checkpoint=x.ckpt", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: setting='semi' is not valid")


def test_python_dash_m_routes_still_work():
    """Every tool also runs as ``python -m ...``, as before the single command existed."""
    from concurrent.futures import ThreadPoolExecutor

    # train, predict and data.prepare run as processes in their own tests; these share one pattern
    routes = ["zegclip", "zegclip.eval", "zegclip.export", "zegclip.data.verify"]

    def run(module: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(routes, pool.map(run, routes), strict=True))
    for module, result in results.items():
        assert result.returncode == 0, (module, result.stderr[-1000:])
        assert "usage" in result.stdout.lower() or "== Config ==" in result.stdout, module
