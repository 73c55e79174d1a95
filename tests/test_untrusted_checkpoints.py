"""No route runs code from a checkpoint: every load is ``weights_only`` or refused.

Each file below holds a pickle whose ``__reduce__`` would create a marker file when
unpickled by ``torch.load(weights_only=False)``; after every route the marker must not exist.
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.configs import TINY_DEMO
from zegclip.cli.predict import main as predict_main
from zegclip.model import CheckpointError, load_model, load_official_checkpoint
from zegclip.training.config import run_cli
from zegclip.training.eval import evaluate
from zegclip.training.train import train


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code_ran"


@pytest.fixture
def crafted(tmp_path: Path, marker: Path) -> Path:
    """A file shaped like a zegclip training checkpoint, with the payload inside."""
    path = tmp_path / "crafted.ckpt"
    torch.save(
        {
            "pytorch-lightning_version": "2.6.0",
            "hyper_parameters": {"model": {"clip_model": "zegclip-tiny", "payload": _Payload(marker)}},
            "state_dict": {"backbone.x": torch.zeros(1)},
        },
        path,
    )
    return path


def _exits_2(fn, cfg, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(fn, cfg)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_the_payload_does_run_without_weights_only(crafted, marker):
    """The crafted file is live: only weights_only loading keeps it from running."""
    torch.load(crafted, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("loader", [load_model, load_official_checkpoint], ids=["load_model", "official"])
def test_python_loaders_refuse(crafted, marker, loader):
    with pytest.raises(
        CheckpointError, match=r"holds a Python object \([\w.]+\) besides tensors .* refusing to unpickle"
    ):
        loader(crafted)
    assert not marker.exists()


def test_predict_refuses(crafted, marker, tmp_path, capsys):
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    code = predict_main([str(image), "--checkpoint", str(crafted), "--classes", "cat; dog", "-o", str(tmp_path / "o")])
    assert code == 2 and "refusing to unpickle" in capsys.readouterr().err
    assert not marker.exists()


def test_eval_refuses(crafted, marker, compose_cfg, capsys):
    err = _exits_2(evaluate, compose_cfg("eval", [*TINY_DEMO, f"checkpoint={crafted}"]), capsys)
    assert "refusing to unpickle" in err and not marker.exists()


def test_init_from_refuses(crafted, marker, compose_cfg, capsys):
    err = _exits_2(train, compose_cfg("train", [*TINY_DEMO, f"module.init_from={crafted}"]), capsys)
    assert "refusing to unpickle" in err and not marker.exists()


def test_resume_from_a_local_file_refuses(crafted, marker, compose_cfg, capsys):
    err = _exits_2(train, compose_cfg("train", [*TINY_DEMO, f"ckpt_path={crafted}"]), capsys)
    assert "refusing to unpickle" in err and not marker.exists()


def test_resume_from_a_url_is_refused_before_any_download(crafted, marker, compose_cfg, capsys):
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(crafted.parent), **kwargs)

        def log_message(self, fmt, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{crafted.name}"
        err = _exits_2(train, compose_cfg("train", [*TINY_DEMO, f"ckpt_path={url}"]), capsys)
    finally:
        server.shutdown()
        server.server_close()
    assert "only local files" in err
    assert not requests and not marker.exists()


def test_test_after_resume_loads_the_restored_best_path_weights_only(crafted, marker, compose_cfg, capsys, tmp_path):
    """``test=true`` loads the best checkpoint named inside the resumed file: never with code."""
    overrides = [*TINY_DEMO, "trainer.max_steps=2", "eval_every=2", f"paths.output_dir={tmp_path / 'run'}"]
    train(compose_cfg("train", overrides))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    for key, state in ckpt["callbacks"].items():
        if "best_model_path" in state and state["best_model_path"]:
            state["best_model_path"] = str(crafted)
            assert "ModelCheckpoint" in key
    torch.save(ckpt, last)
    err = _exits_2(train, compose_cfg("train", [*overrides, "ckpt_path=last", "test=true"]), capsys)
    assert "refusing to unpickle" in err and str(crafted) in err
    assert not marker.exists()
