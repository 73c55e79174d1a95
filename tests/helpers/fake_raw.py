"""Tiny raw downloads in the real formats, for the dataset-preparation tests.

Each ``make_*_raw`` writes either the original archives (``archive=True``) or the
folders they extract to, and returns the label arrays it wrote so tests can
compare prepared outputs with them.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

from zegclip.data.synthetic import voc_palette

SIZE = (20, 12)  # width, height of every fake image
COCO_RAW_VALUES = (0, 1, 12, 24, 26, 40, 91, 100, 133, 150, 181, 255)
"""Raw stuff-map values of the default fake maps (none of them a missing value)."""


# VOC train/val and SBD train/val overlap so that aug and trainaug differ:
# full = {b, d, f, g, h}; trainaug = ({a, b, c} | full) - {d, e}; aug = full - {a..e}.
VOC_IDS = {
    "voc_train": ["2007_000001", "2007_000002", "2007_000003"],  # a, b, c
    "voc_val": ["2007_000004", "2007_000005"],  # d, e
    "sbd_train": ["2007_000002", "2008_000006", "2008_000007"],  # b, f, g
    "sbd_val": ["2007_000004", "2008_000008"],  # d, h
}
COCO_IDS = {"train_ids": ["000000000009", "000000000025"], "val_ids": ["000000000139"]}
CONTEXT_IDS = {
    "train_ids": ["2008_000002", "2008_000003"],
    "val_ids": ["2008_000007"],
    "unannotated_ids": ["2008_000010", "2008_000011"],
}


class Sink:
    """Writes files into a folder, a tar (optionally gzipped) or a zip archive."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind = Path(path), kind
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "tar":
            self._tar = tarfile.open(self.path, "w")  # noqa: SIM115 (closed in close())
        elif kind == "tgz":
            self._tar = tarfile.open(self.path, "w:gz")  # noqa: SIM115
        elif kind == "zip":
            self._zip = zipfile.ZipFile(self.path, "w")

    def add(self, rel: str, data: bytes) -> None:
        if self.kind in ("tar", "tgz"):
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            self._tar.addfile(info, io.BytesIO(data))
        elif self.kind == "zip":
            self._zip.writestr(rel, data)
        else:
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    def close(self) -> None:
        if self.kind in ("tar", "tgz"):
            self._tar.close()
        elif self.kind == "zip":
            self._zip.close()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def jpeg_bytes(seed: int, size: tuple[int, int] = SIZE) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def png_bytes(label: np.ndarray, palette: list[int] | None = None, mode: str = "L") -> bytes:
    """PNG of an index map: grayscale, palette (``palette`` given) or colour (``mode='RGB'``)."""
    arr = np.ascontiguousarray(label, dtype=np.uint8)
    im = Image.fromarray(arr)
    if palette is not None:
        im = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.tobytes())
        im.putpalette(palette)
    if mode == "RGB":
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def mat_bytes(data: dict) -> bytes:
    buf = io.BytesIO()
    savemat(buf, data)
    return buf.getvalue()


def block_label(seed: int, values: Iterable[int], size: tuple[int, int] = SIZE) -> np.ndarray:
    """A label of 4x4 blocks, each a value of ``values`` (all of them when there are enough blocks)."""
    values = list(values)
    rng = np.random.default_rng(seed)
    bh, bw = (size[1] + 3) // 4, (size[0] + 3) // 4
    blocks = np.resize(rng.permutation(np.asarray(values)), bh * bw).reshape(bh, bw)
    return np.kron(blocks, np.ones((4, 4), dtype=np.int64))[: size[1], : size[0]].astype(np.int64)


def _seed(image_id: str) -> int:
    return int(image_id.replace("_", "")) % (2**31)


