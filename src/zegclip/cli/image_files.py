"""The inputs of ``zegclip predict`` and the demo: image files, folders and glob patterns -> jobs."""

from __future__ import annotations

import glob
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from zegclip.errors import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Job:
    """One input image and the output stem (relative to the output folder) for it."""

    image: Path
    stem: Path
    name: str | None = None
    """What records and messages call the image (the demo: the uploaded file's name); None: its path."""

    @property
    def label(self) -> str:
        """The image as the outputs name it."""
        return str(self.image) if self.name is None else self.name


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _expand(spec: str) -> list[tuple[Path, Path]]:
    """(image, name relative to the output folder) for one file, folder (recursive) or glob pattern.

    Raises:
        UsageError: ``spec`` neither exists nor matches any image.
    """
    path = Path(spec)
    if path.is_dir():
        images = sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p))
        if not images:
            raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {spec}")
        return [(p, p.relative_to(path)) for p in images]
    if path.is_file():
        return [(path, Path(path.name))]
    if glob.has_magic(spec):
        matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
        images = [p for p in matches if p.is_file() and _is_image(p)]
        if not images:
            raise UsageError(f"no images match {spec!r}")
        return [(p, Path(p.name)) for p in images]
    raise UsageError(f"input not found: {spec}")


def first_free_stem(stem: Path, taken: Callable[[Path], bool]) -> Path:
    """``stem``, else the first of ``stem_2``, ``stem_3``, ... for which ``taken`` is False."""
    candidate, n = stem, 1
    while taken(candidate):
        n += 1
        candidate = stem.with_name(f"{stem.name}_{n}")
    return candidate


def collect_jobs(inputs: Sequence[str]) -> list[Job]:
    """Expand files, folders (recursive) and glob patterns into jobs with unique output stems.

    A file named twice is one job; ``a.jpg`` and ``a.png`` (or the same name from two
    folders) get the stems ``a`` and ``a_2``.

    Raises:
        UsageError: an input neither exists nor matches anything.
    """
    jobs, used, done = [], set(), set()
    for image, rel in (found for spec in inputs for found in _expand(spec)):
        key = image.resolve()
        if key in done:
            continue
        done.add(key)
        stem = first_free_stem(rel.with_suffix(""), lambda candidate: str(candidate).lower() in used)
        used.add(str(stem).lower())
        jobs.append(Job(image, stem))
    return jobs
