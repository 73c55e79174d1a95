"""Build the on-disk dataset layouts of SPEC sec. 9 from the raw downloads.

Usage::

    python -m zegclip.data.prepare {voc,coco_stuff,context} --raw DIR --out DIR \
        [--workers N] [--strict]

``--raw`` holds the downloads, either as the original archives or already
extracted. Archives are extracted into ``<out>/.raw_extract``; nothing is written
outside ``--out``. Each extraction records which archive it came from (path, size,
mtime) and is redone when the archive changed. Images are hard-linked (copied where
linking fails), never moved. Labels are written to a temporary name and renamed, so
a label under its final name is always complete and a re-run skips it unless its
source changed after it was written.

Before the split lists are written, every id they name is checked to have an image
and a label in ``--out`` (the COCO-Stuff image folders stand in for lists): an archive
cut short, or lists naming files the downloads lack, is an error, not a quietly
smaller dataset. Nothing already prepared is deleted on an error.

The layout helpers at the bottom (:func:`dataset_items`, :func:`valid_label_values`,
:func:`read_split`) are shared with :mod:`zegclip.data.verify`.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import re
import shutil
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from zegclip.constants import IGNORE_INDEX
from zegclip.data.classes import COCO_STUFF_MISSING_RAW, CONTEXT_FULL_IDS, DATASETS

logger = logging.getLogger("zegclip.data.prepare")  # fixed: __name__ is "__main__" under python -m

EXTRACT_DIR = ".raw_extract"
"""Work folder inside ``--out`` that archives are extracted into."""

EXTRACT_STAMP = ".zegclip_extracted.json"
"""File inside each extraction naming the archive it came from (path, size, mtime_ns)."""

_MISSING_EXAMPLES = 3

OFFICIAL_COUNTS: dict[str, dict[str, int]] = {
    "voc": {"train": 1464, "val": 1449, "aug": 9118, "trainaug": 10582},
    "coco_stuff": {"train2017": 118287, "val2017": 5000},
    "context": {"train": 4996, "val": 5104},
}
"""Images per split of the full datasets (SPEC sec. 9)."""

VOC_ARCHIVE = "VOCtrainval_11-May-2012.tar"
SBD_ARCHIVE = "benchmark.tgz"
COCO_IMAGE_ARCHIVES = {"train2017": "train2017.zip", "val2017": "val2017.zip"}
COCO_STUFF_ARCHIVE = "stuffthingmaps_trainval2017.zip"
VOC2010_ARCHIVE = "VOCtrainval_03-May-2010.tar"
CONTEXT_MAT_ARCHIVE = "trainval.tar.gz"
CONTEXT_JSON = "trainval_merged.json"

_VOC_ID = re.compile(r"^\d{4}_\d{6}$")


class PrepareError(Exception):
    """A missing or unusable input, or (with ``strict``) counts that differ from the official ones."""


# --------------------------------------------------------------------------------------
# Label encodings (lookup tables)
# --------------------------------------------------------------------------------------


def coco_stuff_lut() -> np.ndarray:
    """Raw stuff-map value -> train id, as a 256-entry uint8 table.

    The train id is the rank of the raw value among the 171 used values (0..181 minus
    ``COCO_STUFF_MISSING_RAW``); 255 and every value that should not occur map to 255.
    """
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    used = [v for v in range(182) if v not in set(COCO_STUFF_MISSING_RAW)]
    lut[used] = np.arange(len(used), dtype=np.uint8)
    return lut


def _coco_stuff_unexpected() -> np.ndarray:
    """Boolean table of the raw values that should never occur (neither used nor 255)."""
    lut = coco_stuff_lut()
    unexpected = lut == IGNORE_INDEX
    unexpected[IGNORE_INDEX] = False
    return unexpected


def context_lut() -> np.ndarray:
    """Full PASCAL-Context id (0..459) -> Context-60 value (uint8 0..59).

    Value = 1 + position of the full id in ``CONTEXT_FULL_IDS``; every other id is 0.
    """
    lut = np.zeros(max(CONTEXT_FULL_IDS) + 2, dtype=np.uint8)
    lut[list(CONTEXT_FULL_IDS)] = np.arange(1, len(CONTEXT_FULL_IDS) + 1, dtype=np.uint8)
    return lut


def _apply_context_lut(full: np.ndarray) -> np.ndarray:
    """Map a full-id map through :func:`context_lut`; ids outside the table become 0."""
    lut = context_lut()
    full = np.asarray(full).astype(np.int64)
    inside = (full >= 0) & (full < len(lut))
    return lut[np.where(inside, full, 0)]


# --------------------------------------------------------------------------------------
# File helpers
# --------------------------------------------------------------------------------------


def read_split(path: str | Path) -> list[str]:
    """Read an image-id list (one id per line; only the first column is kept)."""
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def write_split(path: str | Path, ids: Iterable[str]) -> None:
    """Write a sorted image-id list, one id per line, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(f"{i}\n" for i in sorted(ids)))
    os.replace(tmp, path)


