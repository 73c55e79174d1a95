"""Shareable model folders: safetensors + config.json + model card; ``hf-hub:`` names offline."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub.file_download import repo_folder_name

from zegclip.model import CheckpointError, load_model
from zegclip.model.pretrained import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME

INFO = {
    "dataset": "voc",
    "setting": "inductive",
    "class_names": ["cat", "dog", "sky"],
    "unseen": ["sky"],
    "metrics": {"val/hIoU": 61.25},
}


def _same(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_through_the_folder(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "model", INFO)
    assert sorted(p.name for p in folder.iterdir()) == sorted([CARD_NAME, CONFIG_NAME, WEIGHTS_NAME])
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["config"]["quick_gelu"] is True and config["config"]["clip_model"] == "zegclip-tiny"
    card = (folder / CARD_NAME).read_text()
    assert "Unseen classes (1): sky" in card and "Seen classes (2): cat, dog" in card and "61.25" in card
    again = load_model(folder).eval()
    _same(tiny_model, again)
    assert again.metadata["unseen"] == ["sky"] and again.metadata["dataset"] == "voc"
    images, embeds = torch.randn(1, 3, 64, 64), tiny_model.encode_text(["cat", "dog"])
    assert torch.equal(again(images, embeds).logits, tiny_model(images, embeds).logits)


def test_hf_hub_name_loads_offline_from_the_hub_cache(tiny_model, tmp_path):
    """``hf-hub:org/name`` through huggingface_hub's own cache, in a fresh offline process."""
    hf_home = tmp_path / "hf_home"
    repo = hf_home / "hub" / repo_folder_name(repo_id="someone/zegclip-tiny", repo_type="model")
    revision = "f" * 40
    tiny_model.save_pretrained(repo / "snapshots" / revision, INFO)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    out = tmp_path / "state.pt"
    script = (
        "import sys, torch, zegclip; m = zegclip.load_model('hf-hub:someone/zegclip-tiny');"
        "torch.save(m.state_dict(), sys.argv[1]); print(m.metadata['dataset'])"
    )
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run([sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "voc"
    state = torch.load(out, weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in tiny_model.state_dict().items())


def test_an_uncached_hub_name_offline_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="cannot get hf-hub:nobody/nothing"):
        load_model("hf-hub:nobody/nothing")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickle_named_model_safetensors_cannot_run_code(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "model")
    marker = tmp_path / "code_ran"
    (folder / WEIGHTS_NAME).write_bytes(pickle.dumps({"w": _Payload(marker)}))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(folder)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "not a zegclip model folder (no config.json)"),
        ({"model_type": "bert", "hidden_size": 768}, "not a zegclip model folder (format None, a bert model)"),
        ({"format": "zegclip-pretrained", "format_version": 99, "config": {}}, "this zegclip reads up to 1"),
        ("{not json", "not valid JSON"),
    ],
    ids=["no_config", "foreign", "newer", "broken_json"],
)
def test_foreign_or_newer_folders_are_clear_errors(tiny_model, tmp_path, config, message):
    folder = tiny_model.save_pretrained(tmp_path / "model")
    if config is None:
        (folder / CONFIG_NAME).unlink()
    else:
        (folder / CONFIG_NAME).write_text(config if isinstance(config, str) else json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    assert message in str(info.value)


def _edit_config(folder: Path, edit) -> Path:
    path = folder / CONFIG_NAME
    payload = json.loads(path.read_text())
    edit(payload)
    path.write_text(json.dumps(payload))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["config"].update(clip_model="ViT-Nope-99"), "config key 'clip_model' is 'ViT-Nope-99', not an"),
        (lambda p: p.pop("config"), "key 'config' is missing; expected an object of build_zegclip arguments"),
        (lambda p: p["config"].update(colour="blue"), "unknown config key(s) 'colour'; expected build_zegclip"),
        (lambda p: p.update(format_version="1"), "key 'format_version' must be a whole number (1), got '1'"),
        (lambda p: p.update(config="hello"), "key 'config' is a str, not an object; expected an object of"),
        (lambda p: p.update(info=[1, 2]), "key 'info' is a list, not an object"),
    ],
    ids=["unknown_clip_model", "no_config_key", "unknown_key", "version_as_text", "config_as_text", "info_as_list"],
)
def test_a_hand_edited_config_json_is_one_line_naming_the_file_and_key(tiny_model, tmp_path, edit, message):
    folder = tiny_model.save_pretrained(tmp_path / "model")
    path = _edit_config(folder, edit)
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text
    assert "upgrade" not in text and "ViT-B-32-quickgelu" not in text  # no advice to upgrade, no list of every model


