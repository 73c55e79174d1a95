"""Command line: a web demo (Gradio) to segment uploaded images with any vocabulary.

Example::

    zegclip demo --checkpoint ZegCLIP_voc.pth          # then open http://127.0.0.1:7860
    zegclip demo --tiny                                # tiny random model: no download, meaningless masks

Needs the ``demo`` extra (``pip install -e ".[demo]"``); the rest of the package never
imports Gradio. The page runs offline (no analytics, fonts or scripts from elsewhere).

Each request runs the code of ``zegclip predict`` (:mod:`zegclip.cli.predict`): the same
vocabulary syntax (``;`` between classes, ``,`` between synonyms, or a dataset name), the
same segmentation (:func:`zegclip.segmentation.segment_batch`) and the same outputs: the
overlay (the photo alone: the page draws the legend, in any script, beside it), the label
PNG (``<image>_label.png``) and the ``predictions.jsonl`` record, offered as downloads. Bad
input (an empty or repeated vocabulary, a file that is not an image, an image above the pixel
limit) gives a message in the page; the app stays up.
"""

from __future__ import annotations

import argparse
import atexit
import html
import itertools
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from zegclip.cli.predict import (
    PREDICTIONS_FILE,
    Job,
    collect_jobs,
    load_checkpoint_model,
    one_line,
    parse_seen,
    segment_jobs,
    write_outputs,
)
from zegclip.data.classes import DATASETS, SYNTHETIC_CLASSES
from zegclip.data.synthetic import make_sample
from zegclip.errors import UsageError, ZegCLIPError, run_command
from zegclip.model import ZegCLIP
from zegclip.openvino import BACKENDS, check_backend, command_precision, compile_model, cpu_precisions
from zegclip.segmentation import (
    MAX_SHORT_SIDE,
    MIN_SIDE,
    ImageReadError,
    Vocabulary,
    VocabularyError,
    check_short_side,
    load_image,
    parse_vocabulary,
    resolve_device,
)
from zegclip.visualize import palette

if TYPE_CHECKING:
    import gradio

MAX_PIXELS = 24_000_000
"""Default pixel limit of an uploaded image (a 6000 x 4000 photo); larger ones are refused unread."""
MAX_IMAGES = 16
"""Default number of images in one request."""
MAX_CLASSES = 1000
"""Most classes in one vocabulary (ADE20K-847 fits)."""
KEEP_REQUESTS = 16
"""Output folders of the latest requests kept on disk (Gradio copies what it serves into its cache)."""
EXAMPLE_CLASSES = "; ".join(SYNTHETIC_CLASSES)
"""The vocabulary of the bundled examples (images from `zegclip.data.synthetic`)."""
TEMPLATES = ("single", "ensemble")
"""Prompt templates offered (those of ``zegclip predict --templates``)."""
ProgressFn = Callable[..., Any]


class DemoError(ZegCLIPError):
    """A request that cannot run at all; the message is shown in the page."""


# ---------------------------------------------------------------- requests (no Gradio here)


def demo_vocabulary(text: str | None, max_classes: int = MAX_CLASSES) -> Vocabulary:
    """The ``zegclip predict --classes`` syntax, without reading files on the server.

    ``"cat; grass, lawn; sky"`` (``;`` between classes, ``,`` between synonyms) or a
    dataset name. A name with ``/`` is a class name here, never a path.

    Raises:
        VocabularyError: empty, a repeated name, or more than ``max_classes`` classes.
    """
    text = (text or "").strip()
    vocabulary = parse_vocabulary(text) if text in DATASETS else parse_vocabulary(text.split(";"))
    if len(vocabulary) > max_classes:
        raise VocabularyError(f"the vocabulary has {len(vocabulary)} classes; this demo takes at most {max_classes}")
    return vocabulary


