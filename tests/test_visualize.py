"""Overlays (zegclip.visualize): the legend for any vocabulary, the photo the main part."""

from __future__ import annotations

import numpy as np

from zegclip.segmentation import SegmentResult
from zegclip.visualize import (
    LEGEND_FONTS,
    LEGEND_ROWS,
    _draws,
    _font,
    legend_font,
    legend_lines,
    overlay_image,
    palette,
)

NAMES = ["cat", "猫", "кошка", "🐈 cat emoji", "chat, Katze"]


def _result(names: list[str], height: int = 240, width: int = 320) -> SegmentResult:
    """Every class present, as vertical stripes."""
    columns = np.arange(width) * len(names) // width  # class of each column, 0..C-1
    return SegmentResult(np.repeat(columns[None], height, 0).astype(np.int64), None, names)


def _photo(height: int = 240, width: int = 320) -> np.ndarray:
    return np.full((height, width, 3), 128, dtype=np.uint8)


def _draws_all(text: str, font) -> bool:
    """Whether ``font`` (one of the legend's) has a glyph of its own for every character of ``text``."""
    (file,) = [f for f in (None, *LEGEND_FONTS) if _font(f, font.size) is font]
    return all(_draws(file, font.size, char) for char in set(text))


def test_legend_never_draws_a_missing_glyph_box() -> None:
    """Chinese, Cyrillic, emoji: drawn with a font that has them, else as ``class <index>``; never as boxes."""
    lines = legend_lines(_result(NAMES), 14, 400, 20)
    assert sorted(c for c, _, _ in lines) == list(range(len(NAMES)))
    for c, text, font in lines:
        assert text.rsplit("  ", 1)[0] in (NAMES[c], f"class {c}")
        assert _draws_all(text, font), (text, font.getname())
    assert [text for c, text, _ in lines if c == 0][0].startswith("cat  ")  # Latin: always as written
    font, whole = legend_font("猫", 14)
    assert whole == _draws_all("猫", font)


def test_a_very_long_name_is_cut_and_the_overlay_stays_photo_sized() -> None:
    name = ("very long class name " * 215).strip()  # 4,514 characters: a 27,217 px wide overlay before
    result = _result(["sky", name])
    overlay = overlay_image(_photo(), result)
    assert overlay.height == 240 and overlay.width <= 320 + 160 + 40
    (text,) = [text for c, text, _ in legend_lines(result, 12, 160, 20) if c == 1]
    assert text.startswith("very long class") and "..." in text and text.endswith("%")


def test_a_hundred_classes_keep_the_photo_the_main_part() -> None:
    result = _result([f"class name {k}" for k in range(100)], 480, 640)
    overlay = overlay_image(_photo(480, 640), result)
    assert overlay.height == 480 and overlay.width <= 640 + 320 + 40  # not a thumbnail beside a tall legend
    lines = legend_lines(result, 16, 320, 20)
    assert len(lines) == 20 and lines[-1][0] is None and lines[-1][1] == "+ 81 more classes"


def test_a_small_image_gets_a_few_rows_of_legend() -> None:
    result = _result([f"c{k}" for k in range(30)], 40, 60)
    overlay = overlay_image(_photo(40, 60), result)
    line = _font(None, 12).getbbox("Ag")[3] + 6
    assert overlay.height == LEGEND_ROWS * line + 10


def test_without_legend_the_overlay_is_the_blended_photo() -> None:
    result = _result(["cat", "猫"])
    overlay = np.asarray(overlay_image(_photo(), result, legend=False))
    expected = (0.5 * _photo() + 0.5 * palette(256)[result.labels].astype(np.float64)).round().astype(np.uint8)
    np.testing.assert_array_equal(overlay, expected)
