"""Write docs/demo.png: the demo page (``zegclip demo``) after segmenting two bundled examples.

    python scripts/demo_screenshot.py --checkpoint outputs/train/<run>/checkpoints/last.ckpt
    python scripts/demo_screenshot.py --tiny            # random model: meaningless masks

Serves the app on a free loopback port and drives headless Chromium (``/usr/bin/chromium``)
with Playwright, as tests/cli/test_demo.py does; the PNG is reduced to 256 colours.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import torch
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from zegclip.cli.demo import EXAMPLE_CLASSES, build_app, launch
from zegclip.model import load_model
from zegclip.model.build import zegclip_tiny

CHROMIUM_ARGS = [  # headless, offline: no first-run, sync, update or background requests
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--tiny", action="store_true")
    parser.add_argument("--output", default="docs/demo.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--short-side", type=int, default=512)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = zegclip_tiny() if args.tiny else load_model(args.checkpoint, map_location="cpu")
    name = "tiny random model" if args.tiny else Path(args.checkpoint).name
    app = build_app(model, short_side=args.short_side, model_name=name)
    examples = sorted((app.zegclip_demo.work_dir / "examples").glob("*.png"))[1:3]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch(app, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    output = Path(args.output)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 860})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#zc-files input[type=file]").set_input_files([str(p) for p in examples])
            page.locator("#zc-classes textarea").fill(EXAMPLE_CLASSES)
            page.locator("#zc-segment").click()
            expect(page.locator("#zc-status")).to_contain_text("Segmented", timeout=120_000)
            page.wait_for_function("() => [...document.querySelectorAll('#zc-overlays img')].every(i => i.complete)")
            page.evaluate("window.scrollTo(0, 0)")
            page.wait_for_timeout(500)
            shot = output.with_suffix(".full.png")
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        app.close()
    image = Image.open(shot).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    image.save(output, optimize=True)
    shot.unlink()
    print(f"{output}: {image.size[0]} x {image.size[1]}, {output.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
