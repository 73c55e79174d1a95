"""The one read -> segment -> write loop of ``zegclip predict`` and the demo.

Each image ends as an `Outcome`: written (its record), or failed at one stage with the error.
A failure never stops the other images: an unreadable file, an image that runs out of memory,
a full disk each end their own image only.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zegclip.cli.image_files import Job
from zegclip.cli.prediction_files import write_outputs
from zegclip.errors import one_line
from zegclip.model import ZegCLIP
from zegclip.segmentation import ImageReadError, ScaleWarning, SegmentResult, load_image, segment_batch

Reader = Callable[[Job], np.ndarray]
"""Reads a job's image as H x W x 3 uint8 RGB; raises ImageReadError naming the file."""


@dataclass
class Outcome:
    """What became of one image: its record (written), or the stage that failed and why."""

    job: Job
    result: SegmentResult | None = None
    record: dict | None = None
    """The predictions.jsonl record of the written outputs (None when failed)."""
    failed: str | None = None
    """``read``, ``segment`` or ``write``; None when the outputs were written."""
    error: BaseException | None = None

    def message(self) -> str:
        """One line saying what failed for which image (no ``error:`` prefix)."""
        if isinstance(self.error, ImageReadError):  # already names the file
            return str(self.error)
        action = {"read": "read image", "segment": "segment", "write": "write outputs for"}[self.failed]
        return f"cannot {action} {self.job.label}: {one_line(self.error)}"


def read_file(job: Job) -> np.ndarray:
    """The default `Reader`: the file as a viewer shows it (EXIF orientation applied)."""
    return load_image(job.image)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def segment_jobs(
    model: ZegCLIP, loaded: list[tuple[Job, np.ndarray]], **options
) -> Iterator[tuple[Job, np.ndarray, SegmentResult | Exception]]:
    """Segment loaded images; a failure (out of memory, ...) is returned for its image alone.

    A group (whole mode) that fails is retried one image at a time, so the other images
    of the group still get their result.
    """
    if not loaded:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ScaleWarning)  # reported from result.note instead
            results = list(segment_batch(model, [image for _, image in loaded], **options))
    except Exception as err:  # one bad image must not stop the others
        err.__traceback__ = None  # its frames hold the failed batch's tensors
        _free_memory()
        if len(loaded) > 1:
            for item in loaded:
                yield from segment_jobs(model, [item], **options)
            return
        job, image = loaded[0]
        yield job, image, err
        return
    for (job, image), result in zip(loaded, results, strict=True):
        yield job, image, result


def _read_all(jobs: Sequence[Job], read: Reader) -> tuple[list[tuple[Job, np.ndarray]], list[Outcome]]:
    """(the images read, the outcomes of those that could not be)."""
    loaded, failed = [], []
    for job in jobs:
        try:
            loaded.append((job, read(job)))
        except Exception as err:  # ImageReadError, or e.g. MemoryError decoding a huge image
            failed.append(Outcome(job, failed="read", error=err))
    return loaded, failed


def segment_files(
    model: ZegCLIP,
    jobs: Sequence[Job],
    output: Path,
    *,
    read: Reader = read_file,
    legend: bool = True,
    **options,
) -> Iterator[Outcome]:
    """Read, segment and write each job's image; one `Outcome` per job, in order of completion.

    ``options`` go to :func:`zegclip.segmentation.segment_batch`; in ``whole`` mode
    ``batch_size`` images are read and segmented together, in ``slide`` mode one image at a
    time (its windows are the batch). ``legend``: draw the class legend on the overlay.
    """
    chunk = options.get("batch_size", 1) if options.get("mode") == "whole" else 1
    for first in range(0, len(jobs), chunk):
        loaded, unread = _read_all(jobs[first : first + chunk], read)
        yield from unread
        for job, image, result in segment_jobs(model, loaded, **options):
            if isinstance(result, Exception):
                yield Outcome(job, failed="segment", error=result)
                continue
            try:
                record = write_outputs(job, image, result, output, legend=legend)
            except Exception as err:  # e.g. disk full, an image too large for JPEG
                yield Outcome(job, result, failed="write", error=err)
                continue
            yield Outcome(job, result, record)
