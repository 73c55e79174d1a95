"""The file work shared by the preparers of :mod:`zegclip.data.prepare`.

Archives are extracted into ``<out>/.raw_extract``; nothing is written outside
``--out``. Each extraction records which archive it came from (path, size, mtime) and
is redone when the archive changed. Images are hard-linked (copied where linking
fails), never moved. Labels and split lists are written to a temporary name and
renamed, so a file under its final name is always complete, and a re-run skips a
label unless its source changed after it was written.

Before the split lists are written, every id they name is checked to have an image
and a label in ``--out`` (:func:`write_checked_lists`): an archive cut short, or lists
naming files the downloads lack, is an error, not a quietly smaller dataset.

Where the prepared files go is :mod:`zegclip.data.layouts`; :func:`dataset_items` and
:func:`valid_label_values` are shared with :mod:`zegclip.data.verify`.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from zegclip.atomic import atomic_path, atomic_write
from zegclip.data import layouts
from zegclip.data.classes import DATASETS
from zegclip.data.layouts import read_ids as read_split
from zegclip.errors import ZegCLIPError

__all__ = [
    "EXTRACT_DIR",
    "EXTRACT_STAMP",
    "OFFICIAL_COUNTS",
    "PrepareError",
    "dataset_items",
    "default_workers",
    "is_current",
    "link_or_copy",
    "read_split",
    "valid_label_values",
    "write_label_png",
    "write_split",
]

logger = logging.getLogger("zegclip.data.prepare")  # one name for the package: the CLI's lines

EXTRACT_DIR = ".raw_extract"
"""Work folder inside ``--out`` that archives are extracted into."""

EXTRACT_STAMP = ".zegclip_extracted.json"
"""File inside each extraction naming the archive it came from (path, size, mtime_ns)."""

_MISSING_EXAMPLES = 3

OFFICIAL_COUNTS: dict[str, dict[str, int]] = {
    "voc": {"train": 1464, "val": 1449, "aug": 9118, "trainaug": 10582},
    "coco_stuff": {"train2017": 118287, "val2017": 5000},
    "context": {"train": 4996, "val": 5104},
    "pc459": {"val": 5104},
    "ade150": {"training": 20210, "validation": 2000},
    "ade847": {"validation": 2000},
}
"""Images per split of the full datasets (docs/method.md §9)."""


class PrepareError(ZegCLIPError):
    """A missing or unusable input, or (with ``strict``) counts that differ from the official ones.

    The message is kept to one line (runs of white space, newlines included, become one space).
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


# --------------------------------------------------------------------------------------
# File helpers
# --------------------------------------------------------------------------------------


def write_split(path: str | Path, ids: Iterable[str]) -> None:
    """Write a sorted image-id list, one id per line, atomically."""
    with atomic_write(path, durable=False) as f:
        f.write("".join(f"{i}\n" for i in sorted(ids)).encode())


def write_label_png(label: np.ndarray, path: str | Path, bits: int = 8) -> None:
    """Write a single-channel index map as a grayscale PNG, atomically.

    ``bits=8``: an 8-bit PNG (mode ``L``); ``bits=16``: a 16-bit one (mode ``I;16``, for
    vocabularies above 255 classes). The PNG goes to a temporary name in the same folder
    and is then ``os.replace``d, so an interrupted run never leaves a half-written file
    under the final name.
    """
    path = Path(path)
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be 2-D, got shape {label.shape}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    dtype = np.uint8 if bits == 8 else np.uint16
    if label.dtype != dtype:
        top = int(np.iinfo(dtype).max)
        if label.size and (label.min() < 0 or label.max() > top):
            raise ValueError(f"label values outside 0..{top} for {path}")
        label = label.astype(dtype)
    with atomic_write(path, durable=False) as f:
        Image.fromarray(np.ascontiguousarray(label)).save(f, format="PNG")


def _remove_stale_tmp(folder: Path) -> None:
    """Delete temporary files an interrupted run left behind (never trusted)."""
    for p in folder.glob(".*.tmp"):
        p.unlink(missing_ok=True)