def write_label_png(label: np.ndarray, path: str | Path) -> None:
    """Write a single-channel uint8 index map as a grayscale PNG, atomically.

    The PNG goes to a temporary name in the same folder and is then ``os.replace``d,
    so an interrupted run never leaves a half-written file under the final name.
    """
    path = Path(path)
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be 2-D, got shape {label.shape}")
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError(f"label values outside 0..255 for {path}")
        label = label.astype(np.uint8)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(np.ascontiguousarray(label)).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _link_files(src_dir: Path, dst_dir: Path, suffix: str, desc: str) -> int:
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


def _extract(archive: Path, extract_root: Path) -> Path:
    """Extract ``archive`` into ``extract_root/<archive name>`` and return that folder.

    An earlier extraction is reused only when its :data:`EXTRACT_STAMP` names this
    archive with the same size and mtime; otherwise it is removed and the archive is
    extracted again (the stamp goes in last, so an interrupted extraction never counts).
    """
    dest = extract_root / archive.name
    stamp = _archive_stamp(archive)
    if dest.is_dir():
        recorded = _read_stamp(dest)
        if recorded == stamp:
            return dest
        if recorded is None:
            why = "holds no record of the archive it came from"
        else:
            changed = [k for k in ("archive", "size", "mtime_ns") if recorded.get(k) != stamp[k]]
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
                for name in tqdm(zf.namelist(), desc=f"extract {archive.name}", unit="file"):
                    zf.extract(name, partial)
        elif tarfile.is_tarfile(archive):
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            with tarfile.open(archive) as tf:
                for member in tqdm(tf, desc=f"extract {archive.name}", unit="file"):
                    tf.extract(member, partial, **safe)
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


def _locate(
    raw: Path,
    out: Path,
    *,
    what: str,
    folders: Sequence[str],
    archive: str | None,
    inner: str,
    required: Sequence[str] = (),
    suffix: str | None = None,
    optional: bool = False,
) -> Path | None:
    """Find an input folder: an extracted one in ``raw`` first, else inside ``raw/archive``.

    Args:
        raw: The ``--raw`` folder.
        out: The ``--out`` folder (archives are extracted into ``out/.raw_extract``).
        what: What the input is, for error messages.
        folders: Candidate extracted folders, relative to ``raw``.
        archive: File name of the archive in ``raw`` (None: no archive form).
        inner: The folder inside the extracted archive.
        required: Relative paths the folder must contain.
        suffix: If set, the folder must contain at least one file with this suffix.
        optional: Return None instead of raising when nothing is found.

    Returns:
        The folder, or None (``optional`` only).
    """

    def missing(folder: Path) -> list[str]:
        lacks = [r for r in required if not (folder / r).exists()]
        if suffix is not None and not _has_file(folder, suffix):
            lacks.append(f"*{suffix} files")
        return lacks

    looked = []
    for rel in folders:
        cand = raw / rel
        looked.append(str(cand))
        if cand.is_dir() and not missing(cand):
            return cand
    if archive is not None:
        path = raw / archive
        looked.append(str(path))
        if path.is_file():
            cand = _extract(path, out / EXTRACT_DIR) / inner
            lacks = missing(cand) if cand.is_dir() else [inner + "/"]
            if lacks:
                raise PrepareError(
                    f"{path} is not the expected {what} archive: it lacks {', '.join(lacks)} (under {inner}/)"
                )
            return cand
    if optional:
        return None
    expected = f"folder {folders[0]}/" + (f" or archive {archive}" if archive else "")
    raise PrepareError(f"{what} not found: expected {expected} in {raw} (looked for {', '.join(looked)})")


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


