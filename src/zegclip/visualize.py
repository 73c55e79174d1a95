"""Colours, label images and overlays: the one palette of the package.

Class ``c`` is drawn in PASCAL VOC colour ``c + 1`` (VOC's colour map without its black
background entry), in label PNGs and overlays.
"""

from __future__ import annotations

import functools
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


LEGEND_FONTS = (
    "DejaVuSans.ttf",  # Latin, Greek, Cyrillic and more (most Linux systems)
    "NotoSans-Regular.ttf",
    "NotoSansCJK-Regular.ttc",  # Chinese, Japanese, Korean
    "NotoSansCJKsc-Regular.otf",
    "wqy-microhei.ttc",
    "wqy-zenhei.ttc",
    "Arial Unicode.ttf",  # macOS
    "msyh.ttc",  # Windows: Microsoft YaHei
    "seguisym.ttf",
    "arial.ttf",
)
"""Font files tried, in order, for a legend name Pillow's own font cannot draw (found by Pillow in
the system's font folders); a name none of them draws is shown as ``class <index>``."""
LEGEND_ROWS = 12
"""Rows a legend may always use, beside the smallest image; beyond the image's height it adds no more."""
LEGEND_TEXT_SHARE = 0.5
"""A legend line is cut to this share of the image width (at least `MIN_LEGEND_TEXT` px)."""
MIN_LEGEND_TEXT = 120
_MISSING = "\U0010fffd"  # a private-use code point no font draws: its mask is the font's "missing" box


@functools.lru_cache(maxsize=64)
def _font(file: str | None, size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont | None:
    """``file`` at ``size`` (None: Pillow's own font), or None when this system has no such file."""
    if file is None:
        try:
            return ImageFont.load_default(size=size)
        except (TypeError, OSError):  # Pillow without FreeType
            return ImageFont.load_default()
    try:
        return ImageFont.truetype(file, size)
    except OSError:
        return None


def _mask(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, char: str) -> tuple[tuple[int, int], list[int]]:
    mask = font.getmask(char)
    return mask.size, list(mask)


@functools.lru_cache(maxsize=4096)
def _draws(file: str | None, size: int, char: str) -> bool:
    """Whether the font draws ``char`` with a glyph of its own (not its box for a missing one)."""
    font = _font(file, size)
    return font is not None and (char.isspace() or _mask(font, char) != _mask(font, _MISSING))


def legend_font(text: str, size: int) -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, bool]:
    """The first font that draws every character of ``text``: Pillow's, then `LEGEND_FONTS`.

    Returns ``(font, True)``, or ``(Pillow's font, False)`` when none draws all of it.
    """
    for file in (None, *LEGEND_FONTS):
        if _font(file, size) is not None and all(_draws(file, size, char) for char in set(text)):
            return _font(file, size), True
    return _font(None, size), False


def _cut(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """``text``, or its longest start that fits ``width`` px followed by "...", whole words kept when possible."""
    if font.getlength(text) <= width:
        return text
    low, high = 0, len(text)
    while low < high:  # the longest prefix that fits with the dots
        middle = (low + high + 1) // 2
        if font.getlength(text[:middle] + "...") <= width:
            low = middle
        else:
            high = middle - 1
    start = text[:low]
    if " " in start.strip() and len(start.rsplit(" ", 1)[0]) > low // 2:
        start = start.rsplit(" ", 1)[0]
    return start.rstrip() + "..."


def legend_lines(
    result: SegmentResult, size: int, text_width: int, rows: int
) -> list[tuple[int | None, str, ImageFont.ImageFont | ImageFont.FreeTypeFont]]:
    """What the legend shows: ``(class index or None, text, font)`` per row, largest area first.

    A name no available font draws is ``class <index>``; a line wider than ``text_width`` px
    is cut; beyond ``rows`` rows the last one says how many classes are left out.
    """
    entries = []
    index = {name: c for c, name in enumerate(result.class_names)}
    for name, area in result.areas().items():
        font, whole = legend_font(name, size)
        label = name if whole else f"class {index[name]}"
        suffix = f"  {area:.1f}%"
        room = max(text_width - int(font.getlength(suffix)), 1)
        entries.append((index[name], _cut(label, font, room) + suffix, font))
    if len(entries) > rows:
        more = len(entries) - rows + 1
        entries = entries[: rows - 1] + [(None, f"+ {more} more classes", _font(None, size))]
    return entries


def overlay_image(image: np.ndarray, result: SegmentResult, alpha: float = 0.5, legend: bool = True) -> Image.Image:
    """The image blended with the class colours; with ``legend``, a legend panel on the right.

    The photo stays the main part: the legend is at most as tall as the image (or `LEGEND_ROWS`
    rows beside a small one), its lines at most `LEGEND_TEXT_SHARE` of the image width; names
    are drawn with a font that has their characters (`legend_font`). Without ``legend`` the
    overlay has the image's size (the demo's page shows the legend itself).
    """
    colors = palette(max(256, len(result.class_names)))
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colors[result.labels].astype(np.float32)
    picture = Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))
    if not legend:
        return picture
    size = max(12, min(picture.size) // 30)
    line = _font(None, size).getbbox("Ag")[3] + 6
    rows = max(LEGEND_ROWS, (picture.height - 10) // line)
    text_width = max(MIN_LEGEND_TEXT, int(picture.width * LEGEND_TEXT_SHARE))
    entries = legend_lines(result, size, text_width, rows)
    widest = max(int(font.getlength(text)) for _, text, font in entries)
    panel_w, panel_h = min(widest, text_width) + line + 16, line * len(entries) + 10
    canvas = Image.new("RGB", (picture.width + panel_w, max(picture.height, panel_h)), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, (c, text, font) in enumerate(entries):
        x, y = picture.width + 6, 5 + row * line
        if c is not None:
            draw.rectangle((x, y + 2, x + line - 6, y + line - 4), fill=tuple(int(v) for v in colors[c]))
        draw.text((x + line, y), text, fill="black", font=font)
    return canvas