def is_current(src: str | Path, dst: str | Path) -> bool:
    """Whether ``dst``, made from ``src``, is up to date.

    True when ``dst`` exists and either is ``src`` itself (a hard link) or was written
    after ``src`` last changed (its mtime is not older than the source's mtime and
    ctime; extracting an archive again gives every file a new ctime). A missing source
    keeps an existing ``dst``.
    """
    try:
        d = os.stat(dst)
    except FileNotFoundError:
        return False
    try:
        s = os.stat(src)
    except FileNotFoundError:
        return True
    if (s.st_dev, s.st_ino) == (d.st_dev, d.st_ino):
        return True
    return d.st_mtime_ns >= max(s.st_mtime_ns, s.st_ctime_ns)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (copy where linking fails); skip a ``dst`` that :func:`is_current`.

    An outdated ``dst`` (its source was replaced) is replaced atomically.
    """
    if is_current(src, dst):
        return
    with atomic_path(dst) as tmp:
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def link_files(src_dir: Path, dst_dir: Path, suffix: str, desc: str) -> int:
    """Link (or copy) every ``*suffix`` file of ``src_dir`` into ``dst_dir``; return the count."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(dst_dir)
    files = sorted(p for p in src_dir.iterdir() if p.name.endswith(suffix))
    for p in tqdm(files, desc=desc, unit="file", leave=False):
        link_or_copy(p, dst_dir / p.name)
    return len(files)


