"""zegclip demo (zegclip.cli.demo): the request code, the command line, and the page in a real browser.

The browser test serves the app on a free loopback port (in a thread) and drives headless
Chromium (``/usr/bin/chromium``, Debian's package) with Playwright: upload, vocabulary,
segment, then the legend, the areas table and the downloads against `zegclip.segment` with
the same tiny model; then bad input (each shows a message) and a good request again.
Every request to anything but the app is refused and recorded: the page must work offline.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import warnings
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scripts.demo_screenshot import CHROMIUM_ARGS  # the browser as the screenshot script starts it
from tests.helpers.exif import ORIENTATIONS, as_displayed, decoded_as_stored, stored_pattern, write_oriented_jpeg
from zegclip.cli.demo import build_parser, main
from zegclip.cli.demo_requests import Demo, DemoError, available_precisions, demo_vocabulary, read_upload
from zegclip.model.build import zegclip_tiny
from zegclip.segmentation import ImageReadError, VocabularyError, segment
from zegclip.visualize import label_image

CHROMIUM = shutil.which("chromium")
"""The browser on PATH, as `.ci/run` finds it (`command -v chromium`); None when absent."""
CLASSES = "cat; grass, lawn; sky"
SHORT_SIDE = 128

# Gradio 6 makes a new event loop each time it needs a lock outside a running loop and never
# closes it (gradio.utils.safe_get_lock): ResourceWarnings whenever the garbage collector runs.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(scope="module", autouse=True)
def _collect_gradio_event_loops():
    """Collect Gradio's unclosed event loops here, not during some later test."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        asyncio.set_event_loop(None)  # the last one Gradio made current
        gc.collect()


