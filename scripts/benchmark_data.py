"""Throughput of the training data pipeline per DataLoader worker, printed as JSON.

Decode (JPEG + PNG) + augmentation (docs/method.md §7) + tensor conversion, one process with
one OpenCV/torch thread (what each worker gets), on generated images of the VOC size
(500 x 375) and a COCO-like size (640 x 480).

    python scripts/benchmark_data.py [--images 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import torch

from zegclip.data.datasets import build_dataset
from zegclip.data.synthetic import write_synthetic_voc
from zegclip.data.transforms import SeededTransform, train_transform


def measure(root: Path, repeats: int, crop_size: int) -> dict[str, float]:
    """Best-of-``repeats`` images/s over the whole split, for load only and load + augment."""
    plain = build_dataset("synthetic", root, "train")
    augmented = build_dataset("synthetic", root, "train", SeededTransform(train_transform(crop_size)))
    result = {}
    for name, ds in (("decode_only", plain), ("decode_augment_tensor", augmented)):
        ds[0]  # warm up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            best = min(best, time.perf_counter() - start)
        result[f"{name}_images_per_s"] = round(len(ds) / best, 1)
        result[f"{name}_ms_per_image"] = round(1000 * best / len(ds), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=40, help="images per size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--crop-size", type=int, default=512)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    report: dict[str, object] = {
        "machine": platform.processor() or platform.machine(),
        "threads_per_worker": 1,
        "crop_size": args.crop_size,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in (("voc_500x375", (375, 500)), ("coco_640x480", (480, 640))):
            root = write_synthetic_voc(Path(tmp) / name, num_train=args.images, num_val=0, size=size, seed=0)
            report[name] = measure(root, args.repeats, args.crop_size)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
