"""zegclip.openvino: the image side in OpenVINO against PyTorch fp32 on the same weights.

Agreement is measured as the issue defines it: the argmax on pixels whose fp32 top-two score
margin is at least 0.01 (100 % in fp32, at least 99.5 % in bf16). Random weights score every
class alike, so the models' last query map is scaled up (as scripts/benchmark.py does) to
spread the logits like a trained model's; each test checks that enough pixels are clear.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zegclip.openvino as zov
from tests.helpers.configs import SMALL_EVAL, TINY_DEMO
from zegclip import build_zegclip, segment
from zegclip.cli.predict import main as predict_main
from zegclip.data.synthetic import make_sample
from zegclip.model import ZegCLIP
from zegclip.model.build import zegclip_tiny

MARGIN = 0.01
LOGIT_SPREAD = {"tiny": 30.0, "vitb16": 300.0}


def spread(model: ZegCLIP, factor: float) -> ZegCLIP:
    with torch.no_grad():
        model.decoder.last.q.weight.mul_(factor)
        model.decoder.last.q.bias.mul_(factor)
    return model.eval()


def clear_pixels(scores: torch.Tensor) -> torch.Tensor:
    """B x H x W: pixels whose top-two fp32 scores differ by at least `MARGIN`."""
    top2 = scores.topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) >= MARGIN


def agreement(scores: torch.Tensor, labels: torch.Tensor, min_clear: float = 0.3) -> float:
    """Share of the clear pixels of the fp32 ``scores`` whose argmax ``labels`` match."""
    clear = clear_pixels(scores)
    assert clear.float().mean() > min_clear, "too few clear pixels for a meaningful comparison"
    return (scores.argmax(1) == labels)[clear].float().mean().item()


def compare(model: ZegCLIP, compiled: zov.OpenVINOZegCLIP, images: torch.Tensor, mode: str, **windows) -> dict:
    """Scores and labels of both backends: predict, and predict_labels a few classes at a time."""
    embeds = torch.nn.functional.normalize(torch.randn(7, model.relationship.proj.out_features), dim=-1)
    seen = [c % 3 == 0 for c in range(7)]
    options = {"mode": mode, "output_size": (images.shape[-2] - 7, images.shape[-1] + 5), **windows}
    reference = model.predict(images, embeds, seen, **options)
    scores = compiled.predict(images, embeds, seen, **options)
    labels = compiled.predict_labels(images, embeds, seen, class_chunk=3, **options)  # 7 classes: three chunks
    return {"reference": reference, "scores": scores, "labels": labels}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openvino")


@pytest.fixture(autouse=True)
def _user_cache(monkeypatch, cache: Path) -> None:
    """The default cache folder (commands, eval) inside the test's temporary files, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache / "xdg"))


@pytest.fixture(scope="module")
def tiny() -> ZegCLIP:
    torch.manual_seed(0)
    return spread(zegclip_tiny(), LOGIT_SPREAD["tiny"])


@pytest.fixture(scope="module")
def tiny_ov(tiny: ZegCLIP, cache: Path) -> zov.OpenVINOZegCLIP:
    return zov.compile_model(tiny, "fp32", cache_dir=cache)


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_tiny_fp32_agrees_with_pytorch(tiny: ZegCLIP, tiny_ov: zov.OpenVINOZegCLIP, mode: str) -> None:
    """Non-square, not a multiple of the patch, two images, 7 classes in chunks of 3, calibrated."""
    torch.manual_seed(1)
    images = torch.randn(2, 3, 90, 125)
    out = compare(tiny, tiny_ov, images, mode, crop=64, stride=48)
    assert out["scores"].shape == out["reference"].shape == (2, 7, 83, 130)
    torch.testing.assert_close(out["scores"], out["reference"], atol=1e-5, rtol=0)
    assert agreement(out["reference"], out["labels"]) == 1.0
    assert tiny_ov.precision == "fp32"


@pytest.mark.slow  # 14-30 s on 2 shared cores (load 2-5), most of it converting the graphs
def test_vitb16_random_weights_agree_with_pytorch(cache: Path) -> None:
    """The real architecture (ViT-B/16, QuickGELU, 10 prompts), random weights: fp32 exactly, and
    bf16 where the CPU has it. Small images keep the forwards short."""
    torch.manual_seed(0)
    model = spread(build_zegclip("ViT-B-16", None, 10, quick_gelu=True), LOGIT_SPREAD["vitb16"])
    images = torch.randn(1, 3, 150, 212)  # slide: 2 x 2 windows of 128 (the last ones not on the patch grid)
    precisions = zov.cpu_precisions()
    for precision in precisions:
        compiled = zov.compile_model(model, precision, cache_dir=cache)
        assert compiled.precision == precision
        for mode in ("whole", "slide"):
            out = compare(model, compiled, images, mode, crop=128, stride=96)
            if precision == "fp32":
                torch.testing.assert_close(out["scores"], out["reference"], atol=1e-4, rtol=0)
                assert agreement(out["reference"], out["labels"]) == 1.0, mode
            else:
                assert agreement(out["reference"], out["labels"]) >= 0.995, mode
                assert agreement(out["reference"], out["scores"].argmax(1)) >= 0.995, mode


