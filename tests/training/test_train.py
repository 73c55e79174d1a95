"""End-to-end: tiny training and evaluation, checkpoints, resume after SIGTERM, DDP evaluation."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.configs import TINY_DEMO
from tests.helpers.official import authors_layout
from tests.helpers.training import SigtermAtBatch, train_with
from zegclip import load_model
from zegclip.training.callbacks import RunInterrupted
from zegclip.training.eval import evaluate
from zegclip.training.train import train

STEPS = [*TINY_DEMO, "trainer.max_steps=12", "eval_every=6", "module.scheduler.warmup_steps=3"]


def _losses(output_dir: Path) -> dict[int, float]:
    """train/loss per step over every CSV log version (a resumed run writes a new one)."""
    losses = {}
    for path in sorted((output_dir / "csv").glob("version_*/metrics.csv")):
        with open(path) as f:
            losses |= {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}
    return losses


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run shared by the tests below: (output dir, metrics, data dir)."""
    from tests.helpers.training import compose_in

    root = tmp_path_factory.mktemp("run")
    metrics = train(compose_in(root, [*STEPS, "trainer.log_every_n_steps=1"]))
    return root / "out", metrics, root / "data"


def test_fit_logs_metrics_and_writes_checkpoints(trained):
    out, metrics, _ = trained
    for key in ("val/pAcc", "val/mIoU", "val/mIoU_seen", "val/mIoU_unseen", "val/hIoU", "train/loss"):
        assert key in metrics, key
    assert 0 <= metrics["val/pAcc"] <= 100
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 12  # rewritten at every validation, best or not
    assert list((out / "checkpoints").glob("best_step*.ckpt"))
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(metrics)
    resolved = (out / "config_resolved.yaml").read_text()
    assert "${" not in resolved and "max_steps: 12" in resolved
    losses = _losses(out)
    assert sorted(losses) == list(range(12))


def test_checkpoint_is_self_contained_and_evaluates_the_same(trained, compose_cfg):
    out, metrics, data = trained
    model = load_model(out / "checkpoints" / "last.ckpt")  # torch.load alone, no Lightning
    assert model.config["clip_model"] == "zegclip-tiny"
    cfg = compose_cfg("eval", [*TINY_DEMO, f"checkpoint={out / 'checkpoints' / 'last.ckpt'}", f"paths.data_dir={data}"])
    evaluated = evaluate(cfg)
    for key in ("val/pAcc", "val/mIoU", "val/hIoU"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-4), key