@pytest.fixture(scope="module")
def model():
    """The model of ``zegclip demo --tiny``: a seeded tiny random ZegCLIP."""
    torch.manual_seed(0)
    return zegclip_tiny().eval()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated uploads: two good images, a text file, a decompression bomb, one above the pixel limit."""
    root = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(0)
    paths = {}
    for name, (h, w) in {"good.png": (64, 96), "other.jpg": (50, 40)}.items():
        # smooth blobs so the random model gives more than one class
        base = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        Image.fromarray(base).resize((w, h), Image.BILINEAR).save(root / name)
        paths[name] = root / name
    paths["notes.txt"] = root / "notes.txt"
    paths["notes.txt"].write_text("not an image")
    paths["bomb.png"] = root / "bomb.png"
    paths["bomb.png"].write_bytes(_bomb_png(100_000, 100_000))
    paths["big.png"] = root / "big.png"
    Image.new("RGB", (600, 400), (90, 120, 200)).save(paths["big.png"])  # 0.24 MP: above the test limit
    return paths


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (Pillow refuses it unread)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- requests, without a browser


def test_vocabulary_syntax_never_reads_server_files(tmp_path: Path) -> None:
    assert demo_vocabulary(CLASSES) == [["cat"], ["grass", "lawn"], ["sky"]]
    assert len(demo_vocabulary(" voc ")) == 20  # a dataset name
    secret = tmp_path / "secret.txt"
    secret.write_text("password\n")
    assert demo_vocabulary(str(secret)) == [[str(secret)]]  # a class name, not the file's lines
    for text, message in [("", "empty"), (" ; , ;", "empty"), (None, "empty"), ("cat; Cat", "duplicate")]:
        with pytest.raises(VocabularyError, match=message):
            demo_vocabulary(text)
    with pytest.raises(VocabularyError, match="at most 2"):
        demo_vocabulary("a; b; c", max_classes=2)


def test_read_upload_refuses_bad_files_by_name(images: dict[str, Path]) -> None:
    assert read_upload(images["good.png"], "good.png").shape == (64, 96, 3)
    with pytest.raises(ImageReadError, match=r"^notes\.txt: not a readable image") as info:
        read_upload(images["notes.txt"], "notes.txt")
    assert str(images["notes.txt"].parent) not in str(info.value)  # never the server's path
    with pytest.raises(ImageReadError, match=r"^bomb\.png: image too large"):
        read_upload(images["bomb.png"], "bomb.png")
    with pytest.raises(ImageReadError, match=r"^big\.png: image too large \(600 x 400 = 0\.2 megapixels"):
        read_upload(images["big.png"], "big.png", max_pixels=200_000)
    assert read_upload(images["big.png"], "big.png", max_pixels=240_000).shape == (400, 600, 3)


def test_requests_give_predict_records_and_the_areas_of_segment(model, images, tmp_path: Path) -> None:
    demo = Demo(model, short_side=SHORT_SIDE, work_dir=tmp_path)
    seen = []
    out = demo.run(
        [images["good.png"], images["notes.txt"], images["other.jpg"]],
        CLASSES,
        progress=lambda *args, **kwargs: seen.append(args[0]),
    )
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)
    assert len(out.problems) == 1 and out.problems[0].startswith("notes.txt: not a readable image")
    assert "Segmented 2 image(s)" in out.status and "failed" in out.status
    rows = []
    for name, record in zip(["good.png", "other.jpg"], out.records, strict=True):
        result = segment(model, images[name], CLASSES, short_side=SHORT_SIDE)
        stem = Path(name).stem
        assert record == {  # the record of zegclip predict, naming the uploaded file
            "image": name,
            "label_png": f"{stem}_label.png",  # the download is named after the image and "label"
            "overlay": f"{stem}_overlay.jpg",
            "classes": ["cat", "grass", "sky"],
            "areas": {k: round(v, 4) for k, v in result.areas().items()},
        }
        label_path = next(p for p in out.downloads if Path(p).name == f"{stem}_label.png")
        assert np.array_equal(np.asarray(Image.open(label_path)), result.labels)
        rows += [[name, k, round(v, 1)] for k, v in result.areas().items()]
    assert out.table == rows
    assert [caption for _, caption in out.overlays] == ["good.png", "other.jpg"]
    jsonl = Path(out.downloads[-1])
    assert jsonl.name == "predictions.jsonl"
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == out.records
    assert 'data-class="grass"' in out.legend_html and out.legend_html.count('class="zc-legend"') == 2


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_a_tagged_photo_is_shown_and_labelled_as_a_viewer_shows_it(model, tmp_path: Path, orientation) -> None:
    path = write_oriented_jpeg(tmp_path / "phone.jpg", stored_pattern(48, 80), orientation)
    shown = as_displayed(decoded_as_stored(path), orientation)
    np.testing.assert_array_equal(read_upload(path, "phone.jpg"), shown)
    out = Demo(model, short_side=SHORT_SIDE, work_dir=tmp_path / "work").run([path], CLASSES)
    (label_path,) = [p for p in out.downloads if Path(p).name == "phone_label.png"]
    expected = segment(model, shown, CLASSES, short_side=SHORT_SIDE).labels
    np.testing.assert_array_equal(np.asarray(Image.open(label_path)), expected)
    with Image.open(out.overlays[0][0]) as overlay:
        assert overlay.size == (shown.shape[1], shown.shape[0])  # the photo as shown; the page draws the legend


def test_the_overlay_is_the_photo_for_any_vocabulary(model, images, tmp_path: Path) -> None:
    """Chinese, Cyrillic, emoji, a 4,500-character name, 100 classes: the page's legend, the photo's overlay."""
    long_name = ("very long class name " * 215).strip()
    vocabulary = "; ".join(["猫", "кошка", "🐈", long_name, *(f"thing {k}" for k in range(96))])
    out = Demo(model, short_side=SHORT_SIDE, work_dir=tmp_path).run([images["good.png"]], vocabulary)
    with Image.open(out.overlays[0][0]) as overlay, Image.open(images["good.png"]) as photo:
        assert overlay.size == photo.size
    for name in ("猫", "кошка", "🐈"):
        assert f'data-class="{name}"' in out.legend_html or name not in out.records[0]["areas"]
    assert [Path(p).name for p in out.downloads] == ["good_label.png", "predictions.jsonl"]


def test_requests_that_cannot_run(model, images, tmp_path: Path, monkeypatch) -> None:
    import zegclip.cli.demo_requests as requests_module

    demo = Demo(model, short_side=SHORT_SIDE, work_dir=tmp_path, max_images=2)
    good = images["good.png"]
    with pytest.raises(DemoError, match="upload at least one image"):
        demo.run([], CLASSES)
    with pytest.raises(DemoError, match="at most 2 images"):
        demo.run([good] * 3, CLASSES)
    with pytest.raises(DemoError, match="no image could be segmented: bomb.png: image too large"):
        demo.run([images["bomb.png"]], CLASSES)
    with pytest.raises(DemoError, match="not available on cpu"):
        demo.run([good], CLASSES, precision="fp16")
    with pytest.raises(DemoError, match="templates must be one of single, ensemble"):
        demo.run([good], CLASSES, templates="a photo of {}")
    with pytest.raises(VocabularyError, match="seen classes not in the vocabulary: dog"):
        demo.run([good], CLASSES, seen="dog")
    assert demo.run([good], CLASSES, seen="cat, lawn").records  # synonyms name their class
    assert available_precisions(torch.device("cpu")) == ["fp32", "bf16"]
    out = demo.run([good, images["other.jpg"]], CLASSES, mode="whole", precision="bf16")
    assert "Segmented 2 image(s)" in out.status and "bf16, whole" in out.status
    monkeypatch.setattr(requests_module, "KEEP_REQUESTS", 2)
    demo.run([good], CLASSES)
    assert len(list((tmp_path / "requests").iterdir())) == 2  # older request folders are removed


def test_main_loads_the_model_then_serves(monkeypatch, capsys) -> None:
    pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
    import zegclip.cli.demo as demo_module

    served = {}

    def fake_launch(app, host, port, **kwargs):
        served.update(app=app, host=host, port=port, **kwargs)

    monkeypatch.setattr(demo_module, "launch", fake_launch)
    assert main(["--tiny", "--port", "7999", "--short-side", "64"]) == 0
    assert served["host"] == "127.0.0.1" and served["port"] == 7999
    assert served["app"].zegclip_demo.short_side == 64
    assert build_parser().parse_args(["--tiny"]).port == 7860
    assert main(["--checkpoint", "missing.pth"]) == 2
    assert "checkpoint not found: missing.pth" in capsys.readouterr().err
    assert main(["--tiny", "--short-side", "5"]) == 2
    if not torch.cuda.is_available():
        assert main(["--tiny", "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_core_package_never_imports_gradio() -> None:
    """Gradio is an optional extra: only serving the demo imports it (``--help`` does not)."""
    code = (
        "import runpy, sys, zegclip, zegclip.segmentation, zegclip.visualize, zegclip.cli.main, zegclip.cli.predict\n"
        "assert 'gradio' not in sys.modules\n"
        "sys.argv = ['zegclip.demo', '--help']\n"
        "try:\n    runpy.run_module('zegclip.demo', run_name='__main__')\n"
        "except SystemExit as done:\n    assert done.code == 0\n"
        "sys.exit(1 if 'gradio' in sys.modules else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--checkpoint" in result.stdout, result.stderr[-1000:]


# ---------------------------------------------------------------- the page, in a real browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(model, tmp_path_factory: pytest.TempPathFactory):
    """The demo app of the tiny model on a free loopback port: its URL."""
    pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
    from zegclip.cli.demo import build_app, launch

    app = build_app(model, short_side=SHORT_SIDE, max_pixels=200_000, work_dir=tmp_path_factory.mktemp("demo"))
    port = _free_port()
    launch(app, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def test_page_in_a_real_browser(served: str, model, images: dict[str, Path], tmp_path: Path) -> None:
    missing = "chromium is not on PATH (apt-get install chromium; .ci/run installs it)" if CHROMIUM is None else None
    try:
        import playwright.sync_api as playwright_api
    except ImportError:
        missing = missing or "playwright is not installed (the dev extra)"
    if missing:  # CI (.ci/run sets CI=1) must run this test; elsewhere it may be left out
        (pytest.fail if os.environ.get("CI") else pytest.skip)(missing)
    expect = playwright_api.expect
    external: list[str] = []

    def offline(route) -> None:  # the network is closed: only the app itself answers
        url = route.request.url
        if url.startswith((served, "data:", "blob:")):
            route.continue_()
        else:
            external.append(url)
            route.abort()

    with playwright_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            context.route("**/*", offline)
            page = context.new_page()
            page.goto(served)
            files, status = page.locator("#zc-files"), page.locator("#zc-status")

            def submit(uploads: list[str], classes: str, expected: str) -> None:
                clear = files.get_by_role("button", name="Clear")
                if clear.count():
                    clear.first.click()
                    expect(files.locator("td.filename")).to_have_count(0)
                if uploads:
                    files.locator("input[type=file]").set_input_files([str(images[name]) for name in uploads])
                    expect(files.locator("td.filename")).to_have_count(len(uploads))
                page.locator("#zc-classes textarea").fill(classes)
                page.locator("#zc-segment").click()
                expect(status).to_contain_text(expected, timeout=30_000)

            def check_results() -> None:
                result = segment(model, images["good.png"], CLASSES, short_side=SHORT_SIDE)
                shown = [(f"{a:.1f}%", n) for n, a in result.areas().items()]
                legend = page.locator("#zc-legend .zc-entry")
                expect(legend).to_have_count(len(shown))
                names = legend.locator(".zc-name").all_inner_texts()
                areas = legend.locator(".zc-area").all_inner_texts()
                assert list(zip(areas, names, strict=True)) == shown
                rows = page.locator("#zc-areas [role=row][data-index]")
                expect(rows).to_have_count(len(shown))
                table = [rows.nth(i).locator("[role=gridcell]").all_inner_texts() for i in range(rows.count())]
                assert table == [["good.png", n, f"{float(a[:-1]):g}"] for a, n in shown]
                overlay = page.locator("#zc-overlays img").first
                expect(overlay).to_be_visible()
                page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=overlay.element_handle())
                links = dict(page.locator("#zc-downloads a").evaluate_all("els => els.map(e => [e.download, e.href])"))
                assert set(links) == {"good_label.png", "predictions.jsonl"}
                record = json.loads(page.request.get(links["predictions.jsonl"]).body())
                assert record["image"] == "good.png" and record["classes"] == ["cat", "grass", "sky"]
                assert record["areas"] == {n: round(a, 4) for n, a in result.areas().items()}
                label = Image.open(BytesIO(page.request.get(links["good_label.png"]).body()))
                assert np.array_equal(np.asarray(label), np.asarray(label_image(result.labels)))

            submit(["good.png"], CLASSES, "Segmented 1 image(s)")
            check_results()
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)

            # bad input: each gives a message in the page, and the app keeps serving
            submit(["good.png"], " ; ", "Error: the vocabulary given is empty")
            submit(["good.png"], "cat; sky; Cat", "Error: duplicate class names in the vocabulary given: Cat")
            submit(["notes.txt"], CLASSES, "Error: no image could be segmented: notes.txt: not a readable image")
            submit(["bomb.png"], CLASSES, "Error: no image could be segmented: bomb.png: image too large")
            submit(["big.png"], CLASSES, "big.png: image too large (600 x 400 = 0.2 megapixels")
            expect(page.locator("#zc-legend .zc-entry")).to_have_count(0)  # no stale results under an error
            expect(page.get_by_text("bomb.png: image too large").first).to_be_attached()  # the warning toast
            submit([], CLASSES, "Error: upload at least one image")

            submit(["good.png", "notes.txt"], CLASSES, "failed: notes.txt: not a readable image")
            expect(status).to_contain_text("Segmented 1 image(s)")
            check_results()
            page.screenshot(path=str(tmp_path / "demo_after_errors.png"), full_page=True)
        finally:
            context.close()
    assert external == [], f"the page asked the network for {external}"
    assert (tmp_path / "demo.png").stat().st_size > 10_000