@pytest.mark.skipif("bf16" in zov.cpu_precisions(), reason="this CPU runs bf16 (tested above)")
def test_bf16_asked_of_a_cpu_without_it_is_an_error(tiny: ZegCLIP, cache: Path) -> None:
    assert zov.resolve_precision("auto") == "fp32"
    with pytest.raises(zov.OpenVINOError, match="no bf16 instructions.*use precision fp32 or auto"):
        zov.compile_model(tiny, "bf16", cache_dir=cache)


def test_cache_is_keyed_by_the_weights(cache: Path) -> None:
    """Same weights: the IR is read back (no conversion); other weights: a new folder, their results."""
    torch.manual_seed(0)
    model = spread(zegclip_tiny(), LOGIT_SPREAD["tiny"])
    first = zov.compile_model(model, "fp32", cache_dir=cache / "keyed")
    assert first.convert_s is not None and first.folder.parent == cache / "keyed"
    assert zov.compile_model(model, "fp32", cache_dir=cache / "keyed") is first  # this process: reused as it is

    torch.manual_seed(0)
    again = zov.compile_model(spread(zegclip_tiny(), LOGIT_SPREAD["tiny"]), "fp32", cache_dir=cache / "keyed")
    assert again.convert_s is None and again.folder == first.folder and "read from the cache" in again.describe()

    with torch.no_grad():
        model.decoder.last.k.weight.mul_(-1)  # a changed weight: converted again, into its own folder
    changed = zov.compile_model(model, "fp32", cache_dir=cache / "keyed")
    assert changed.convert_s is not None and changed.folder != first.folder
    images, embeds = torch.randn(1, 3, 64, 96), torch.randn(4, 64)
    torch.testing.assert_close(
        changed.predict(images, embeds, mode="whole"), model.predict(images, embeds, mode="whole"), atol=1e-5, rtol=0
    )
    assert sorted(p.name for p in (cache / "keyed").iterdir()) == sorted([first.folder.name, changed.folder.name])


def test_release_torch_weights_frees_what_openvino_holds(cache: Path) -> None:
    """zegclip predict's setting: the PyTorch copies go (to the meta device), the results stay."""
    torch.manual_seed(0)
    model = spread(zegclip_tiny(), LOGIT_SPREAD["tiny"])
    images, embeds = torch.randn(1, 3, 64, 96), model.encode_text(["a", "b", "c"])
    reference = model.predict(images, embeds, mode="whole")
    with pytest.raises(zov.OpenVINOError, match="needs the cache folder"):
        zov.compile_model(model, "fp32", cache_dir=False, release_torch_weights=True)
    compiled = zov.compile_model(model, "fp32", cache_dir=cache, release_torch_weights=True)
    assert all(p.is_meta for p in model.image_encoder.visual.transformer.parameters())
    assert all(p.is_meta for p in model.decoder.parameters())
    assert not any(p.is_meta for p in model.text_encoder.parameters())  # the text side stays
    torch.testing.assert_close(compiled.predict(images, compiled.encode_text(["a", "b", "c"]), mode="whole"), reference)
    with pytest.raises(zov.OpenVINOError, match="weights were released"):
        zov.compile_model(model, "fp32", cache_dir=cache / "other")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_ir_pages_are_handed_back_after_compiling(tiny: ZegCLIP, tmp_path: Path) -> None:
    """OpenVINO keeps the IR weights file mapped; its pages are not left resident after compiling,
    and the results stay exact (pages read again come back from the file)."""

    def resident_kib(folder: Path) -> dict[str, int]:
        sizes, name = {}, None
        for line in Path("/proc/self/smaps").read_text().splitlines():
            fields = line.split()
            if re.match(r"[0-9a-f]+-[0-9a-f]+$", fields[0]):  # a mapping's header line, with a path or not
                name = fields[5] if len(fields) > 5 and fields[5].startswith(str(folder.resolve())) else None
            elif name and fields[0] == "Rss:":
                sizes[name] = sizes.get(name, 0) + int(fields[1])
        return sizes

    zov._COMPILED.pop(tiny, None)  # compile again, from the files of a new cache
    compiled = zov.compile_model(tiny, "fp32", cache_dir=tmp_path)
    zov._COMPILED.pop(tiny, None)
    compiled = zov.compile_model(tiny, "fp32", cache_dir=tmp_path)  # read from the IR files
    mapped = resident_kib(tmp_path)
    assert any(name.endswith("encoder.bin") for name in mapped), mapped  # OpenVINO maps the file...
    assert sum(mapped.values()) == 0, mapped  # ...and none of it stays resident
    images, embeds = torch.randn(1, 3, 64, 96), torch.randn(3, 64)
    torch.testing.assert_close(
        compiled.predict(images, embeds, mode="whole"), tiny.predict(images, embeds, mode="whole"), atol=1e-5, rtol=0
    )


