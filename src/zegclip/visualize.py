"""Colours, label images and overlays: the one palette of the package.

Class ``c`` is drawn in PASCAL VOC colour ``c + 1`` (VOC's colour map without its black
background entry), in label PNGs and overlays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from zegclip.segmentation import SegmentResult


def voc_colours(count: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved index bits), ``count`` x 3 uint8; 0 is black."""
    colours = np.zeros((count, 3), dtype=np.uint8)
    for index in range(count):
        code, rgb = index, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << (7 - bit)
            code >>= 3
        colours[index] = rgb
    return colours


def palette(num_colors: int = 256) -> np.ndarray:
    """A fixed palette, num_colors x 3 uint8: the PASCAL VOC colours, black skipped."""
    return voc_colours(num_colors + 1)[1:]


def label_image(labels: np.ndarray) -> Image.Image:
    """H x W class indices -> palette PNG image (16-bit grey beyond 256 classes)."""
    if labels.max(initial=0) < 256:
        image = Image.fromarray(labels.astype(np.uint8), mode="P")
        image.putpalette(palette().ravel().tolist())
        return image
    return Image.fromarray(labels.astype(np.uint16))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def overlay_image(image: np.ndarray, result: SegmentResult, alpha: float = 0.5) -> Image.Image:
    """The image blended with the class colours, with a legend panel on the right."""
    colors = palette(max(256, len(result.class_names)))
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colors[result.labels].astype(np.float32)
    picture = Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))
    areas = result.areas()
    font = _font(max(12, min(picture.size) // 30))
    line = font.getbbox("Ag")[3] + 6
    lines = [f"{name}  {area:.1f}%" for name, area in areas.items()]
    text_width = max(int(font.getlength(text)) for text in lines)
    panel_w, panel_h = text_width + line + 16, line * len(lines) + 10
    canvas = Image.new("RGB", (picture.width + panel_w, max(picture.height, panel_h)), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    index = {name: c for c, name in enumerate(result.class_names)}
    for row, (name, text) in enumerate(zip(areas, lines, strict=True)):
        x, y = picture.width + 6, 5 + row * line
        draw.rectangle((x, y + 2, x + line - 6, y + line - 4), fill=tuple(int(v) for v in colors[index[name]]))
        draw.text((x + line, y), text, fill="black", font=font)
    return canvas
