"""The default config's CLIP (ViT-B/16, ``openai`` tag) through open_clip's and huggingface_hub's
own cache, offline, as users run it; and its checkpoints loading with no network and no cache.

Random weights stand in for OpenAI's: they are written where huggingface_hub keeps the
``openai`` tag's file, and every run is a fresh process with ``HF_HUB_OFFLINE=1`` and
``HF_HOME`` pointing at that cache (or at an empty one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from huggingface_hub.file_download import repo_folder_name
from open_clip.constants import HF_SAFE_WEIGHTS_NAME
from PIL import Image
from safetensors.torch import save_file

NAMES = ["aeroplane", "bicycle", "potted plant"]
REVISION = "0123456789abcdef0123456789abcdef01234567"

BUILD = f"""
import json, sys, torch
from zegclip.training.config import compose_config
import hydra
cfg = compose_config("train", ["experiment=voc_inductive", "paths.output_dir=" + sys.argv[1]])
module = hydra.utils.instantiate(cfg.module, _convert_="all")  # what python -m zegclip.train builds
model = module.model
torch.save(model.encode_text({NAMES}), sys.argv[1] + "/embeds.pt")
model.save(sys.argv[1] + "/full.pt")
json.dump(model.config, open(sys.argv[1] + "/config.json", "w"))
# the layout Lightning writes: hyper_parameters of the module and its state_dict
torch.save({{"pytorch-lightning_version": "2.6.0", "hyper_parameters": dict(module.hparams),
            "state_dict": module.state_dict()}}, sys.argv[1] + "/train.ckpt")
"""

LOAD = f"""
import sys, torch
from zegclip import load_model
for name in ("full.pt", "train.ckpt"):
    model = load_model(sys.argv[1] + "/" + name)
    assert model.config["quick_gelu"] is True, model.config
    torch.save(model.encode_text({NAMES}), sys.argv[1] + "/embeds_" + name + ".pt")
"""

INIT_FROM = """
import sys, torch
from zegclip.training.module import ZegCLIPModule
config = {"clip_model": "ViT-B-16", "pretrained": sys.argv[2], "quick_gelu": True, "num_prompts": 10}
module = ZegCLIPModule(model=config, init_from=sys.argv[1] + "/train.ckpt")
source = torch.load(sys.argv[1] + "/full.pt", weights_only=True)["state_dict"]
for key, value in module.model.trainable_state_dict().items():
    assert torch.equal(value, source[key]), key
print("init_from ok")
"""


def _run(script: str, *args: str, hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def openai_cache(tmp_path_factory) -> tuple[Path, Path]:
    """(HF_HOME, weights file): random ViT-B/16 weights cached as the ``openai`` tag's file."""
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-16", pretrained=None)
    for param in clip.parameters():  # spread the weights so GELU and QuickGELU differ clearly
        param.data.mul_(4.0)
    hub = open_clip.get_pretrained_cfg("ViT-B-16", "openai")["hf_hub"]
    repo_id = hub.rstrip("/")
    hf_home = tmp_path_factory.mktemp("hf_home")
    repo = hf_home / "hub" / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    weights = snapshot / HF_SAFE_WEIGHTS_NAME
    save_file({k: v.half().contiguous() for k, v in clip.state_dict().items()}, str(weights))
    return hf_home, weights


@pytest.fixture(scope="module")
def default_model_run(openai_cache, tmp_path_factory) -> Path:
    """The default ``experiment=voc_inductive`` model built in a fresh offline process."""
    hf_home, _ = openai_cache
    out = tmp_path_factory.mktemp("voc_inductive")
    _run(BUILD, str(out), hf_home=hf_home)
    return out


def _reference_embeds(model_name: str, weights: Path) -> torch.Tensor:
    clip = open_clip.create_model(model_name, pretrained=str(weights)).eval()
    tokens = open_clip.get_tokenizer(model_name)([f"a photo of a {n}" for n in NAMES])
    with torch.no_grad():
        return clip.encode_text(tokens, normalize=True).float()


def test_default_config_runs_openai_weights_with_quick_gelu(openai_cache, default_model_run):
    _, weights = openai_cache
    ours = torch.load(default_model_run / "embeds.pt", weights_only=True)
    quick = _reference_embeds("ViT-B-16-quickgelu", weights)
    gelu = _reference_embeds("ViT-B-16", weights)
    assert (quick - gelu).abs().max() > 1e-2  # the two activations are told apart
    torch.testing.assert_close(ours, quick, atol=1e-5, rtol=1e-5)
    config = json.loads((default_model_run / "config.json").read_text())
    assert config["quick_gelu"] is True and config["pretrained"] == "openai"


def test_full_checkpoints_load_with_no_network_and_no_cache(default_model_run, tmp_path):
    empty_home = tmp_path / "empty_hf_home"
    empty_home.mkdir()
    _run(LOAD, str(default_model_run), hf_home=empty_home)
    ours = torch.load(default_model_run / "embeds.pt", weights_only=True)
    for name in ("full.pt", "train.ckpt"):
        assert torch.equal(torch.load(default_model_run / f"embeds_{name}.pt", weights_only=True), ours), name


def test_init_from_needs_only_the_file(openai_cache, default_model_run, tmp_path):
    """module.init_from= a checkpoint whose CLIP came from the openai tag, with no hub cache."""
    _, weights = openai_cache
    empty_home = tmp_path / "empty_hf_home"
    empty_home.mkdir()
    result = _run(INIT_FROM, str(default_model_run), str(weights), hf_home=empty_home)
    assert "init_from ok" in result.stdout


def test_predict_reads_a_full_checkpoint_offline(default_model_run, tmp_path):
    empty_home = tmp_path / "empty_hf_home"
    empty_home.mkdir()
    image = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(image)
    args = ["--checkpoint", str(default_model_run / "full.pt"), "--classes", "; ".join(NAMES)]
    args += ["--short-side", "64", "--mode", "whole", "-o", str(tmp_path / "out")]
    script = "import sys; from zegclip.cli.predict import main; sys.exit(main(sys.argv[1:]))"
    _run(script, str(image), *args, hf_home=empty_home)
    assert len(list((tmp_path / "out").rglob("*.png"))) >= 1