def make_voc_raw(
    raw: Path,
    *,
    voc_train: list[str],
    voc_val: list[str],
    sbd_train: list[str],
    sbd_val: list[str],
    archive: bool = True,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Write ``VOCtrainval_11-May-2012.tar`` and ``benchmark.tgz`` (or their folders).

    Args:
        seed: Added to every image's and label's seed: another ``seed`` gives the same
            files with other contents (a replaced download).

    Returns:
        ``{"voc": {id: SegmentationClass indices}, "sbd": {id: SBD class map}}``.
    """
    raw = Path(raw)
    ids = sorted(set(voc_train) | set(voc_val) | set(sbd_train) | set(sbd_val))
    voc_labels, sbd_labels = {}, {}
    kind = "tar" if archive else "dir"
    with Sink(raw / ("VOCtrainval_11-May-2012.tar" if archive else ""), kind) as sink:
        base = "VOCdevkit/VOC2012"
        for i in ids:
            sink.add(f"{base}/JPEGImages/{i}.jpg", jpeg_bytes(_seed(i) + seed))
        for i in sorted(set(voc_train) | set(voc_val)):
            voc_labels[i] = block_label(_seed(i) + seed, [*range(21), 255])
            sink.add(f"{base}/SegmentationClass/{i}.png", png_bytes(voc_labels[i], voc_palette()))
        seg = f"{base}/ImageSets/Segmentation"
        sink.add(f"{seg}/train.txt", "".join(f"{i}\n" for i in voc_train).encode())
        sink.add(f"{seg}/val.txt", "".join(f"{i}\n" for i in voc_val).encode())
        sink.add(f"{seg}/trainval.txt", "".join(f"{i}\n" for i in voc_train + voc_val).encode())
    with Sink(raw / ("benchmark.tgz" if archive else ""), "tgz" if archive else "dir") as sink:
        base = "benchmark_RELEASE/dataset"
        for i in sorted(set(sbd_train) | set(sbd_val)):
            sbd_labels[i] = block_label(_seed(i) + 1 + seed, range(21))
            gtcls = {
                "Segmentation": sbd_labels[i].astype(np.uint8),
                "Boundaries": np.zeros((1, 1)),
                "CategoriesPresent": np.unique(sbd_labels[i]).astype(np.uint8),
            }
            sink.add(f"{base}/cls/{i}.mat", mat_bytes({"GTcls": gtcls}))
        sink.add(f"{base}/train.txt", "".join(f"{i}\n" for i in sbd_train).encode())
        sink.add(f"{base}/val.txt", "".join(f"{i}\n" for i in sbd_val).encode())
    return {"voc": voc_labels, "sbd": sbd_labels}


def cut_tar(path: Path, keep: int, first: Callable[[str], bool] | None = None) -> list[str]:
    """Cut the tar at ``path`` at a member boundary, like a download that stopped there.

    The tar is first rewritten with the members ``first`` accepts moved to the front
    (order otherwise kept; e.g. the lists and labels before the images, as in a real
    archive whose image folder comes late), then its bytes are cut at the header of
    member ``keep``: a valid tar holding only the first ``keep`` members, without the
    end-of-archive blocks.

    Returns:
        The names of the members kept.
    """
    path = Path(path)
    with tarfile.open(path) as tf:
        members = [(m, tf.extractfile(m).read() if m.isfile() else b"") for m in tf.getmembers()]
    if first is not None:
        members.sort(key=lambda md: not first(md[0].name))
    with tarfile.open(path, "w") as tf:
        for m, data in members:
            tf.addfile(m, io.BytesIO(data))
    with tarfile.open(path) as tf:
        offsets = [m.offset for m in tf.getmembers()]
    with open(path, "r+b") as f:
        f.truncate(offsets[keep])
    return [m.name for m, _ in members[:keep]]


def make_coco_raw(
    raw: Path,
    *,
    train_ids: list[str],
    val_ids: list[str],
    maps: dict[str, np.ndarray] | None = None,
    archive: bool = True,
) -> dict[str, np.ndarray]:
    """Write ``train2017.zip``, ``val2017.zip``, ``stuffthingmaps_trainval2017.zip`` (or folders).

    Args:
        maps: Raw stuff maps by id (default: blocks of raw values 0..181 and 255).

    Returns:
        The raw stuff map of every id.
    """
    raw = Path(raw)
    maps = dict(maps or {})
    for i in train_ids + val_ids:
        if i not in maps:
            maps[i] = block_label(int(i), COCO_RAW_VALUES)
    for split, ids in (("train2017", train_ids), ("val2017", val_ids)):
        target = raw / (f"{split}.zip" if archive else "")
        with Sink(target, "zip" if archive else "dir") as sink:
            for i in ids:
                h, w = maps[i].shape
                sink.add(f"{split}/{i}.jpg", jpeg_bytes(int(i), (w, h)))
    target = raw / ("stuffthingmaps_trainval2017.zip" if archive else "stuffthingmaps_trainval2017")
    with Sink(target, "zip" if archive else "dir") as sink:
        for split, ids in (("train2017", train_ids), ("val2017", val_ids)):
            for i in ids:
                sink.add(f"{split}/{i}.png", png_bytes(maps[i]))
    return maps


def rle_encode(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a bool mask (column-major runs, LEB128-like string)."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=np.uint8).T.ravel()
    runs, current, n = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(n)
            current, n = v, 0
        n += 1
    runs.append(n)
    chars = []
    for k, x in enumerate(runs):
        x = int(x) - (runs[k - 2] if k > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr((c | (0x20 if more else 0)) + 48))
    return {"size": [h, w], "counts": "".join(chars)}


def _detail_json(maps: dict[str, np.ndarray], annotated: list[str], train_ids: list[str]) -> dict:
    """``trainval_merged.json`` in the Detail-API layout: images with their phase, RLE segments."""
    images, anns = [], []
    for i in annotated:
        h, w = maps[i].shape
        image_id = int(i.replace("_", ""))
        phase = "train" if i in train_ids else "val"
        images.append({"image_id": image_id, "file_name": f"{i}.jpg", "height": h, "width": w, "phase": phase})
        for cat in np.unique(maps[i]):
            if cat:
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": image_id,
                        "category_id": int(cat),
                        "segmentation": rle_encode(maps[i] == cat),
                        "iscrowd": 0,
                    }
                )
    cats = [{"category_id": c, "name": f"c{c}"} for c in range(1, 460)]
    data = {"images": images, "annos_segmentation": anns, "categories": cats}
    return data


def make_context_raw(
    raw: Path,
    *,
    train_ids: list[str],
    val_ids: list[str],
    unannotated_ids: list[str] = (),
    form: str = "mat",
    lists: bool | str = True,
    archive: bool = True,
    full_maps: dict[str, np.ndarray] | None = None,
    layout: str = "downloads",
    listed_val: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Write the VOC 2010 tar, the full PASCAL-Context annotations and the split lists.

    Args:
        unannotated_ids: Images in VOC 2010 (and its Main lists) without Context labels.
        form: ``"mat"`` (``trainval.tar.gz`` of LabelMap .mat files), ``"json"``
            (``trainval_merged.json`` in the Detail-API layout, each image's ``phase`` set)
            or ``"both"``.
        lists: ``True`` or ``"pair"``: ``pascal_context/{train,val}.txt`` (mmseg's); ``"val"``:
            ``pascal_context/val.txt`` alone; ``"catseg"``: CAT-Seg's ``pascalcontext_val.txt``
            (beside ``trainval/`` in the ``ov`` layout); False: none.
        archive: The archives as downloaded; False: extracted.
        full_maps: 459-class maps by id (default: blocks of kept and dropped ids).
        layout: ``"downloads"`` (archives or their folders at the top of ``raw``) or ``"ov"``:
            everything extracted into ``VOCdevkit/VOC2010/``, as the open-vocabulary
            repositories (CAT-Seg, ov-seg, ODISE) lay it out.
        listed_val: The ids written into the val list (default ``val_ids``).

    Returns:
        The full-id (459-class) map of every annotated id.
    """
    raw = Path(raw)
    if layout not in ("downloads", "ov") or (layout == "ov" and archive):
        raise ValueError(f"layout {layout!r} (the ov layout is extracted: archive=False)")
    top = "VOCdevkit/VOC2010/" if layout == "ov" else ""
    annotated = sorted(train_ids + val_ids)
    maps = dict(full_maps or {})
    for i in annotated:
        if i not in maps:
            maps[i] = block_label(_seed(i), [0, 2, 9, 3, 458, 100, 284, 440, 459])
    with Sink(raw / ("VOCtrainval_03-May-2010.tar" if archive else ""), "tar" if archive else "dir") as sink:
        base = "VOCdevkit/VOC2010"
        for i in sorted(annotated + list(unannotated_ids)):
            h, w = maps[i].shape if i in maps else SIZE[::-1]
            sink.add(f"{base}/JPEGImages/{i}.jpg", jpeg_bytes(_seed(i), (w, h)))
        # Main lists hold every image, annotated or not; extra unannotated ones test the intersection
        extra = list(unannotated_ids)
        main_train = sorted(train_ids + extra[: len(extra) // 2])
        main_val = sorted(val_ids + extra[len(extra) // 2 :])
        sink.add(f"{base}/ImageSets/Main/train.txt", "".join(f"{i}\n" for i in main_train).encode())
        sink.add(f"{base}/ImageSets/Main/val.txt", "".join(f"{i}\n" for i in main_val).encode())
        sink.add(f"{base}/ImageSets/Main/aeroplane_train.txt", b"")
    if form not in ("mat", "json", "both"):
        raise ValueError(form)
    if form in ("mat", "both"):
        with Sink(raw / ("trainval.tar.gz" if archive else ""), "tgz" if archive else "dir") as sink:
            for i in annotated:
                sink.add(f"{top}trainval/{i}.mat", mat_bytes({"LabelMap": maps[i].astype(np.uint16)}))
    if form in ("json", "both"):
        (raw / top).mkdir(parents=True, exist_ok=True)
        (raw / top / "trainval_merged.json").write_text(json.dumps(_detail_json(maps, annotated, train_ids)))
    val_text = "".join(f"{i}\n" for i in (val_ids if listed_val is None else listed_val))
    if lists in (True, "pair", "val"):
        (raw / "pascal_context").mkdir(parents=True, exist_ok=True)
        if lists != "val":
            (raw / "pascal_context" / "train.txt").write_text("".join(f"{i}\n" for i in train_ids))
        (raw / "pascal_context" / "val.txt").write_text(val_text)
    elif lists == "catseg":
        (raw / top).mkdir(parents=True, exist_ok=True)
        (raw / top / "pascalcontext_val.txt").write_text(val_text)
    elif lists:
        raise ValueError(lists)
    return maps
