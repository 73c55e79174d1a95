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
