"""Every experiment composes and instantiates (tiny CLIP substituted); bad values fail early."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest

from zegclip.data.synthetic import write_synthetic_folder
from zegclip.model.build import zegclip_tiny
from zegclip.training.config import CONFIG_DIR, ConfigError, build_trainer, describe_batch, validate_config

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
TINY_MODEL = [
    "model.clip_model=zegclip-tiny",
    "model.pretrained=null",
    "model.image_size=128",
    "model.decoder_ffn_dim=64",
    "model.quick_gelu=true",
]
PAPER = {  # experiment: (dataset, setting, iterations, prompt tokens, templates)
    "voc_inductive": ("voc", "inductive", 20000, 10, "single"),
    "voc_transductive": ("voc", "transductive", 10000, 10, "single"),
    "voc_fully": ("voc", "fully", 20000, 10, "single"),
    "coco_inductive": ("coco_stuff", "inductive", 80000, 100, "ensemble"),
    "coco_transductive": ("coco_stuff", "transductive", 40000, 100, "ensemble"),
    "coco_fully": ("coco_stuff", "fully", 80000, 100, "ensemble"),
    "context_inductive": ("context", "inductive", 40000, 10, "ensemble"),
    "context_transductive": ("context", "transductive", 20000, 10, "ensemble"),
    "context_fully": ("context", "fully", 40000, 10, "ensemble"),
    "coco_to_voc": ("voc", "fully", None, 100, "single"),
    "coco_to_context": ("context60", "fully", None, 100, "ensemble"),
    "coco_to_pc59": ("context", "fully", None, 100, "ensemble"),
    "coco_to_pc459": ("pc459", "fully", None, 100, "ensemble"),
    "coco_to_ade150": ("ade150", "fully", None, 100, "ensemble"),
    "coco_to_ade847": ("ade847", "fully", None, 100, "ensemble"),
}


def test_every_experiment_is_listed():
    assert set(EXPERIMENTS) == set(PAPER) | {"demo", "folder_demo"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_instantiates(name, compose_cfg, tmp_path):
    entry = "eval" if name.startswith("coco_to") else "train"
    overrides = [f"experiment={name}", *TINY_MODEL]
    if entry == "eval":
        overrides.append(f"checkpoint={tmp_path / 'model.pt'}")
    cfg = compose_cfg(entry, overrides)
    if name == "folder_demo":  # its classes come from the folder `zegclip synthetic --layout folder` writes
        write_synthetic_folder(cfg.data.root, num_train=1, num_val=1, size=48)
    if "transductive" in name:  # starts from an inductive model with the same prompt count
        init = tmp_path / "inductive.pt"
        zegclip_tiny(num_prompts=cfg.model.num_prompts, decoder_ffn_dim=64).save(init)
        cfg = compose_cfg(entry, [*overrides, f"module.init_from={init}"])
    if name in PAPER:
        dataset, setting, steps, prompts, templates = PAPER[name]
        assert (cfg.data.dataset, cfg.setting, cfg.model.num_prompts) == (dataset, setting, prompts)
        assert cfg.module.templates == templates
        if steps is not None:
            assert cfg.trainer.max_steps == steps == cfg.module.max_steps
        assert cfg.model.clip_model == "zegclip-tiny"
    validate_config(cfg)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    module = hydra.utils.instantiate(cfg.module, _convert_="all")
    trainer = build_trainer(cfg)
    assert datamodule.setting == module.hparams.setting == cfg.setting
    assert trainer.max_steps == cfg.trainer.max_steps
    assert module.seen_mask.any() == (cfg.setting == "inductive" and not cfg.module.cross_dataset)
    if "transductive" in name:
        assert module.train_unseen and len(module.train_ids) == len(module.class_names)


def test_paper_optimisation_defaults(compose_cfg):
    cfg = compose_cfg("train", ["experiment=voc_inductive"])
    assert cfg.module.optimizer.lr == 2e-4 and cfg.module.optimizer.weight_decay == 0.01
    assert cfg.module.scheduler.warmup_steps == 1500 and cfg.module.scheduler.power == 0.9
    assert (cfg.data.crop_size, cfg.module.stride, cfg.global_batch_size) == (512, 426, 16)
    assert cfg.model.clip_model == "ViT-B-16" and cfg.model.pretrained == "openai"


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["data.batch_size=4"], "global batch 16 = 1 node x 1 device x 4 images x accumulation 4"),
        (["data.batch_size=16"], "global batch 16 = 1 node x 1 device x 16 images x accumulation 1"),
        (
            ["trainer.devices=auto", "data.batch_size=8"],
            "global batch 16 = 1 node x 1 device x 8 images x accumulation 2",
        ),
        (
            ["trainer.devices=4", "trainer.strategy=ddp", "data.batch_size=4"],
            "global batch 16 = 1 node x 4 devices x 4 images x accumulation 1",
        ),
        (
            ["trainer.devices='2'", "trainer.num_nodes=2", "trainer.strategy=ddp", "data.batch_size=2"],
            "global batch 16 = 2 nodes x 2 devices x 2 images x accumulation 2",
        ),
    ],
)
def test_global_batch_from_the_processes_lightning_resolves(compose_cfg, overrides, line):
    cfg = compose_cfg("train", overrides)
    trainer = build_trainer(cfg)
    assert describe_batch(trainer, cfg.data.batch_size) == line
    assert trainer.val_check_interval == cfg.eval_every * trainer.accumulate_grad_batches  # in micro-batches


@pytest.fixture
def four_gpus(monkeypatch):
    """Lightning sees 4 CUDA devices (its device count is the only thing faked; nothing runs on them)."""
    import lightning.fabric.accelerators.cuda as fabric_cuda
    import lightning.pytorch.accelerators.cuda as pytorch_cuda

    for module in (fabric_cuda, pytorch_cuda):
        monkeypatch.setattr(module, "num_cuda_devices", lambda: 4)


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.accelerator=cuda", "trainer.devices=auto"],
        ["trainer.accelerator=gpu", "trainer.devices=-1"],
        ["trainer.accelerator=auto", "trainer.devices=auto", "trainer.strategy=auto"],
        ["hardware=ddp"],
    ],
)
def test_every_device_spelling_on_a_four_gpu_node(compose_cfg, four_gpus, overrides):
    cfg = compose_cfg("train", [*overrides, "data.batch_size=4"])
    trainer = build_trainer(cfg)
    assert trainer.world_size == 4
    assert describe_batch(trainer, 4) == "global batch 16 = 1 node x 4 devices x 4 images x accumulation 1"


def test_global_batch_that_does_not_divide_is_refused(compose_cfg):
    cfg = compose_cfg("train", ["trainer.devices=3", "trainer.strategy=ddp", "data.batch_size=4"])
    with pytest.raises(ConfigError, match=r"global_batch_size=16 .* processes \(3"):
        build_trainer(cfg)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("setting=semi", "setting"),
        ("trainer.precision=8-mixed", "trainer.precision"),
        ("module.eval_mode=tiles", "module.eval_mode"),
        ("module.templates=photo", "module.templates"),
        ("module.cpu_attention_backward=fast", "module.cpu_attention_backward"),
    ],
)
def test_bad_values_fail_before_building_anything(compose_cfg, override, key):
    cfg = compose_cfg("train", [override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(cfg)


def test_missing_mandatory_value_named(compose_cfg):
    cfg = compose_cfg("train", ["experiment=voc_transductive"])
    with pytest.raises(ConfigError, match="module.init_from"):
        validate_config(cfg)


def test_unknown_key_fails_at_composition(compose_cfg):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="trainer.max_stepz"):
        compose_cfg("train", ["trainer.max_stepz=3"])


def test_config_dir_ships_inside_the_package():
    import zegclip

    assert Path(CONFIG_DIR).parent == Path(zegclip.__file__).parent
    assert (Path(CONFIG_DIR) / "train.yaml").is_file()
