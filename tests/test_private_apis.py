"""The private APIs the package still uses (no public one exists), each in one place: these tests
fail loudly when a library release changes them. Tested with torch 2.5-2.14 and Lightning 2.6
(the bounds in pyproject.toml); a failure here names the file to update."""

from __future__ import annotations

import lightning as L
import torch

from zegclip.model.cached import unchanged_key


def test_tensor_version_counts_in_place_writes():
    """zegclip.model.cached.unchanged_key: Tensor._version."""
    t = torch.zeros(3)
    before = unchanged_key(t)
    t.add_(1)
    assert unchanged_key(t) != before, "torch changed Tensor._version: update zegclip/model/cached.py"
    assert unchanged_key(t) == unchanged_key(t)


def test_torch_cpu_amx_query_exists():
    """zegclip.model.clip_encoder._narrow_gemms_on_one_thread: torch.cpu._is_amx_tile_supported."""
    query = getattr(torch.cpu, "_is_amx_tile_supported", None)
    assert callable(query), "torch dropped torch.cpu._is_amx_tile_supported: update zegclip/model/clip_encoder.py"
    assert isinstance(query(), bool)


def test_dynamo_and_inductor_entry_points_exist():
    """zegclip.model.clip_encoder (compile_for_inference): maybe_mark_dynamic and Inductor's config keys."""
    from torch._inductor import config as inductor_config

    torch._dynamo.maybe_mark_dynamic(torch.zeros(2, 3), 0)
    for key in ("freezing", "max_autotune", "max_autotune_gemm_backends"):
        assert hasattr(inductor_config, key), f"Inductor's config lost {key}: update zegclip/model/clip_encoder.py"
    with inductor_config.patch(freezing=True):
        assert inductor_config.freezing is True


def test_lightning_trainer_internals(tmp_path):
    """zegclip.training.callbacks.request_lightning_stop and SegDataModule._rank_world."""
    from zegclip.training.callbacks import request_lightning_stop

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        use_distributed_sampler=False,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
    )
    assert trainer._accelerator_connector.use_distributed_sampler is False
    assert trainer._signal_connector.received_sigterm is False
    request_lightning_stop(trainer)
    assert trainer._signal_connector.received_sigterm is True


def test_wandb_logger_keeps_its_run_in_experiment(tmp_path):
    """zegclip.training.loggers.finish_loggers: WandbLogger._experiment is None until a run starts."""
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    assert logger._experiment is None, "Lightning changed WandbLogger._experiment: update zegclip/training/loggers.py"
