"""The demo's requests, without Gradio: uploaded files and options in, ``zegclip predict``'s outputs out.

Each request runs the loop of ``zegclip predict`` (:func:`zegclip.cli.segment_files.segment_files`):
the same vocabulary syntax (``;`` between classes, ``,`` between synonyms, or a dataset name),
the same segmentation and the same outputs: the overlay (the photo alone: the page draws the
legend, in any script, beside it), the label PNG (``<image>_label.png``) and the
``predictions.jsonl`` record, offered as downloads. Bad input (an empty or repeated
vocabulary, a file that is not an image, an image above the pixel limit) is a `DemoError`,
a `VocabularyError` or a problem listed in the output; nothing here stops the app.
"""

from __future__ import annotations

import atexit
import html
import itertools
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from zegclip.cli.image_files import Job, collect_jobs
from zegclip.cli.prediction_files import PREDICTIONS_FILE
from zegclip.cli.segment_files import Outcome, segment_files
from zegclip.data.classes import DATASETS, SYNTHETIC_CLASSES
from zegclip.data.synthetic import make_sample
from zegclip.errors import ZegCLIPError, one_line
from zegclip.model import ZegCLIP
from zegclip.openvino import check_backend, command_precision, compile_model, cpu_precisions
from zegclip.segmentation import (
    ImageReadError,
    Vocabulary,
    VocabularyError,
    check_short_side,
    load_image,
    parse_vocabulary,
    resolve_device,
)
from zegclip.visualize import palette
from zegclip.vocabulary import seen_names

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
    notes: list[str] = field(default_factory=list)
    """Notes on segmented images (e.g. an extreme aspect ratio capped)."""
    status: str = ""
    legends: list[tuple[str, list[str], dict[str, float]]] = field(default_factory=list)
    """(image, class names, areas) per segmented image, for `legend_html`."""

    def add(self, outcome: Outcome, output: Path) -> None:
        """Show one image's outcome: its overlay, legend, areas and label PNG, or its problem."""
        name = outcome.job.label
        if outcome.failed is not None:
            self.problems.append(outcome.message())
            return
        result, record = outcome.result, outcome.record
        if result.note is not None:
            self.notes.append(f"{name}: {result.note}")
        self.records.append(record)
        self.overlays.append((str(output / record["overlay"]), name))
        self.downloads.append(str(output / record["label_png"]))
        areas = result.areas()
        self.legends.append((name, result.class_names, areas))
        self.table += [[name, class_name, round(area, 1)] for class_name, area in areas.items()]

    def finish(self, summary: str) -> None:
        """The legend HTML, and the status: ``summary``, then a line per note and per failed image."""
        self.legend_html = legend_html(self.legends)
        lines = [summary]
        lines += [f"- note: {html.escape(note)}" for note in self.notes]
        lines += [f"- **failed**: {html.escape(problem)}" for problem in self.problems]
        self.status = "\n".join(lines)


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

    def _check_request(self, files: Sequence[Any] | None, mode: str, precision: str, templates: str) -> None:
        """Raise a `DemoError` for a request that cannot run (nothing uploaded, too many files, bad options)."""
        if not files:
            raise DemoError("upload at least one image (or pick an example below)")
        if len(files) > self.max_images:
            raise DemoError(f"{len(files)} files: this demo takes at most {self.max_images} images per request")
        if mode not in ("slide", "whole"):
            raise DemoError(f"mode must be slide or whole, got {mode!r}")
        if precision not in self.precisions:
            raise DemoError(f"precision {precision!r} is not available on {self.device.type}: {self.precisions}")
        if templates not in TEMPLATES:
            raise DemoError(f"templates must be one of {', '.join(TEMPLATES)}, got {templates!r}")

    def _model_at(self, precision: str) -> tuple[ZegCLIP, str]:
        """(the model to segment with, the autocast precision around it) for ``precision``."""
        if self.backend == "openvino":  # the image side in OpenVINO at this precision (compiled once)
            return compile_model(self.model, precision), "fp32"
        return self.model, precision

    def _read(self, job: Job) -> np.ndarray:
        return read_upload(job.image, job.label, self.max_pixels)

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
        templates = templates or self.templates
        self._check_request(files, mode, precision, templates)
        vocabulary = demo_vocabulary(classes, self.max_classes)
        seen_classes = seen_names(seen if seen and seen.strip() else None, vocabulary)
        # the records name the uploaded file, not the server's temporary copy
        jobs = [Job(job.image, job.stem, job.image.name) for job in collect_jobs([str(f) for f in files])]
        output = self._request_dir()
        model, autocast = self._model_at(precision)
        outcomes = segment_files(
            model,
            jobs,
            output,
            read=self._read,
            legend=False,  # the page shows the legend (any script, any length): the overlay is the photo alone
            classes=vocabulary,
            templates=templates,
            seen=seen_classes,
            mode=mode,
            short_side=self.short_side or None,
            device=self.device,
            precision=autocast,
            batch_size=self.batch_size,
            keep_scores=False,
        )
        out = DemoOutput()
        for count, outcome in enumerate(outcomes):
            if progress is not None:
                progress((count, len(jobs)), desc="segmenting", unit="images")
            out.add(outcome, output)
        if progress is not None:
            progress((len(jobs), len(jobs)), desc="done", unit="images")
        if not out.records:
            raise DemoError("no image could be segmented: " + "; ".join(out.problems))
        out.downloads.append(str(output / PREDICTIONS_FILE))
        what = f"{self.device.type}, {self.backend}, {precision}, {mode}, {len(vocabulary)} classes"
        out.finish(f"Segmented {len(out.records)} image(s) in {time.perf_counter() - start:.1f} s ({what}).")
        return out