def _convert_all(
    func: Callable[..., Any],
    tasks: list[tuple],
    workers: int,
    desc: str,
    sources: Sequence[str | Path] | None = None,
) -> list[Any]:
    """Run ``func(*task)`` for every task whose output (``task[-1]``) is missing or outdated.

    Args:
        func: The conversion, called as ``func(*task)``.
        tasks: Argument tuples; the last item is the output path.
        workers: Processes (1: in this process).
        desc: Progress-bar label.
        sources: The file each task's output is made from (default ``task[0]``); an
            output older than its source (see :func:`is_current`) is written again.

    Returns:
        The results of the tasks that ran.

    Raises:
        PrepareError: if any task failed (after all others ran).
    """
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


def _compare_counts(name: str, counts: dict[str, int], strict: bool) -> None:
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


def _lacking(rows: Iterable[tuple[str, Path, Path]]) -> list[str]:
    """``"<id> (no image)"`` etc. for every ``(id, image, label)`` row with a missing file."""
    found = []
    for i, image, label in rows:
        what = [k for k, path in (("image", image), ("label", label)) if not path.is_file()]
        if what:
            found.append(f"{i} (no {' and no '.join(what)})")
    return found


def _missing_files_error(
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


def _write_checked_lists(name: str, out: Path, lists: dict[str, list[str]], source: str) -> None:
    """Write the split lists of ``name`` under ``out``, after checking every id has its files.

    Raises:
        PrepareError: naming each list, the count and a few of the ids whose image or
            label is missing in ``out``; no list is written then (earlier ones are kept).
    """
    items = _layout_items(name, out, lists)
    bad = []
    for split, rows in items.items():
        lacking = _lacking(rows)
        if lacking:
            bad.append((split_list_path(name, out, split), len(rows), lacking))
    if bad:
        raise _missing_files_error(name, bad, source)
    for split, ids in lists.items():
        write_split(split_list_path(name, out, split), ids)


# --------------------------------------------------------------------------------------
# PASCAL VOC 2012 + SBD
# --------------------------------------------------------------------------------------


def _load_mat_field(path: str | Path, struct: str | None, field: str) -> np.ndarray:
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


def _convert_sbd(mat_path: str, out_path: str) -> None:
    """SBD ``cls/<id>.mat`` (GTcls.Segmentation) -> grayscale PNG."""
    write_label_png(_load_mat_field(mat_path, "GTcls", "Segmentation"), out_path)


def voc_lists(voc_train: Iterable[str], voc_val: Iterable[str], sbd_full: Iterable[str]) -> dict[str, list[str]]:
    """The VOC split lists (sorted): train, val, aug and trainaug (SPEC sec. 9)."""
    train, val, full = set(voc_train), set(voc_val), set(sbd_full)
    return {
        "train": sorted(train),
        "val": sorted(val),
        "aug": sorted(full - (train | val)),
        "trainaug": sorted((train | full) - val),
    }


def prepare_voc(raw: str | Path, out: str | Path, workers: int | None = None, strict: bool = False) -> dict[str, int]:
    """Prepare PASCAL VOC 2012 + SBD in ``out/VOCdevkit/VOC2012``.

    Args:
        raw: Folder with ``VOCtrainval_11-May-2012.tar`` and ``benchmark.tgz`` (or their
            extracted ``VOCdevkit/VOC2012`` and ``benchmark_RELEASE/dataset`` folders).
        out: Output root.
        workers: Conversion processes (default min(8, CPU count)).
        strict: Raise PrepareError when counts differ from the official ones.

    Returns:
        Images per split list: train, val, aug, trainaug.
    """
    raw, out = Path(raw), Path(out)
    workers = default_workers() if workers is None else workers
    voc = _locate(
        raw,
        out,
        what="PASCAL VOC 2012 trainval",
        folders=("VOCdevkit/VOC2012", "VOC2012"),
        archive=VOC_ARCHIVE,
        inner="VOCdevkit/VOC2012",
        required=(
            "JPEGImages",
            "SegmentationClass",
            "ImageSets/Segmentation/train.txt",
            "ImageSets/Segmentation/val.txt",
        ),
    )
    sbd = _locate(
        raw,
        out,
        what="SBD (benchmark_RELEASE)",
        folders=("benchmark_RELEASE/dataset", "SBD/dataset", "dataset"),
        archive=SBD_ARCHIVE,
        inner="benchmark_RELEASE/dataset",
        required=("cls", "train.txt", "val.txt"),
    )
    dst = out / "VOCdevkit" / "VOC2012"

    _link_files(voc / "JPEGImages", dst / "JPEGImages", ".jpg", "images")
    _link_files(voc / "SegmentationClass", dst / "SegmentationClass", ".png", "SegmentationClass")

    sbd_ids = sorted(set(read_split(sbd / "train.txt") + read_split(sbd / "val.txt")))
    present = [i for i in sbd_ids if (sbd / "cls" / f"{i}.mat").is_file()]
    if len(present) < len(sbd_ids):
        lost = sorted(set(sbd_ids) - set(present))
        raise _missing_files_error(
            "voc",
            [(sbd / "train.txt + val.txt", len(sbd_ids), [f"{i} (no cls/{i}.mat)" for i in lost])],
            f"the SBD lists in {sbd}",
        )
    tasks = [(str(sbd / "cls" / f"{i}.mat"), str(dst / "SegmentationClassAug" / f"{i}.png")) for i in present]
    _convert_all(_convert_sbd, tasks, workers, "SBD -> SegmentationClassAug")

    seg = voc / "ImageSets" / "Segmentation"
    lists = voc_lists(read_split(seg / "train.txt"), read_split(seg / "val.txt"), present)
    _write_checked_lists("voc", out, lists, f"{seg}/{{train,val}}.txt and {sbd}/{{train,val}}.txt")
    counts = {k: len(v) for k, v in lists.items()}
    logger.info("voc: %s", counts)
    _compare_counts("voc", counts, strict)
    return counts


# --------------------------------------------------------------------------------------
# COCO-Stuff 164K
# --------------------------------------------------------------------------------------


def _convert_coco_stuff(src: str, out_path: str) -> int:
    """Raw stuff map -> ``_labelTrainIds`` PNG; return the count of unexpected raw pixels."""
    with Image.open(src) as im:
        if im.mode not in ("L", "P"):
            raise ValueError(f"stuff map has mode {im.mode}, expected a grayscale index map")
        raw = np.asarray(im)
    write_label_png(coco_stuff_lut()[raw], out_path)
    return int(_coco_stuff_unexpected()[raw].sum())


def prepare_coco_stuff(
    raw: str | Path, out: str | Path, workers: int | None = None, strict: bool = False
) -> dict[str, int]:
    """Prepare COCO-Stuff 164K in ``out/coco_stuff164k``.

    Args:
        raw: Folder with ``train2017.zip``, ``val2017.zip`` and
            ``stuffthingmaps_trainval2017.zip`` (or the extracted ``train2017/``,
            ``val2017/`` image folders and ``stuffthingmaps_trainval2017/{train2017,val2017}``).
        out: Output root.
        workers: Conversion processes (default min(8, CPU count)).
        strict: Raise PrepareError when counts differ from the official ones.

    Returns:
        Images with a label per split: train2017, val2017.
    """
    raw, out = Path(raw), Path(out)
    workers = default_workers() if workers is None else workers
    dst = out / "coco_stuff164k"
    maps = _locate(
        raw,
        out,
        what="COCO-Stuff stuff+thing maps",
        folders=(
            "stuffthingmaps_trainval2017",
            "stuffthingmaps",
            "annotations",
            "coco_stuff164k/annotations",
        ),
        archive=COCO_STUFF_ARCHIVE,
        inner=".",
        required=("train2017", "val2017"),
    )
    counts, unexpected = {}, []
    for split, archive in COCO_IMAGE_ARCHIVES.items():
        images = _locate(
            raw,
            out,
            what=f"COCO {split} images",
            folders=(split, f"images/{split}", f"coco_stuff164k/images/{split}"),
            archive=archive,
            inner=split,
            suffix=".jpg",
        )
        n_images = _link_files(images, dst / "images" / split, ".jpg", f"{split} images")
        ids = sorted(
            p.name[: -len(".png")]
            for p in (maps / split).iterdir()
            if p.name.endswith(".png") and not p.name.endswith("_labelTrainIds.png")
        )
        tasks = [
            (str(maps / split / f"{i}.png"), str(dst / "annotations" / split / f"{i}_labelTrainIds.png")) for i in ids
        ]
        unexpected += _convert_all(_convert_coco_stuff, tasks, workers, f"{split} labels")
        with_image = sum((dst / "images" / split / f"{i}.jpg").exists() for i in ids)
        if with_image != n_images or with_image != len(ids):
            logger.warning(
                "coco_stuff %s: %d images, %d stuff maps, %d with both",
                split,
                n_images,
                len(ids),
                with_image,
            )
        counts[split] = with_image
    items = _layout_items("coco_stuff", out, None)
    missing = [(dst / "images" / split, len(rows), _lacking(rows)) for split, rows in items.items()]
    missing = [m for m in missing if m[2]]
    if missing:
        raise _missing_files_error(
            "coco_stuff", missing, f"the image folders; every image needs a stuff map in {maps}", lists=False
        )
    bad = [n for n in unexpected if n]
    if bad:
        logger.warning(
            "coco_stuff: %d pixels in %d labels had raw values that should not occur "
            "(one of %s, or 182..254); they were set to 255",
            sum(bad),
            len(bad),
            COCO_STUFF_MISSING_RAW,
        )
    logger.info("coco_stuff: %s", counts)
    _compare_counts("coco_stuff", counts, strict)
    return counts


# --------------------------------------------------------------------------------------
# PASCAL Context
# --------------------------------------------------------------------------------------


def _rle_counts(counts: str | list[int]) -> list[int]:
    """Decode COCO compressed RLE counts (the LEB128-like string) into run lengths."""
    if not isinstance(counts, str):
        return [int(c) for c in counts]
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            c = ord(counts[pos]) - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift  # sign-extend
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE dict (``size`` = [h, w], ``counts`` string or list) into a bool mask."""
    h, w = (int(v) for v in rle["size"])
    runs = _rle_counts(rle["counts"])
    if sum(runs) != h * w or min(runs, default=0) < 0:
        raise ValueError(f"RLE runs sum to {sum(runs)}, expected {h}x{w}")
    flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
    return flat.reshape(w, h).T  # RLE runs go down the columns (Fortran order)


def _segmentation_mask(seg: Any, h: int, w: int) -> np.ndarray:
    """Decode a Detail/COCO segmentation (RLE dict or polygons) into an h x w bool mask."""
    if isinstance(seg, dict):
        return rle_decode(seg)
    if isinstance(seg, list):  # polygons [[x1, y1, x2, y2, ...], ...]
        from PIL import ImageDraw

        canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        for poly in seg:
            if len(poly) >= 6:
                draw.polygon([float(v) for v in poly], fill=1)
        return np.asarray(canvas, dtype=bool)
    raise ValueError(f"unsupported segmentation of type {type(seg).__name__}")


def _convert_context_mat(mat_path: str, out_path: str) -> None:
    """PASCAL-Context ``trainval/<id>.mat`` (LabelMap, 459-class ids) -> Context-60 PNG."""
    write_label_png(_apply_context_lut(_load_mat_field(mat_path, None, "LabelMap")), out_path)


def _convert_context_json(h: int, w: int, anns: list[tuple[int, Any]], out_path: str) -> None:
    """Detail-API annotations of one image -> Context-60 PNG (later annotations paint over)."""
    full = np.zeros((h, w), dtype=np.int64)
    for category_id, seg in anns:
        mask = _segmentation_mask(seg, h, w)
        if mask.shape != (h, w):
            raise ValueError(f"mask of shape {mask.shape} for a {h}x{w} image")
        full[mask] = category_id
    write_label_png(_apply_context_lut(full), out_path)


def _read_context_json(path: Path) -> tuple[dict[str, tuple[int, int, str]], dict[str, list]]:
    """Read ``trainval_merged.json`` with plain json.

    Returns:
        ``{id: (height, width, phase)}`` and ``{id: [(category_id, segmentation), ...]}``
        (annotations in file order), with ids like ``2008_000002``.
    """
    logger.info("reading %s (large; this takes a while)", path)
    try:
        with open(path) as f:
            data = json.load(f)
        key_of = {}
        images = {}
        for img in data["images"]:
            vid = Path(img["file_name"]).stem
            key_of[img["image_id"]] = vid
            images[vid] = (int(img["height"]), int(img["width"]), str(img.get("phase", "")))
        anns: dict[str, list] = {vid: [] for vid in images}
        for a in data["annos_segmentation"]:
            anns[key_of[a["image_id"]]].append((int(a["category_id"]), a["segmentation"]))
    except (ValueError, KeyError, TypeError) as e:
        raise PrepareError(
            f"{path} is not a PASCAL in Detail annotation file (expected keys 'images' and "
            f"'annos_segmentation'; {type(e).__name__}: {e}); download trainval_merged.json "
            f"from the PASCAL in Detail site, or use the per-image {CONTEXT_MAT_ARCHIVE}"
        ) from e
    return images, anns


def _find_context_lists(raw: Path) -> tuple[Path, Path] | None:
    """Find the PASCAL-Context ``train.txt``/``val.txt`` pair in ``raw`` (not the VOC lists)."""
    skip = {"VOCdevkit", "JPEGImages", "trainval", "Annotations", EXTRACT_DIR}
    candidates = [raw / "VOCdevkit" / "VOC2010" / "ImageSets" / "SegmentationContext"]
    for root, dirs, _files in os.walk(raw):
        depth = len(Path(root).relative_to(raw).parts)
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith(".") and depth < 2)
        candidates.append(Path(root))
    for folder in candidates:
        train, val = folder / "train.txt", folder / "val.txt"
        if train.is_file() and val.is_file():
            ids = read_split(train)[:5]
            if ids and all(_VOC_ID.match(i) for i in ids):
                return train, val
    return None


def prepare_context(
    raw: str | Path, out: str | Path, workers: int | None = None, strict: bool = False
) -> dict[str, int]:
    """Prepare PASCAL Context (59 classes + background) in ``out/VOCdevkit/VOC2010``.

    Args:
        raw: Folder with ``VOCtrainval_03-May-2010.tar`` (or ``VOCdevkit/VOC2010``) and the
            full PASCAL-Context annotations: ``trainval.tar.gz`` (or its ``trainval/`` folder
            of per-image .mat files) or ``trainval_merged.json``; optionally the Context
            ``train.txt``/``val.txt`` lists.
        out: Output root.
        workers: Conversion processes (default min(8, CPU count)).
        strict: Raise PrepareError when counts differ from the official ones.

    Returns:
        Images per split list: train, val.
    """
    raw, out = Path(raw), Path(out)
    workers = default_workers() if workers is None else workers
    voc = _locate(
        raw,
        out,
        what="PASCAL VOC 2010 trainval",
        folders=("VOCdevkit/VOC2010", "VOC2010"),
        archive=VOC2010_ARCHIVE,
        inner="VOCdevkit/VOC2010",
        required=("JPEGImages",),
    )
    mats = _locate(
        raw,
        out,
        what="PASCAL-Context .mat annotations",
        folders=("trainval", "pascal_context/trainval", "PascalContext/trainval"),
        archive=CONTEXT_MAT_ARCHIVE,
        inner="trainval",
        suffix=".mat",
        optional=True,
    )
    json_path = next(
        (p for p in (raw / CONTEXT_JSON, raw / "pascal_context" / CONTEXT_JSON) if p.is_file()),
        None,
    )
    if mats is None and json_path is None:
        raise PrepareError(
            f"PASCAL-Context annotations not found: expected {CONTEXT_MAT_ARCHIVE} (or its "
            f"trainval/ folder of .mat files) or {CONTEXT_JSON} in {raw}"
        )
    dst = out / "VOCdevkit" / "VOC2010"
    label_dir = dst / "SegmentationClassContext"

    if mats is not None:
        annotated = {p.stem for p in mats.iterdir() if p.suffix == ".mat"}
        images_json, anns = {}, {}
        source = str(mats)
    else:
        images_json, anns = _read_context_json(json_path)
        annotated = set(images_json)
        source = str(json_path)

    lists = _find_context_lists(raw)
    if lists is not None:
        train, val = read_split(lists[0]), read_split(lists[1])
        list_source = f"{lists[0]} and {lists[1]}"
        logger.info("context: split lists from %s and %s", *lists)
    elif images_json:
        train = [i for i, (_h, _w, phase) in images_json.items() if phase == "train"]
        val = [i for i, (_h, _w, phase) in images_json.items() if phase == "val"]
        list_source = f"the 'phase' of each image in {json_path}"
        logger.info("context: split lists from the 'phase' of each image in %s", json_path)
    else:
        main_sets = voc / "ImageSets" / "Main"
        if not (main_sets / "train.txt").is_file() or not (main_sets / "val.txt").is_file():
            raise PrepareError(
                f"no PASCAL-Context train.txt/val.txt found in {raw}, and no "
                f"{main_sets}/train.txt, val.txt to derive them from"
            )
        train = [i for i in read_split(main_sets / "train.txt") if i in annotated]
        val = [i for i in read_split(main_sets / "val.txt") if i in annotated]
        list_source = f"{main_sets}/{{train,val}}.txt (the annotated ids among them)"
        logger.info(
            "context: no Context split lists in %s; derived them from VOC2010 "
            "ImageSets/Main/{train,val}.txt intersected with the annotated ids",
            raw,
        )

    n_images = _link_files(voc / "JPEGImages", dst / "JPEGImages", ".jpg", "images")
    splits = {"train": sorted(set(train)), "val": sorted(set(val))}
    bad = []
    for split, split_ids in splits.items():
        lacking = []
        for i in split_ids:
            what = [] if (dst / "JPEGImages" / f"{i}.jpg").is_file() else ["image"]
            what += [] if i in annotated else [f"annotation in {source}"]
            if what:
                lacking.append(f"{i} (no {' and no '.join(what)})")
        if lacking:
            bad.append((split_list_path("context", out, split), len(split_ids), lacking))
    if bad:
        raise _missing_files_error("context", bad, list_source)
    ids = sorted(set(splits["train"]) | set(splits["val"]))
    logger.info("context: %d images linked, %d labels from %s", n_images, len(ids), source)

    if mats is not None:
        tasks = [(str(mats / f"{i}.mat"), str(label_dir / f"{i}.png")) for i in ids]
        _convert_all(_convert_context_mat, tasks, workers, "Context labels")
    else:
        tasks = [(images_json[i][0], images_json[i][1], anns[i], str(label_dir / f"{i}.png")) for i in ids]
        _convert_all(_convert_context_json, tasks, workers, "Context labels", sources=[json_path] * len(tasks))

    _write_checked_lists("context", out, splits, list_source)
    counts = {k: len(v) for k, v in splits.items()}
    logger.info("context: %s", counts)
    _compare_counts("context", counts, strict)
    return counts


# --------------------------------------------------------------------------------------
# Prepared layouts (shared with verify)
# --------------------------------------------------------------------------------------


def valid_label_values(name: str) -> np.ndarray:
    """256-entry bool table of the values a prepared label of dataset ``name`` may hold.

    VOC: 0..20 and 255; Context: 0..59; COCO-Stuff: 0..170 and 255.
    """
    info = DATASETS[name]
    top = info.num_classes if info.reduce_zero_label else info.num_classes - 1
    valid = np.zeros(256, dtype=bool)
    valid[: top + 1] = True
    valid[IGNORE_INDEX] = name != "context"
    return valid


_LIST_LAYOUTS = {
    "voc": (("VOCdevkit", "VOC2012"), "Segmentation", ("train", "val", "aug", "trainaug")),
    "context": (("VOCdevkit", "VOC2010"), "SegmentationContext", ("train", "val")),
}
"""Datasets with split lists: base folder under the root, ImageSets subfolder, splits."""


def split_list_path(name: str, root: str | Path, split: str) -> Path:
    """Path of the prepared split list ``split`` of dataset ``name`` (``voc`` or ``context``)."""
    base, sets, _splits = _LIST_LAYOUTS[name]
    return Path(root).joinpath(*base) / "ImageSets" / sets / f"{split}.txt"


def _layout_items(
    name: str, root: str | Path, lists: dict[str, list[str]] | None
) -> dict[str, list[tuple[str, Path, Path]]]:
    """``(id, image path, label path)`` rows for the ids of ``lists`` (COCO-Stuff: of the image folders)."""
    root = Path(root)
    items: dict[str, list[tuple[str, Path, Path]]] = {}
    if name == "coco_stuff":
        base = root / "coco_stuff164k"
        for split in COCO_IMAGE_ARCHIVES:
            img_dir = base / "images" / split
            if not img_dir.is_dir():
                raise PrepareError(f"no {img_dir}; run python -m zegclip.data.prepare {name}")
            ids = sorted(p.stem for p in img_dir.iterdir() if p.suffix == ".jpg")
            lab_dir = base / "annotations" / split
            items[split] = [(i, img_dir / f"{i}.jpg", lab_dir / f"{i}_labelTrainIds.png") for i in ids]
        return items
    base = root.joinpath(*_LIST_LAYOUTS[name][0])
    assert lists is not None
    train = set(lists.get("train", ()))
    for split, ids in lists.items():
        rows = []
        for i in ids:
            if name == "context":
                label = base / "SegmentationClassContext" / f"{i}.png"
            elif split in ("train", "val") or (split == "trainaug" and i in train):
                label = base / "SegmentationClass" / f"{i}.png"  # official masks
            else:
                label = base / "SegmentationClassAug" / f"{i}.png"  # from SBD
            rows.append((i, base / "JPEGImages" / f"{i}.jpg", label))
        items[split] = rows
    return items


def dataset_items(name: str, root: str | Path) -> dict[str, list[tuple[str, Path, Path]]]:
    """``(id, image path, label path)`` of every split of a prepared dataset.

    Args:
        name: ``voc``, ``coco_stuff`` or ``context``.
        root: The prepare ``--out`` folder (holding ``VOCdevkit/`` or ``coco_stuff164k/``).

    Raises:
        PrepareError: if the dataset folder or a split list is missing or unreadable.
    """
    if name == "coco_stuff":
        return _layout_items(name, root, None)
    if name not in _LIST_LAYOUTS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(OFFICIAL_COUNTS)}")
    lists = {}
    for split in _LIST_LAYOUTS[name][2]:
        path = split_list_path(name, root, split)
        if not path.is_file():
            raise PrepareError(f"no split list {path}; run python -m zegclip.data.prepare {name}")
        try:
            lists[split] = read_split(path)
        except (OSError, UnicodeDecodeError) as e:
            raise PrepareError(f"could not read split list {path}: {e}") from e
    return _layout_items(name, root, lists)


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------

PREPARERS: dict[str, Callable[..., dict[str, int]]] = {
    "voc": prepare_voc,
    "coco_stuff": prepare_coco_stuff,
    "context": prepare_context,
}


class _CliFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        return msg if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {msg}"


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at the time of each record."""

    _zegclip_cli = True

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_cli_logging() -> None:
    """Send ``zegclip.data`` log records to stderr (info plain, warnings prefixed).

    The module loggers have fixed names (``zegclip.data.prepare``, ``zegclip.data.verify``),
    so ``python -m zegclip.data.prepare`` prints the same lines as ``scripts/prepare_*.py``.
    """
    pkg = logging.getLogger("zegclip.data")
    if not any(getattr(h, "_zegclip_cli", False) for h in pkg.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_CliFormatter())
        pkg.addHandler(handler)
    pkg.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 on a PrepareError)."""
    parser = argparse.ArgumentParser(
        prog="python -m zegclip.data.prepare",
        description="Build the dataset layouts (SPEC sec. 9) from the raw downloads.",
    )
    parser.add_argument("dataset", choices=sorted(PREPARERS))
    parser.add_argument("--raw", type=Path, required=True, help="folder with the downloads")
    parser.add_argument("--out", type=Path, required=True, help="output root (data root)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="label conversion processes")
    parser.add_argument("--strict", action="store_true", help="fail when counts differ from the official ones")
    args = parser.parse_args(argv)
    if args.workers < 1:
        print(f"error: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 2
    setup_cli_logging()
    try:
        counts = PREPARERS[args.dataset](args.raw, args.out, workers=args.workers, strict=args.strict)
    except PrepareError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"{args.dataset} prepared in {args.out}: {counts}")
    print(f"(the extracted archives in {args.out / EXTRACT_DIR}, if any, may be deleted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