def _archive_stamp(archive: Path) -> dict[str, Any]:
    """What identifies an archive's contents cheaply: its path, size and mtime."""
    st = archive.stat()
    return {"archive": str(archive.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_stamp(folder: Path) -> dict[str, Any] | None:
    try:
        stamp = json.loads((folder / EXTRACT_STAMP).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _unsafe_member(member: tarfile.TarInfo, dest: Path) -> str | None:
    """Why ``member`` may not be extracted into ``dest``, or None: checked here on every Python.

    ``tarfile``'s ``data`` filter does the same where it exists (Python 3.12, and 3.8-3.11
    since their 2023 security releases); without it (3.10.0-3.10.11, 3.11.0-3.11.3) tarfile
    writes wherever a member points. Paths are resolved on disk (``realpath``), so a member
    written through a link extracted before it is caught too.
    """
    name = member.name
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        return "an absolute path"
    root = os.path.realpath(dest)
    if not _inside(root, os.path.realpath(os.path.join(root, name))):
        return "a path outside the extraction folder"
    if member.issym() or member.islnk():
        if PurePosixPath(member.linkname).is_absolute() or PureWindowsPath(member.linkname).anchor:
            return f"a link to the absolute path {member.linkname}"
        base = os.path.dirname(os.path.join(root, name)) if member.issym() else root  # hard links: from the top
        if not _inside(root, os.path.realpath(os.path.join(base, member.linkname))):
            return f"a link to {member.linkname}, outside the extraction folder"
    elif not (member.isfile() or member.isdir()):
        return "a device or pipe, not a file"
    return None


def _extract_tar(archive: Path, dest: Path, members: str | None) -> None:
    """Extract a tar archive member by member, each checked by :func:`_unsafe_member` first.

    Raises:
        PrepareError: a member would be written outside ``dest`` or is a device; nothing
            after it is extracted.
    """
    data_filter = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(archive) as tf:
        for member in tqdm(tf, desc=f"extract {archive.name}", unit="file"):
            if members is not None and not member.name.startswith(members):
                continue
            why = _unsafe_member(member, dest)
            if why is not None:
                raise PrepareError(f"refusing to extract {archive}: member {member.name!r} is {why}")
            if not data_filter:  # what the data filter also does: no set-id bits, no foreign owner
                member.mode &= ~(stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH)
                if hasattr(os, "getuid"):  # POSIX: tarfile gives files the archive's owner when run as root
                    member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
            tf.extract(member, dest, **data_filter)


def _extract(archive: Path, extract_root: Path, members: str | None = None) -> Path:
    """Extract ``archive`` into ``extract_root/<archive name>`` and return that folder.

    An earlier extraction is reused only when its :data:`EXTRACT_STAMP` names this
    archive with the same size and mtime (and the same ``members``); otherwise it is
    removed and the archive is extracted again (the stamp goes in last, so an interrupted
    extraction never counts). ``members``: extract only the members whose names start
    with it (None: all).
    """
    dest = extract_root / archive.name
    stamp = _archive_stamp(archive)
    if members is not None:
        stamp["members"] = members
    if dest.is_dir():
        recorded = _read_stamp(dest)
        if recorded == stamp:
            return dest
        if recorded is None:
            why = "holds no record of the archive it came from"
        else:
            changed = [k for k in ("archive", "size", "mtime_ns", "members") if recorded.get(k) != stamp.get(k)]
            why = f"came from a different archive ({', '.join(changed)} differ)"
        logger.info("%s %s; removing it and extracting %s again", dest, why, archive)
        try:
            shutil.rmtree(dest)
        except OSError as e:
            raise PrepareError(f"could not remove the outdated extraction {dest}: {e}") from e
    partial = extract_root / f"{archive.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if members is None or n.startswith(members)]
                for name in tqdm(names, desc=f"extract {archive.name}", unit="file"):
                    zf.extract(name, partial)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, partial, members)
        else:
            raise PrepareError(f"{archive} is neither a tar nor a zip archive (incomplete or wrong download?)")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise PrepareError(f"could not extract {archive}: {e}") from e
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    (partial / EXTRACT_STAMP).write_text(json.dumps(stamp))
    os.replace(partial, dest)
    return dest


def _has_file(folder: Path, suffix: str) -> bool:
    return any(p.name.endswith(suffix) for p in folder.iterdir())


@dataclass(frozen=True)
class Download:
    """One input of a preparer: a folder of the raw downloads, extracted or in its archive."""

    what: str
    """What the input is, for messages."""
    archive: str | None
    """File name of the archive in ``--raw`` (None: no archive form)."""
    inner: str
    """The folder inside the extracted archive."""
    folders: tuple[str, ...]
    """Candidate extracted folders, relative to ``--raw``, the usual one first."""
    required: tuple[str, ...] = ()
    """Relative paths the folder must contain."""
    suffix: str | None = None
    """If set, the folder must contain at least one file with this suffix."""
    members: str | None = None
    """If set, only the archive members whose names start with it are extracted (a part of a
    large archive: the full ADE20K release's validation images)."""
    any_zip_name: bool = False
    """Without ``archive`` in ``--raw``, take any ``*.zip`` there that holds ``inner`` (the ADE20K
    site names its downloads ``<username>_<hash>.zip``)."""


def _zip_holding(raw: Path, download: Download) -> Path | None:
    """The first ``*.zip`` in ``raw`` with a member under ``download.inner`` (its directory only is read)."""
    prefix = download.inner.rstrip("/") + "/"
    for path in sorted(raw.glob("*.zip")):
        try:
            with zipfile.ZipFile(path) as zf:
                if any(name.startswith(prefix) for name in zf.namelist()):
                    return path
        except (zipfile.BadZipFile, OSError):  # another download, or one cut short: not this one
            continue
    return None


def locate(raw: Path, out: Path, download: Download, optional: bool = False) -> Path | None:
    """Find an input folder: an extracted one in ``raw`` first, else inside ``raw/<archive>``.

    Args:
        raw: The ``--raw`` folder.
        out: The ``--out`` folder (archives are extracted into ``out/.raw_extract``).
        download: What to look for.
        optional: Return None instead of raising when nothing is found.

    Returns:
        The folder, or None (``optional`` only).
    """
    d = download

    def missing(folder: Path) -> list[str]:
        lacks = [r for r in d.required if not (folder / r).exists()]
        if d.suffix is not None and not _has_file(folder, d.suffix):
            lacks.append(f"*{d.suffix} files")
        return lacks

    looked = []
    for rel in d.folders:
        cand = raw / rel
        looked.append(str(cand))
        if cand.is_dir() and not missing(cand):
            return cand
    if d.archive is not None:
        path = raw / d.archive
        looked.append(str(path))
        if not path.is_file() and d.any_zip_name:
            looked.append(f"any *.zip in {raw} holding {d.inner}/")
            found = _zip_holding(raw, d)
            if found is not None:
                logger.info("%s: the %s, recognised by its content", found, d.what)
                path = found
        if path.is_file():
            cand = _extract(path, out / EXTRACT_DIR, d.members) / d.inner
            lacks = missing(cand) if cand.is_dir() else [d.inner + "/"]
            if lacks:
                raise PrepareError(
                    f"{path} is not the expected {d.what} archive: it lacks {', '.join(lacks)} (under {d.inner}/)"
                )
            return cand
    if optional:
        return None
    expected = f"folder {d.folders[0]}/" + (f" or archive {d.archive}" if d.archive else "")
    if d.any_zip_name:
        expected += f" (under any name: a zip holding {d.inner}/ is recognised)"
    raise PrepareError(f"{d.what} not found: expected {expected} in {raw} (looked for {', '.join(looked)})")


def load_mat_field(path: str | Path, struct: str | None, field: str) -> np.ndarray:
    """Read ``field`` (of struct ``struct``, if given) from a MATLAB .mat file."""
    from scipy.io import loadmat

    mat = loadmat(str(path), squeeze_me=True, struct_as_record=False)
    obj = mat
    if struct is not None:
        if struct not in mat:
            raise KeyError(f"no struct {struct!r} in {path} (keys: {sorted(mat)})")
        obj = mat[struct]
        while isinstance(obj, np.ndarray) and obj.dtype == object:  # 1x1 struct arrays
            obj = obj.flat[0]
        obj = {n: getattr(obj, n) for n in getattr(obj, "_fieldnames", [])}
    if field not in obj:
        raise KeyError(f"no field {field!r} in {path}")
    arr = np.asarray(obj[field])
    if arr.ndim != 2:
        raise ValueError(f"{field} in {path} has shape {arr.shape}, expected 2-D")
    return arr


# --------------------------------------------------------------------------------------
# Parallel label conversion
# --------------------------------------------------------------------------------------


def default_workers() -> int:
    """Default number of conversion processes: min(8, CPU count)."""
    return min(8, os.cpu_count() or 1)


def _call(job: tuple[Callable[..., Any], tuple]) -> tuple[str, Any, str | None]:
    """Run one conversion task; return (output path, result, error message or None)."""
    func, task = job
    try:
        return str(task[-1]), func(*task), None
    except Exception as e:  # reported together after the run
        return str(task[-1]), None, f"{type(e).__name__}: {e}"


def convert_all(
    func: Callable[..., Any],
    tasks: list[tuple],
    workers: int | None,
    desc: str,
    sources: Sequence[str | Path] | None = None,
) -> list[Any]:
    """Run ``func(*task)`` for every task whose output (``task[-1]``) is missing or outdated.

    Args:
        func: The conversion, called as ``func(*task)``.
        tasks: Argument tuples; the last item is the output path.
        workers: Processes (1: in this process; None: :func:`default_workers`).
        desc: Progress-bar label.
        sources: The file each task's output is made from (default ``task[0]``); an
            output older than its source (see :func:`is_current`) is written again.

    Returns:
        The results of the tasks that ran.

    Raises:
        PrepareError: if any task failed (after all others ran).
    """
    workers = default_workers() if workers is None else workers
    for folder in {Path(t[-1]).parent for t in tasks}:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(folder)
    sources = [t[0] for t in tasks] if sources is None else sources
    todo = [t for t, src in zip(tasks, sources, strict=True) if not is_current(src, t[-1])]
    outdated = sum(Path(t[-1]).exists() for t in todo)
    logger.info(
        "%s: %d to write%s, %d already done",
        desc,
        len(todo),
        f" ({outdated} outdated by a newer source)" if outdated else "",
        len(tasks) - len(todo),
    )
    jobs = [(func, t) for t in todo]
    if workers > 1 and len(jobs) > 1:
        pool = multiprocessing.Pool(workers)
        chunk = max(1, min(64, len(jobs) // (workers * 8)))
        outcomes = pool.imap_unordered(_call, jobs, chunksize=chunk)
    else:
        pool, outcomes = None, map(_call, jobs)
    results, errors = [], []
    try:
        for out, res, err in tqdm(outcomes, total=len(jobs), desc=desc):
            if err:
                errors.append(f"{out}: {err}")
            else:
                results.append(res)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    if errors:
        raise PrepareError(f"{len(errors)} of {len(jobs)} labels failed to convert; first: {errors[0]}")
    return results


def compare_counts(name: str, counts: dict[str, int], strict: bool) -> None:
    diffs = [
        f"{k} {counts.get(k, 0)} (official {v})" for k, v in OFFICIAL_COUNTS[name].items() if counts.get(k, 0) != v
    ]
    if not diffs:
        logger.info("%s: counts match the official ones", name)
        return
    msg = f"{name}: counts differ from the official ones: {'; '.join(diffs)}"
    if strict:
        raise PrepareError(msg + " (--strict)")
    logger.warning("%s; fine for a subset, otherwise check the downloads", msg)


def describe_missing(rows: Iterable[tuple[str, Path, Path]]) -> list[str]:
    """``"<id> (no image)"`` etc. for every ``(id, image, label)`` row with a missing file."""
    found = []
    for i, image, label in rows:
        what = [k for k, path in (("image", image), ("label", label)) if not path.is_file()]
        if what:
            found.append(f"{i} (no {' and no '.join(what)})")
    return found


def missing_files_error(
    name: str, bad: list[tuple[Path, int, list[str]]], source: str, lists: bool = True
) -> PrepareError:
    """The error for split lists (or, ``lists=False``, image folders) whose ids lack files.

    Args:
        name: The dataset.
        bad: ``(split list path, ids listed, descriptions of the ids lacking files)``.
        source: Where the listed ids came from, for the message.
        lists: Whether ``bad`` names split lists (else image folders).
    """
    parts = []
    for path, total, lacking in bad:
        more = ", ..." if len(lacking) > _MISSING_EXAMPLES else ""
        parts.append(f"{path}: {len(lacking)} of {total} ids, e.g. {', '.join(lacking[:_MISSING_EXAMPLES])}{more}")
    what = "split list(s) would name" if lists else "image folder(s) hold ids with"
    return PrepareError(
        f"{name}: {len(bad)} {what} files that do not exist: {'; '.join(parts)}. "
        f"The ids come from {source}. An archive cut short or an incomplete download? Download it "
        "again and re-run (what is already prepared is kept and reused). A subset is fine when its "
        + (
            "split lists name only the files it has. The split lists were not written."
            if lists
            else "images all have one."
        )
    )


def check_folder_items(name: str, out: Path, source: str) -> None:
    """Check every image in the prepared image folders of ``name`` has its label (datasets without split lists).

    Raises:
        PrepareError: naming each image folder, the count and a few of the ids lacking a
            label; ``source`` says where the labels come from.
    """
    bad = []
    for split, rows in dataset_items(name, out).items():
        lacking = describe_missing(rows)
        if lacking:
            bad.append((layouts.image_dir(name, out, split), len(rows), lacking))
    if bad:
        raise missing_files_error(name, bad, source, lists=False)


def write_checked_lists(name: str, out: Path, lists: dict[str, list[str]], source: str) -> None:
    """Write the split lists of ``name`` under ``out``, after checking every id has its files.

    Raises:
        PrepareError: naming each list, the count and a few of the ids whose image or
            label is missing in ``out``; no list is written then (earlier ones are kept).
    """
    items = _items(name, out, lists)
    bad = []
    for split, rows in items.items():
        lacking = describe_missing(rows)
        if lacking:
            bad.append((layouts.split_file(name, out, split), len(rows), lacking))
    if bad:
        raise missing_files_error(name, bad, source)
    for split, ids in lists.items():
        write_split(layouts.split_file(name, out, split), ids)


# --------------------------------------------------------------------------------------
# Prepared layouts (shared with verify)
# --------------------------------------------------------------------------------------


def valid_label_values(name: str) -> np.ndarray:
    """Bool table of the values a prepared label of dataset ``name`` may hold.

    VOC: 0..20 and 255; Context: 0..59; COCO-Stuff: 0..170 and 255 (256 entries);
    16-bit labels (``ignore_index`` above 255, e.g. pc459: 0..458 and 65535): 65536 entries.
    """
    info = DATASETS[name]
    top = info.num_classes if info.reduce_zero_label else info.num_classes - 1
    valid = np.zeros(max(256, info.ignore_index + 1), dtype=bool)
    valid[: top + 1] = True
    valid[info.ignore_index] = name != "context"
    return valid


def _items(name: str, root: str | Path, lists: dict[str, list[str]]) -> dict[str, list[layouts.Row]]:
    """``(id, image path, label path)`` rows of the ids of each split list (or image folder)."""
    return {split: layouts.split_items(name, root, split, ids, lists) for split, ids in lists.items()}


def dataset_items(name: str, root: str | Path) -> dict[str, list[layouts.Row]]:
    """``(id, image path, label path)`` of every split of a prepared dataset.

    Args:
        name: ``voc``, ``coco_stuff`` or ``context``.
        root: The prepare ``--out`` folder (holding ``VOCdevkit/`` or ``coco_stuff164k/``).

    Raises:
        PrepareError: if the dataset folder or a split list is missing or unreadable.
    """
    if name not in OFFICIAL_COUNTS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(OFFICIAL_COUNTS)}")
    lay = layouts.layout(name)
    lists = {}
    for split in lay.splits:
        if lay.split_dir is None:  # COCO-Stuff: a split is the images in its folder
            folder = layouts.image_dir(name, root, split)
            if not folder.is_dir():
                raise PrepareError(f"no {folder}; run python -m zegclip.data.prepare {name}")
            lists[split] = layouts.split_ids(name, root, split)
            continue
        path = layouts.split_file(name, root, split)
        if not path.is_file():
            raise PrepareError(f"no split list {path}; run python -m zegclip.data.prepare {name}")
        try:
            lists[split] = read_split(path)
        except (OSError, UnicodeDecodeError) as e:
            raise PrepareError(f"could not read split list {path}: {e}") from e
    return _items(name, root, lists)