@pytest.mark.parametrize(
    ("batch_overrides", "sigterm_batch"),
    [
        (["data.batch_size=4", "global_batch_size=4"], 1),  # no accumulation
        (["data.batch_size=2", "global_batch_size=8"], 5),  # accumulate 4, as the VOC/COCO configs: mid-window
    ],
    ids=["no_accumulation", "accumulate_4"],
)
def test_sigterm_then_resume_is_bit_identical(
    trained, compose_cfg, tmp_path, monkeypatch, batch_overrides, sigterm_batch
):
    _, _, data = trained
    base = [*TINY_DEMO, *batch_overrides, "trainer.max_steps=4", "eval_every=2", "module.scheduler.warmup_steps=2"]
    base += [f"paths.data_dir={data}", "trainer.log_every_n_steps=1"]
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    train(compose_cfg("train", [*base, f"paths.output_dir={straight_dir}"]))

    cfg = compose_cfg("train", [*base, f"paths.output_dir={resumed_dir}"])
    with pytest.raises(RunInterrupted, match=r"stopped at step \d on SIGTERM; saved .*last.ckpt") as stop:
        train_with(monkeypatch, cfg, SigtermAtBatch(sigterm_batch))
    stopped = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert f"step {stopped['global_step']} " in str(stop.value)
    assert 0 < stopped["global_step"] < 4
    train(compose_cfg("train", [*base, f"paths.output_dir={resumed_dir}", "ckpt_path=last"]))

    a = torch.load(straight_dir / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"{len(differ)} of {len(a['state_dict'])} tensors differ: {differ[:5]}"
    optimizer_a, optimizer_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for state_a, state_b in zip(optimizer_a.values(), optimizer_b.values(), strict=True):
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert _losses(resumed_dir) == _losses(straight_dir)


@pytest.mark.parametrize("backward", ["flash", "compiled"])
def test_bf16_mixed_precision_trains(compose_cfg, backward, monkeypatch):
    """Both attention backwards; with the compiled one also compile=true, whose validation runs
    the image encoder compiled once per run with the weights as graph inputs."""
    from zegclip.model import attention
    from zegclip.model.clip_encoder import PromptedVisionEncoder

    chunks, compiled_calls, freezes = [], [], []
    original = attention._run_heads_backward
    monkeypatch.setattr(attention, "_run_heads_backward", lambda *a: chunks.append(1) or original(*a))
    compile_for_inference = PromptedVisionEncoder.compile_for_inference

    def spy(encoder, autotune=True, freeze=True):
        freezes.append(freeze)
        compile_for_inference(encoder, autotune=False, freeze=freeze)  # autotuning: slow, same maths
        graph = encoder._compiled
        encoder._compiled = lambda x: compiled_calls.append(x.shape) or graph(x)

    monkeypatch.setattr(PromptedVisionEncoder, "compile_for_inference", spy)
    compiled = backward == "compiled"
    cfg = compose_cfg(
        "train",
        [*TINY_DEMO, "trainer.precision=bf16-mixed", "trainer.max_steps=2", "eval_every=1"]
        + [f"module.cpu_attention_backward={backward}", f"compile={str(compiled).lower()}"],
    )
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"])) and "val/hIoU" in metrics
    assert bool(chunks) == compiled
    assert freezes == ([False] if compiled else [])
    assert bool(compiled_calls) == compiled  # validation after each of the 2 steps, compiled once


def test_multirun_sweep_runs_each_value(trained, tmp_path):
    _, _, data = trained
    cmd = [sys.executable, "-m", "zegclip.train", "-m", *TINY_DEMO, "trainer.max_steps=2", "eval_every=2"]
    cmd += ["model.num_prompts=2,3", f"paths.data_dir={data}", f"paths.log_dir={tmp_path}", "logger=none"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300, cwd=tmp_path)
    runs = sorted(tmp_path.glob("train/multirun_*/*/config_resolved.yaml"))
    assert len(runs) == 2
    assert [("num_prompts: 2" in r.read_text(), "num_prompts: 3" in r.read_text()) for r in runs] == [
        (True, False),
        (False, True),
    ]


def test_eval_reads_the_authors_checkpoint_layout(trained, compose_cfg, tmp_path):
    """python -m zegclip.eval takes the authors' .pth like our own checkpoints."""

    out, _, data = trained
    ours = out / "checkpoints" / "last.ckpt"
    model = load_model(ours)
    official = tmp_path / "ZegCLIP_demo.pth"
    torch.save({"meta": {}, "state_dict": authors_layout(model)}, official)
    results = [
        evaluate(compose_cfg("eval", [*TINY_DEMO, f"checkpoint={path}", f"paths.data_dir={data}"]))
        for path in (ours, official)
    ]
    for key in ("val/pAcc", "val/mIoU", "val/hIoU"):
        assert results[1][key] == pytest.approx(results[0][key], abs=1e-4), key


@pytest.mark.parametrize(
    ("entry", "overrides", "message"),
    [
        (
            "train",
            ["experiment=voc_inductive", "data.root=/nonexistent/voc"],
            "/nonexistent/voc (data.root) does not exist",
        ),
        (
            "eval",
            ["experiment=demo", "checkpoint=/nonexistent/model.ckpt"],
            "checkpoint not found: /nonexistent/model.ckpt",
        ),
        ("train", ["setting=semi"], "setting='semi' is not valid"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(compose_cfg, capsys, entry, overrides, message):
    from zegclip.training.config import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(train if entry == "train" else evaluate, compose_cfg(entry, overrides))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_trainable_only_checkpoints_reload_from_the_clip_source(compose_cfg, tiny_clip_file, trained):
    _, _, data = trained
    overrides = [*TINY_DEMO, "trainer.max_steps=2", "eval_every=2", f"paths.data_dir={data}"]
    overrides += ["module.trainable_only_checkpoints=true", f"model.pretrained={tiny_clip_file}"]
    cfg = compose_cfg("train", overrides)
    train(cfg)
    path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(path, weights_only=False)["state_dict"]
    assert state and not any(k.startswith(("model.text_encoder", "model.image_encoder.visual")) for k in state)
    model = load_model(path).eval()  # CLIP comes back from model.pretrained
    assert torch.equal(
        model.image_encoder.prompts.prompt_embeddings, state["model.image_encoder.prompts.prompt_embeddings"]
    )
    train(compose_cfg("train", [*overrides, "trainer.max_steps=4", "ckpt_path=last"]))  # resumes without CLIP keys


def test_sigterm_exit_code_is_143_without_metrics(trained, compose_cfg, tmp_path, monkeypatch, capsys):
    from zegclip.training.config import run_cli

    _, _, data = trained
    cfg = compose_cfg("train", [*STEPS, f"paths.data_dir={data}", f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda c: train_with(monkeypatch, c, SigtermAtBatch(1)), cfg)
    assert exit_info.value.code == 143
    assert "interrupted: stopped at step 3 on SIGTERM; saved" in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_non_finite_loss_stops_with_exit_1_and_keeps_good_checkpoints(trained, compose_cfg, tmp_path, capsys):
    from zegclip.training.config import run_cli

    _, _, data = trained
    overrides = [*TINY_DEMO, "trainer.max_steps=12", "eval_every=1", "module.scheduler.warmup_steps=4"]
    overrides += ["module.optimizer.lr=1e4", f"paths.data_dir={data}", f"paths.output_dir={tmp_path / 'run'}"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train, compose_cfg("train", overrides))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    match = re.match(r"error: step (\d+): (the training loss|a trainable weight|non-finite gradient)", err)
    assert match, err
    stopped_at = int(match.group(1))
    checkpoints = list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert checkpoints  # validations before the divergence saved good ones
    for path in checkpoints:
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["global_step"] <= stopped_at
        assert all(v.isfinite().all() for v in ckpt["state_dict"].values() if v.is_floating_point()), path
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_ckpt_path_last_without_a_checkpoint_names_the_folder(compose_cfg, capsys, tmp_path):
    from zegclip.training.config import run_cli

    cfg = compose_cfg("train", [*TINY_DEMO, "ckpt_path=last", f"paths.output_dir={tmp_path / 'never_ran'}"])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"no last.ckpt in {tmp_path / 'never_ran' / 'checkpoints'}" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["missing", "truncated", "foreign_lightning", "our_save_file", "url"])
def test_bad_ckpt_path_is_one_line_and_exit_2(trained, compose_cfg, capsys, tmp_path, tiny_model, kind):
    from zegclip.training.config import run_cli

    out, _, _ = trained
    path = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        data = (out / "checkpoints" / "last.ckpt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "foreign_lightning":
        torch.save({"pytorch-lightning_version": "2.6.0", "state_dict": {}, "hyper_parameters": {"lr": 1}}, path)
    elif kind == "our_save_file":
        tiny_model.save(path)
    spec = "http://127.0.0.1:9/last.ckpt" if kind == "url" else str(path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train, compose_cfg("train", [*TINY_DEMO, f"ckpt_path={spec}"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    expected = {
        "missing": "checkpoint not found",
        "truncated": "truncated or corrupt",
        "foreign_lightning": "not a zegclip training checkpoint",
        "our_save_file": "module.init_from=PATH",
        "url": "only local files",
    }[kind]
    assert expected in err


def test_eval_of_a_checkpoint_whose_clip_came_from_a_tag_needs_no_cache(trained, compose_cfg, tmp_path, monkeypatch):
    """A training .ckpt records pretrained: openai; evaluating it must not look for that tag."""
    out, metrics, data = trained
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["model"]["pretrained"] = "openai"
    moved = tmp_path / "from_elsewhere.ckpt"
    torch.save(ckpt, moved)
    monkeypatch.setattr(
        "zegclip.model.clip_encoder.open_clip.create_model",
        _refuse_tags(__import__("open_clip").create_model),
    )
    evaluated = evaluate(compose_cfg("eval", [*TINY_DEMO, f"checkpoint={moved}", f"paths.data_dir={data}"]))
    assert evaluated["val/mIoU"] == pytest.approx(metrics["val/mIoU"], abs=1e-4)


def _refuse_tags(create_model):
    def create(name, pretrained=None, **kwargs):
        assert not pretrained, f"tried to load CLIP weights {pretrained!r}"
        return create_model(name, pretrained=pretrained, **kwargs)

    return create


def test_eval_of_a_checkpoint_whose_config_does_not_fit_is_one_line(trained, compose_cfg, tmp_path, capsys):
    from zegclip.training.config import run_cli

    out, _, data = trained
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["model"]["num_prompts"] = 7
    torch.save(ckpt, tmp_path / "misfit.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(evaluate, compose_cfg("eval", [*TINY_DEMO, f"checkpoint={tmp_path / 'misfit.ckpt'}"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "prompt_embeddings is" in err and "Traceback" not in err


def test_logs_that_are_not_a_terminal_get_plain_progress_lines(trained, compose_cfg, tmp_path):
    """Under a pipe (as here, and in a scheduler's log file) the bar becomes one line per N steps."""
    _, _, data = trained
    overrides = [*TINY_DEMO, "trainer.enable_progress_bar=true", "trainer.max_steps=4", "eval_every=4"]
    overrides += ["trainer.log_every_n_steps=2", f"paths.data_dir={data}", f"paths.output_dir={tmp_path / 'run'}"]
    script = (
        "import sys; from tests.helpers.configs import *; from zegclip.training.config import compose_config;"
        "from zegclip.training.train import train; train(compose_config('train', sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    result = subprocess.run(
        [sys.executable, "-c", script, *overrides], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    log = result.stdout + result.stderr
    steps = re.findall(r"^step (\d+)/4 .*loss [\d.]+ .* s/step$", log, re.M)
    assert steps == ["2", "4"], log[-2000:]
    assert "it/s]" not in log and "\r" not in log  # no tqdm bar redrawn into the file


def test_training_ends_with_a_shareable_model_folder(trained):
    out, metrics, _ = trained
    model = load_model(out / "model")  # safetensors + config.json, no pickle
    best = load_model(next((out / "checkpoints").glob("best_step*.ckpt")))
    assert all(torch.equal(v, best.state_dict()[k]) for k, v in model.state_dict().items())
    assert model.metadata["dataset"] == "synthetic" and model.metadata["setting"] == "inductive"
    assert model.metadata["unseen"] == ["magenta stripes", "cyan checkerboard"]
    assert model.metadata["metrics"]["val/hIoU"] == pytest.approx(metrics["val/hIoU"])
    assert "Unseen classes (2): magenta stripes, cyan checkerboard" in (out / "model" / "README.md").read_text()


@pytest.mark.parametrize("compile_encoder", [False, True], ids=["eager", "compile"])
def test_bf16_evaluation_takes_the_predict_fast_path(trained, compose_cfg, monkeypatch, compile_encoder):
    """trainer.precision=bf16-mixed: frozen weights stored in bf16 once, and compile=true compiles
    the encoder (really: inductor, without autotuning) before Lightning moves the model to its
    device. The move here reallocates every weight, as a move to a GPU does."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    out, _, data = trained
    checkpoint = out / "checkpoints" / "last.ckpt"
    base = [*TINY_DEMO, f"checkpoint={checkpoint}", f"paths.data_dir={data}"]
    fp32 = evaluate(compose_cfg("eval", base))
    network = load_model(checkpoint)
    encoder = network.image_encoder
    compiled, graph_calls, kept = [], [], []
    compile_for_inference = encoder.compile_for_inference

    def spy():
        compiled.append(1)
        compile_for_inference(autotune=False)  # autotuning: slow to compile, same maths
        graph = encoder._compiled
        encoder._compiled = lambda x: graph_calls.append(x.shape) or graph(x)

    model_to_device = SingleDeviceStrategy.model_to_device

    def move(strategy):  # Lightning's move, then new memory for every tensor (the old kept taken)
        model_to_device(strategy)
        kept.extend((p, p.data) for p in strategy.model.parameters())
        strategy.model._apply(torch.clone)

    monkeypatch.setattr(encoder, "compile_for_inference", spy)
    monkeypatch.setattr(SingleDeviceStrategy, "model_to_device", move)
    overrides = [*base, "trainer.precision=bf16-mixed", f"compile={str(compile_encoder).lower()}"]
    bf16 = evaluate(compose_cfg("eval", overrides), network=network)
    assert kept and all(p.data_ptr() != old.data_ptr() for p, old in kept)
    assert encoder.matmul_dtype == torch.bfloat16
    assert encoder.visual.transformer.resblocks[0].mlp.c_fc.weight.dtype == torch.bfloat16
    assert len(compiled) == int(compile_encoder)
    assert bool(graph_calls) == compile_encoder  # every validation image through the compiled graph
    assert bf16["val/pAcc"] == pytest.approx(fp32["val/pAcc"], abs=2.0)  # bf16 rounding moves few pixels