def test_a_hand_edited_config_json_through_predict_is_one_line(tiny_model, tmp_path):
    from PIL import Image

    folder = tiny_model.save_pretrained(tmp_path / "model")
    path = _edit_config(folder, lambda p: p["config"].update(clip_model="ViT-Nope-99"))
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    proc = subprocess.run(
        ["zegclip", "predict", str(tmp_path / "a.png"), "--checkpoint", str(folder), "--classes", "cat"]
        + ["-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {path}: config key 'clip_model'") and proc.stderr.count("\n") == 1


# ---------------------------------------------------------------- folders people publish


def test_config_json_holds_no_path_of_this_machine(tiny_model, tmp_path):
    run = tmp_path / "outputs" / "train" / "run1"
    tiny_model.metadata["source"] = str(run / "checkpoints" / "best_step000004.ckpt")
    info = {**INFO, "checkpoint": str(run / "checkpoints" / "best_step000004.ckpt"), "data": "/home/me/data/voc"}
    folder = tiny_model.save_pretrained(run / "model", info)
    text = (folder / CONFIG_NAME).read_text() + (folder / CARD_NAME).read_text()
    assert str(tmp_path) not in text and "/home/me" not in text
    saved = json.loads((folder / CONFIG_NAME).read_text())["info"]
    assert saved["checkpoint"] == saved["source"] == "checkpoints/best_step000004.ckpt"  # relative to the run
    assert saved["data"] == "voc"  # outside the run: its name only
    assert saved["class_names"] == INFO["class_names"]


def test_the_card_shows_the_evaluation_with_step_and_dataset_and_losses_apart(tiny_model, tmp_path):
    metrics = {
        "val/pAcc": 91.234,
        "val/mIoU": 70.5,
        "val/mIoU_seen": 80.25,
        "val/mIoU_unseen": 60.125,
        "val/hIoU": 69.0,
        "train/loss": 0.4321,
        "train/loss_focal": 0.01234,
        "train/lr": 0.0000123,
    }
    folder = tiny_model.save_pretrained(tmp_path / "model", {**INFO, "metrics": metrics, "step": 20000})
    card = (folder / CARD_NAME).read_text()
    assert "| dataset | split | step | pAcc | mIoU | mIoU seen | mIoU unseen | hIoU |" in card
    assert "| voc | val | 20000 | 91.23 | 70.50 | 80.25 | 60.12 | 69.00 |" in card
    assert "Training losses at step 20000: loss 0.4321, loss_focal 0.01234." in card
    section = card.split("## Evaluation")[1].split("## Use")[0]
    assert "lr" not in section and "0.00 |" not in section  # no learning-rate row shown as 0.00


def test_the_card_of_a_local_folder_has_no_placeholder_and_push_to_hub_names_its_repo(
    tiny_model, tmp_path, monkeypatch
):
    from huggingface_hub import HfApi

    card = (tiny_model.save_pretrained(tmp_path / "model") / CARD_NAME).read_text()
    assert "ORG/NAME" not in card and 'load_model("path/to/this/folder")' in card
    uploaded = {}

    def upload_folder(self, *, repo_id, folder_path, commit_message):
        uploaded.update({name: (Path(folder_path) / name).read_text() for name in (CARD_NAME, CONFIG_NAME)})

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: None)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    url = tiny_model.push_to_hub("me/zegclip-voc", INFO)
    assert url == "https://huggingface.co/me/zegclip-voc"
    assert 'zegclip.load_model("hf-hub:me/zegclip-voc")' in uploaded[CARD_NAME]
    assert "--checkpoint hf-hub:me/zegclip-voc " in uploaded[CARD_NAME] and "ORG/NAME" not in uploaded[CARD_NAME]


def test_every_file_of_the_folder_is_readable_by_the_group_and_others(tiny_model, tmp_path):
    previous = os.umask(0o022)
    try:
        folder = tiny_model.save_pretrained(tmp_path / "model")
    finally:
        os.umask(previous)
    modes = {name: (folder / name).stat().st_mode & 0o777 for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)}
    assert modes == dict.fromkeys(modes, 0o644)  # safetensors alone writes 0600


@pytest.mark.parametrize("offline", [True, False])
def test_push_to_an_unreachable_hub_is_one_line(tiny_model, monkeypatch, offline):
    import huggingface_hub.constants

    from zegclip.errors import ZegCLIPError

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
    with pytest.raises(ZegCLIPError) as caught:
        tiny_model.push_to_hub("me/zegclip-voc", INFO, token="hf_test", endpoint="http://127.0.0.1:9")
    text = str(caught.value)
    assert text.startswith("cannot upload to the Hugging Face Hub (http://127.0.0.1:9) as me/zegclip-voc: ")
    assert "\n" not in text and ("offline mode" in text if offline else "refused" in text.lower())
