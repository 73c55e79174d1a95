"""Shared fixtures: a tiny CLIP saved as a real weights file and loaded the way users load one."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import open_clip  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tests.helpers.configs import TINY_KWARGS  # noqa: E402
from zegclip.model import TINY_CLIP, ZegCLIP  # noqa: E402
from zegclip.model.build import zegclip_tiny  # noqa: E402
from zegclip.model.clip_encoder import load_clip  # noqa: E402

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:  # pytest -n N: the cores are shared between the workers, not each worker's alone
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))


@pytest.fixture(scope="session")
def tiny_clip_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random tiny CLIP weights saved as a plain state-dict ``.pt``, as open_clip reads files."""
    torch.manual_seed(0)
    load_clip(TINY_CLIP, None)  # registers the tiny config
    clip = open_clip.create_model(TINY_CLIP, pretrained=None, force_quick_gelu=True)
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(clip.state_dict(), path)
    return path


@pytest.fixture
def make_tiny_model(tiny_clip_file: Path) -> Callable[..., ZegCLIP]:
    """Build a tiny ZegCLIP through the local-weights-file path (seeded, eval mode)."""

    def make(seed: int = 0, **kwargs) -> ZegCLIP:
        torch.manual_seed(seed)
        model = zegclip_tiny(pretrained=str(tiny_clip_file), **{**TINY_KWARGS, **kwargs})
        return model.eval()

    return make


@pytest.fixture
def tiny_model(make_tiny_model: Callable[..., ZegCLIP]) -> ZegCLIP:
    return make_tiny_model()


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """The model of ``--tiny`` (seeded ``zegclip_tiny``) saved with ``ZegCLIP.save``."""
    from zegclip.model.build import zegclip_tiny

    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    zegclip_tiny().save(path)
    return path


@pytest.fixture
def compose_cfg(tmp_path: Path):
    """Compose ``conf/<name>.yaml`` as the entry points do, with outputs under ``tmp_path``."""
    from tests.helpers.training import compose_in

    def make(name: str = "train", overrides: list[str] = ()) -> DictConfig:
        return compose_in(tmp_path, overrides, name)

    return make
