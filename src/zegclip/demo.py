"""Smallest end-to-end run: a tiny random-weight ZegCLIP segments a generated image.

``python -m zegclip.demo`` needs no weights, no data and no network.
"""

from __future__ import annotations

import torch

from zegclip.model.zegclip import zegclip_tiny


def main() -> None:
    torch.manual_seed(0)
    model = zegclip_tiny().eval()
    classes = ["sky", "grass", "road"]
    image = torch.zeros(1, 3, 96, 160)
    image[:, :, :32] = torch.tensor([90.0, 150.0, 230.0]).view(1, 3, 1, 1)  # a blue band on top
    image[:, :, 32:] = torch.tensor([60.0, 160.0, 60.0]).view(1, 3, 1, 1)  # green below
    scores = model.predict(model.preprocess(image), model.encode_text(classes), mode="slide", crop=64, stride=48)
    labels = scores.argmax(1)[0]  # H x W
    print(f"image {tuple(image.shape[-2:])}, classes {classes}")
    for index, name in enumerate(classes):
        print(f"  {name:6s} {100 * (labels == index).float().mean():5.1f} % of pixels")
    print("(random weights: the split is arbitrary; load trained weights with zegclip.load_model)")


if __name__ == "__main__":
    main()