def read_upload(path: str | os.PathLike, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read one uploaded image, refusing (before decoding) any above ``max_pixels``.

    Raises:
        ImageReadError: not an image, unreadable, or too large; the message names ``name``
            (not the server's temporary path).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(path) as pil:  # reads the header only
                width, height = pil.size
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{name}: image too large to read ({err})") from err
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        reason = one_line(err).replace(str(path), name)  # not the server's temporary path
        raise ImageReadError(f"{name}: not a readable image ({reason})") from err
    if width * height > max_pixels:
        raise ImageReadError(
            f"{name}: image too large ({width} x {height} = {width * height / 1e6:.1f} megapixels; "
            f"this demo takes at most {max_pixels / 1e6:g})"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return load_image(path)
    except ImageReadError as err:
        raise ImageReadError(str(err).replace(str(path), name)) from err


def available_precisions(device: torch.device) -> list[str]:
    """The precisions worth offering on ``device`` (fp16 only on GPUs, bf16 where supported)."""
    if device.type != "cuda":
        return ["fp32", "bf16"]
    return ["fp32", "bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp32", "fp16"]


def write_examples(folder: Path, count: int = 3, size: tuple[int, int] = (192, 256)) -> list[Path]:
    """Generated example images (`zegclip.data.synthetic`), for the `EXAMPLE_CLASSES` vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        image, _ = make_sample(np.random.default_rng(index), *size)
        path = folder / f"example_{index + 1}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def _colour(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


@dataclass
class DemoOutput:
    """What one request shows: overlays, legend, area table, downloads and a status line."""

    overlays: list[tuple[str, str]] = field(default_factory=list)
    """(overlay JPEG path, caption) per segmented image."""
    legend_html: str = ""
    table: list[list[Any]] = field(default_factory=list)
    """Rows [image, class, area % rounded to 0.1] per class present, largest first."""
    downloads: list[str] = field(default_factory=list)
    """Label PNGs, then predictions.jsonl (the records of ``zegclip predict``)."""
    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """One message per image that failed; the others are shown."""
    status: str = ""


def legend_html(records: list[tuple[str, list[str], dict[str, float]]]) -> str:
    """One legend per image: colour swatch (the overlay's colour), class name, area %."""
    blocks = []
    for image, class_names, areas in records:
        colours = palette(max(256, len(class_names)))
        index = {name: c for c, name in enumerate(class_names)}
        items = "".join(
            f'<li class="zc-entry" data-class="{html.escape(name)}" data-area="{area:.1f}" '
            'style="display:flex;align-items:center;gap:0.4em;margin:0.1em 0">'
            f'<span class="zc-swatch" style="display:inline-block;width:1em;height:1em;border-radius:2px;'
            f'background:{_colour(colours[index[name]])}"></span>'
            f'<span class="zc-name">{html.escape(name)}</span> <span class="zc-area">{area:.1f}%</span></li>'
            for name, area in areas.items()
        )
        blocks.append(
            f'<div class="zc-legend" data-image="{html.escape(image)}"><strong>{html.escape(image)}</strong>'
            f'<ul style="list-style:none;padding:0;margin:0.2em 0 0.8em 0">{items}</ul></div>'
        )
    return "".join(blocks)


class Demo:
    """The demo's requests: uploaded files and options in, ``zegclip predict``'s outputs out.

    One instance serves one app; requests run one at a time (the model is shared).
    """

    def __init__(
        self,
        model: ZegCLIP,
        *,
        device: str | torch.device = "cpu",
        templates: str = "single",
        short_side: int = 512,
        batch_size: int = 8,
        max_pixels: int = MAX_PIXELS,
        max_images: int = MAX_IMAGES,
        max_classes: int = MAX_CLASSES,
        work_dir: str | os.PathLike | None = None,
        backend: str = "torch",
    ) -> None:
        if templates not in TEMPLATES:
            raise ValueError(f"templates must be one of {', '.join(TEMPLATES)}, got {templates!r}")
        check_short_side(short_side or None)
        check_backend(backend)
        if backend == "openvino":
            command_precision(None, device)  # the CPU only
        self.device = resolve_device(device, model)
        self.model = model.to(self.device).eval()
        self.templates = templates
        self.short_side = short_side
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.max_images = max_images
        self.max_classes = max_classes
        if work_dir is None:
            work_dir = tempfile.mkdtemp(prefix="zegclip-demo-")
            atexit.register(shutil.rmtree, work_dir, ignore_errors=True)
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        if backend == "openvino":  # compiled now (converted once, cached), so the first request is not slow
            self.precisions = cpu_precisions()[::-1]  # the best first: the default choice
            compile_model(model, self.precisions[0])
        else:
            self.precisions = available_precisions(self.device)
        self._requests = itertools.count(1)

    def _request_dir(self) -> Path:
        """A fresh output folder; the oldest beyond `KEEP_REQUESTS` are removed."""
        root = self.work_dir / "requests"
        root.mkdir(exist_ok=True)
        old = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for path in old[: max(0, len(old) - KEEP_REQUESTS + 1)]:
            shutil.rmtree(path, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f"{next(self._requests):06d}-", dir=root))

    def run(
        self,
        files: Sequence[str | os.PathLike] | None,
        classes: str | None,
        seen: str | None = None,
        mode: str = "slide",
        precision: str = "fp32",
        templates: str | None = None,
        progress: ProgressFn | None = None,
    ) -> DemoOutput:
        """Segment the uploaded files.

        Raises:
            DemoError: nothing to segment, bad options, or no image could be segmented.
            VocabularyError: the vocabulary or the seen classes cannot be used.
        """
        start = time.perf_counter()
        if not files:
            raise DemoError("upload at least one image (or pick an example below)")
        if len(files) > self.max_images:
            raise DemoError(f"{len(files)} files: this demo takes at most {self.max_images} images per request")
        if mode not in ("slide", "whole"):
            raise DemoError(f"mode must be slide or whole, got {mode!r}")
        if precision not in self.precisions:
            raise DemoError(f"precision {precision!r} is not available on {self.device.type}: {self.precisions}")
        templates = templates or self.templates
        if templates not in TEMPLATES:
            raise DemoError(f"templates must be one of {', '.join(TEMPLATES)}, got {templates!r}")
        vocabulary = demo_vocabulary(classes, self.max_classes)
        seen_names = parse_seen(seen if seen and seen.strip() else None, vocabulary)
        jobs = collect_jobs([str(f) for f in files])
        out, output = DemoOutput(), self._request_dir()
        options = {
            "classes": vocabulary,
            "templates": templates,
            "seen": seen_names,
            "mode": mode,
            "short_side": self.short_side or None,
            "device": self.device,
            "precision": precision,
            "batch_size": self.batch_size,
            "keep_scores": False,
        }
        model = self.model
        if self.backend == "openvino":  # the image side in OpenVINO at this precision (compiled once)
            model, options["precision"] = compile_model(self.model, precision), "fp32"
        chunk = self.batch_size if mode == "whole" else 1
        legends, notes = [], []
        for first in range(0, len(jobs), chunk):
            if progress is not None:
                progress((first, len(jobs)), desc="segmenting", unit="images")
            loaded = []
            for job in jobs[first : first + chunk]:
                # the record names the uploaded file, not the server's temporary copy
                named = Job(Path(job.image.name), job.stem)
                try:
                    loaded.append((named, read_upload(job.image, job.image.name, self.max_pixels)))
                except ImageReadError as err:
                    out.problems.append(str(err))
                except Exception as err:  # e.g. MemoryError decoding
                    out.problems.append(f"{job.image.name}: cannot read: {one_line(err)}")
            for job, image, result in segment_jobs(model, loaded, **options):
                if isinstance(result, Exception):
                    out.problems.append(f"{job.image}: cannot segment: {one_line(result)}")
                    continue
                try:  # the page shows the legend (any script, any length): the overlay is the photo alone
                    record = write_outputs(job, image, result, output, legend=False)
                except Exception as err:
                    out.problems.append(f"{job.image}: cannot write the outputs: {one_line(err)}")
                    continue
                if result.note is not None:
                    notes.append(f"{job.image}: {result.note}")
                out.records.append(record)
                out.overlays.append((str(output / record["overlay"]), str(job.image)))
                out.downloads.append(str(output / record["label_png"]))
                areas = result.areas()
                legends.append((str(job.image), result.class_names, areas))
                out.table += [[str(job.image), name, round(area, 1)] for name, area in areas.items()]
        if progress is not None:
            progress((len(jobs), len(jobs)), desc="done", unit="images")
        if not out.records:
            raise DemoError("no image could be segmented: " + "; ".join(out.problems))
        out.downloads.append(str(output / PREDICTIONS_FILE))
        out.legend_html = legend_html(legends)
        seconds = time.perf_counter() - start
        lines = [
            f"Segmented {len(out.records)} image(s) in {seconds:.1f} s "
            f"({self.device.type}, {self.backend}, {precision}, {mode}, {len(vocabulary)} classes)."
        ]
        lines += [f"- note: {html.escape(note)}" for note in notes]
        lines += [f"- **failed**: {html.escape(problem)}" for problem in out.problems]
        out.status = "\n".join(lines)
        return out


# ---------------------------------------------------------------- the Gradio app


def import_gradio() -> Any:
    """Import Gradio with its analytics off; a UsageError with the install hint when missing."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio
    except ImportError as err:
        raise UsageError('the demo needs Gradio: pip install "zegclip[demo]" (or pip install -e ".[demo]")') from err
    return gradio


def _describe(model: ZegCLIP, source: str | None) -> str:
    clip = model.config.get("clip_model")
    parts = [html.escape(source) if source else "", html.escape(str(clip)) if clip else ""]
    return ", ".join(p for p in parts if p)


def build_app(
    model: ZegCLIP,
    *,
    device: str | torch.device = "cpu",
    templates: str = "single",
    short_side: int = 512,
    max_pixels: int = MAX_PIXELS,
    max_images: int = MAX_IMAGES,
    work_dir: str | os.PathLike | None = None,
    title: str = "ZegCLIP: open-vocabulary segmentation",
    model_name: str | None = None,
    examples: bool = True,
    backend: str = "torch",
) -> gradio.Blocks:
    """The Gradio page around a `Demo` of ``model`` (launch it with `launch`)."""
    gr = import_gradio()
    demo = Demo(
        model,
        device=device,
        templates=templates,
        short_side=short_side,
        max_pixels=max_pixels,
        max_images=max_images,
        work_dir=work_dir,
        backend=backend,
    )

    def segment_request(files, classes, seen, mode, precision, templates, progress=gr.Progress()):  # noqa: B008
        empty = ([], "", [], None)
        try:
            out = demo.run(files, classes, seen, mode, precision, templates, progress=progress)
        except ZegCLIPError as err:  # a bad vocabulary, option or upload: shown in the page
            message = str(err)
            gr.Warning(message)
            return (*empty, f"**Error:** {html.escape(message)}")
        except Exception as err:  # the app stays up; the details go to the server's log
            traceback.print_exc()
            message = f"internal error: {one_line(err)}"
            gr.Warning(message)
            return (*empty, f"**Error:** {html.escape(message)}")
        for problem in out.problems:
            gr.Warning(problem)
        return out.overlays, out.legend_html, out.table, out.downloads, out.status

    described = _describe(model, model_name)
    with gr.Blocks(analytics_enabled=False, title=title, delete_cache=(600, 3600)) as app:
        gr.Markdown(
            f"# {html.escape(title)}\n"
            f"Model: {described or 'ZegCLIP'} on {demo.device.type}. Upload images, name the classes "
            "(`;` between classes, `,` between synonyms, or a dataset name such as `voc`), then **Segment**."
        )
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Images", file_count="multiple", type="filepath", elem_id="zc-files")
                classes = gr.Textbox(
                    label="Classes",
                    placeholder="cat; grass, lawn; sky",
                    lines=1,
                    max_lines=4,
                    elem_id="zc-classes",
                )
                with gr.Accordion("Options", open=False):
                    seen = gr.Textbox(
                        label="Seen classes (optional: inductive checkpoints; names or a dataset name)",
                        placeholder="voc",
                        elem_id="zc-seen",
                    )
                    mode = gr.Radio(["slide", "whole"], value="slide", label="Mode", elem_id="zc-mode")
                    precision = gr.Radio(
                        demo.precisions,
                        value=demo.precisions[0],
                        label=f"Precision ({demo.device.type}, {demo.backend})",
                        elem_id="zc-precision",
                    )
                    templates_choice = gr.Radio(
                        list(TEMPLATES), value=templates, label="Prompt templates", elem_id="zc-templates"
                    )
                button = gr.Button("Segment", variant="primary", elem_id="zc-segment")
                if examples:
                    paths = write_examples(demo.work_dir / "examples")
                    gr.Examples(
                        examples=[[[str(path)], EXAMPLE_CLASSES] for path in paths],
                        inputs=[files, classes],
                        label="Examples (generated images; use the vocabulary of the synthetic dataset)",
                    )
            with gr.Column(scale=2):
                status = gr.Markdown("", elem_id="zc-status")
                gallery = gr.Gallery(
                    label="Overlays",
                    columns=2,
                    height="auto",
                    object_fit="contain",
                    format="jpeg",
                    interactive=False,
                    elem_id="zc-overlays",
                )
                legend = gr.HTML(elem_id="zc-legend")
                table = gr.Dataframe(
                    headers=["image", "class", "area %"],
                    datatype=["str", "str", "number"],
                    label="Areas",
                    interactive=False,
                    elem_id="zc-areas",
                )
                downloads = gr.File(
                    label="Downloads: label PNGs and predictions.jsonl", interactive=False, elem_id="zc-downloads"
                )
        inputs = [files, classes, seen, mode, precision, templates_choice]
        outputs = [gallery, legend, table, downloads, status]
        for trigger in (button.click, classes.submit):
            # one request at a time across both triggers: the model is shared
            trigger(segment_request, inputs, outputs, concurrency_limit=1, concurrency_id="segment")
    app.zegclip_demo = demo  # for tests and embedding
    return app


def launch(
    app: gradio.Blocks,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
    max_file_size: str | int | None = "64mb",
) -> Any:
    """Serve ``app`` locally: no share link, no analytics, no server-side rendering, system fonts."""
    gr = import_gradio()
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    return app.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        show_error=True,
        max_file_size=max_file_size,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        theme=theme,
    )


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The command line options."""
    parser = argparse.ArgumentParser(
        prog="zegclip demo",
        description="A local web page to segment images with ZegCLIP and a vocabulary of your choice (Gradio).",
        epilog="example: zegclip demo --checkpoint ZegCLIP_voc.pth --device cuda   (then open http://127.0.0.1:7860)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="ZegCLIP.save file, training .ckpt, or the authors' .pth")
    source.add_argument("--tiny", action="store_true", help="tiny random model (no download; meaningless masks)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="openvino: the image side in OpenVINO, CPU only (pip install 'zegclip[openvino]'; converted once, cached)",
    )
    parser.add_argument("--templates", default="single", choices=TEMPLATES, help="default prompt templates")
    parser.add_argument(
        "--short-side",
        type=int,
        default=512,
        help=f"resize so the short side is this, {MIN_SIDE}..{MAX_SHORT_SIDE} (paper: 512; 0: keep size)",
    )
    parser.add_argument(
        "--max-pixels", type=int, default=MAX_PIXELS, help="refuse uploaded images with more pixels than this"
    )
    parser.add_argument("--max-images", type=int, default=MAX_IMAGES, help="images per request")
    parser.add_argument("--max-file-size", default="64mb", help="largest upload, e.g. 64mb")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Option values that can be checked before loading the model."""
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    if args.short_side != 0 and not MIN_SIDE <= args.short_side <= MAX_SHORT_SIDE:
        raise UsageError(f"--short-side must be between {MIN_SIDE} and {MAX_SHORT_SIDE} (or 0), got {args.short_side}")
    if args.max_pixels < 1 or args.max_images < 1:
        raise UsageError("--max-pixels and --max-images must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but CUDA is not available")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(args: argparse.Namespace) -> int:
    """Load the model, build the page and serve it until Ctrl-C or SIGTERM (exit code 0)."""
    check_args(args)
    import_gradio()
    model = load_checkpoint_model(args)
    app = build_app(
        model,
        device=args.device,
        templates=args.templates,
        short_side=args.short_side,
        max_pixels=args.max_pixels,
        max_images=args.max_images,
        model_name="tiny random model" if args.tiny else Path(args.checkpoint).name,
        backend=args.backend,
    )
    main_thread = threading.current_thread() is threading.main_thread()
    # SIGTERM stops the server as Ctrl-C does: it closes, the work folder is removed at exit
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        launch(app, args.host, args.port, max_file_size=args.max_file_size)
    except OSError as err:  # e.g. the port is taken
        raise UsageError(f"cannot serve on {args.host}:{args.port}: {err}") from err
    except KeyboardInterrupt:  # the way a server is stopped: not an error
        pass
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zegclip demo`` / ``python -m zegclip.demo``; serves until interrupted."""
    return run_command(serve, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