def test_default_cache_follows_xdg_cache_home(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zov.default_cache_dir() == tmp_path / "xdg" / "zegclip" / "openvino"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zov.default_cache_dir() == tmp_path / "home" / ".cache" / "zegclip" / "openvino"


def test_segment_takes_the_compiled_model(tiny: ZegCLIP, tiny_ov: zov.OpenVINOZegCLIP) -> None:
    """zegclip.segment: text and preprocessing from PyTorch, the network from OpenVINO, fp32 scores
    even under a bf16 precision (autocast does not reach OpenVINO)."""
    picture, _ = make_sample(np.random.default_rng(0), 80, 120)
    options = {"short_side": 64, "crop": 64, "stride": 48}
    reference = segment(tiny, picture, "a; b; c; d", **options)
    result = segment(tiny_ov, picture, "a; b; c; d", precision="bf16", **options)
    assert result.scores.dtype == torch.float32
    torch.testing.assert_close(result.scores, reference.scores, atol=1e-5, rtol=0)
    # the tiny CLIP's text embeddings of these names are alike: fewer clear pixels (a quarter)
    assert agreement(reference.scores[None], torch.from_numpy(result.labels)[None], min_clear=0.2) == 1.0


def test_models_that_cannot_be_compiled_are_refused(cache: Path) -> None:
    torch.manual_seed(0)
    model = zegclip_tiny().eval()
    model.image_encoder.cast_frozen_matmuls(torch.bfloat16)
    with pytest.raises(zov.OpenVINOError, match="needs the fp32 weights"):
        zov.compile_model(model, "fp32", cache_dir=cache)
    with pytest.raises(zov.OpenVINOError, match="precision must be one of auto, bf16, fp32, got 'fp16'"):
        zov.compile_model(zegclip_tiny(), "fp16", cache_dir=cache)
    with pytest.raises(zov.OpenVINOError, match="CPU only, not on cuda"):
        zov.command_precision(None, "cuda")
    with pytest.raises(zov.OpenVINOError, match="--backend must be one of torch, openvino, got 'onnx'"):
        zov.check_backend("onnx")


def test_without_the_extra_the_error_names_it(monkeypatch, tiny: ZegCLIP) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    monkeypatch.setattr(zov, "_openvino", zov._openvino.__wrapped__)  # not the cached module
    with pytest.raises(zov.OpenVINOError, match=r'needs the openvino extra: pip install "zegclip\[openvino\]"'):
        zov.compile_model(tiny)


# ---------------------------------------------------------------- the command line


def _predict(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["zegclip", "predict", *args], capture_output=True, text=True, env=env)


@pytest.mark.slow  # two runs of the console script: 21-30 s on 2 shared cores
def test_predict_backend_openvino_converts_once_and_matches_torch(tmp_path: Path, capsys) -> None:
    """The console script: the first run converts into $XDG_CACHE_HOME, a second process reads it
    back; the labels are those of --backend torch (both fp32)."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(make_sample(np.random.default_rng(i), 96, 150)[0]).save(images / f"{i}.png")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    common = [str(images), "--tiny", "--classes", "synthetic"]
    first = _predict(*common, "--backend", "openvino", "-o", str(tmp_path / "ov"), env=env)
    assert first.returncode == 0, first.stderr
    converted = r"backend: OpenVINO \S+, fp32, converted in [\d.]+ s \(IR in .*xdg/zegclip/openvino/"
    assert re.search(converted, first.stderr), first.stderr
    second = _predict(*common, "--backend", "openvino", "-o", str(tmp_path / "ov2"), env=env)
    assert second.returncode == 0 and "fp32, read from the cache" in second.stderr, second.stderr
    assert predict_main([*common, "-o", str(tmp_path / "pt")]) == 0
    assert "backend:" not in capsys.readouterr().err
    for i in range(2):
        ours, again, theirs = (np.array(Image.open(tmp_path / run / f"{i}_label.png")) for run in ("ov", "ov2", "pt"))
        assert np.array_equal(ours, again)
        assert (ours == theirs).mean() > 0.999  # fp32 both: only exact near-ties may differ


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--backend", "openvino", "--precision", "fp16"], "--precision fp16 is not one OpenVINO runs on CPUs"),
        (["--backend", "openvino", "--compile"], "--compile is for --backend torch"),
        (["--precision", "auto"], "--precision auto is for --backend openvino"),
    ],
)
def test_predict_options_that_do_not_fit_the_backend(tmp_path: Path, capsys, options: list[str], message: str) -> None:
    picture = tmp_path / "a.png"
    Image.fromarray(make_sample(np.random.default_rng(0), 64, 64)[0]).save(picture)
    assert predict_main([str(picture), "--tiny", "--classes", "a; b", *options, "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {message}")
    assert not (tmp_path / "out" / "a_label.png").exists()


def test_demo_backend_openvino(tmp_path: Path) -> None:
    """The demo's requests (zegclip demo --backend openvino): precisions of this CPU, the best one
    first; the labels those of zegclip.segment with the same compiled model."""
    from zegclip.cli.demo_requests import Demo, DemoError

    torch.manual_seed(0)
    model = zegclip_tiny().eval()
    picture = tmp_path / "a.png"
    Image.fromarray(make_sample(np.random.default_rng(0), 64, 96)[0]).save(picture)
    demo = Demo(model, short_side=64, work_dir=tmp_path / "demo", backend="openvino")
    assert demo.precisions == zov.cpu_precisions()[::-1]
    out = demo.run([picture], "a; b; c", precision=demo.precisions[0])
    assert f"(cpu, openvino, {demo.precisions[0]}, slide, 3 classes)" in out.status
    label = np.asarray(Image.open(out.downloads[0]))
    expected = segment(zov.compile_model(model, demo.precisions[0]), picture, "a; b; c", short_side=64)
    assert np.array_equal(label, expected.labels)
    with pytest.raises(DemoError, match="precision 'fp16' is not available"):
        demo.run([picture], "a; b; c", precision="fp16")
    with pytest.raises(zov.OpenVINOError, match="CPU only, not on meta"):
        Demo(model, device="meta", backend="openvino")
    assert model.pixel_mean.device.type == "cpu"  # refused before the model moved


# ---------------------------------------------------------------- eval and suite


@pytest.fixture
def openvino_calls(monkeypatch) -> list[tuple[int, ...]]:
    """Shapes of the image batches the OpenVINO encoder ran on."""
    calls, encode = [], zov.OpenVINOZegCLIP.encode_images
    monkeypatch.setattr(
        zov.OpenVINOZegCLIP, "encode_images", lambda self, x: calls.append(tuple(x.shape)) or encode(self, x)
    )
    return calls


def test_eval_backend_openvino_scores_like_torch(compose_cfg, tiny_checkpoint: Path, openvino_calls, tmp_path) -> None:
    """zegclip eval backend=openvino (the real eval config): the OpenVINO encoder runs every window,
    and the scores are those of the torch backend (fp32 both)."""
    from zegclip.training.eval import evaluate

    base = [*TINY_DEMO, f"checkpoint={tiny_checkpoint}", "logger=none", f"hydra.run.dir={tmp_path}"]
    theirs = evaluate(compose_cfg("eval", base))
    assert not openvino_calls
    ours = evaluate(compose_cfg("eval", [*base, "backend=openvino"]))
    assert len(openvino_calls) == 3  # the 3 validation images, one window each
    assert ours["eval/images_per_s"] > 0
    for key in ("val/pAcc", "val/mIoU"):
        assert ours[key] == pytest.approx(theirs[key], abs=0.2), key  # only exact near-ties may differ
    with pytest.raises(zov.OpenVINOError, match="backend=openvino runs trainer.precision=32-true .* not 16-mixed"):
        evaluate(compose_cfg("eval", [*base, "backend=openvino", "trainer.precision=16-mixed"]))
    with pytest.raises(zov.OpenVINOError, match="backend must be one of torch, openvino, got 'onnx'"):
        evaluate(compose_cfg("eval", [*base, "backend=onnx"]))


def test_suite_backend_openvino(tmp_path: Path, tiny_checkpoint: Path, openvino_calls) -> None:
    """zegclip suite --backend openvino: every benchmark evaluated with backend=openvino."""
    from tests.helpers.fake_raw import VOC_IDS, make_voc_raw
    from zegclip.cli.main import main as zegclip_main
    from zegclip.data.prepare import prepare_voc

    make_voc_raw(tmp_path / "raw", **VOC_IDS)
    prepare_voc(tmp_path / "raw", tmp_path / "data" / "voc", workers=1)
    out = tmp_path / "suite"
    argv = ["suite", "--checkpoint", str(tiny_checkpoint), "--benchmarks", "PAS-20", "--backend", "openvino"]
    assert zegclip_main([*argv, "--output", str(out), f"paths.data_dir={tmp_path / 'data'}", *SMALL_EVAL]) == 0
    assert "backend: openvino" in (out / "coco_to_voc" / "config_resolved.yaml").read_text()
    assert openvino_calls and (out / "suite.md").is_file()
