"""zegclip.segmentation: vocabularies, synonyms, the test-time resize and segment()."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from zegclip.data.classes import VOC_CLASSES
from zegclip.model import ZegCLIP
from zegclip.model.build import zegclip_tiny
from zegclip.segmentation import (
    MIN_SIDE,
    ImageReadError,
    ScaleWarning,
    VocabularyError,
    encode_vocabulary,
    inference_size,
    load_image,
    parse_vocabulary,
    resize_short_side,
    seen_mask,
    segment,
    segment_batch,
    short_side_size,
)


@pytest.fixture(scope="module")
def model() -> ZegCLIP:
    torch.manual_seed(0)
    return zegclip_tiny().eval()


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """A non-square 40 x 70 RGB uint8 image."""
    return np.random.default_rng(0).integers(0, 256, size=(40, 70, 3), dtype=np.uint8)


# ---------------------------------------------------------------- vocabulary


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cat; grass, lawn; sky", [["cat"], ["grass", "lawn"], ["sky"]]),
        ("  cat ;; potted   plant ,  house plant ; ", [["cat"], ["potted plant", "house plant"]]),
        ("cat", [["cat"]]),
        (["cat", "grass, lawn"], [["cat"], ["grass", "lawn"]]),
        ([["grass", "lawn"], ("sky",)], [["grass", "lawn"], ["sky"]]),
    ],
)
def test_parse_vocabulary_strings_and_lists(spec, expected) -> None:
    assert parse_vocabulary(spec) == expected


def test_parse_vocabulary_dataset_name() -> None:
    assert parse_vocabulary("voc") == [[name] for name in VOC_CLASSES]
    assert len(parse_vocabulary("coco_stuff")) == 171
    assert len(parse_vocabulary("context")) == 59


def test_parse_vocabulary_file(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\ncat\n\n grass, lawn  # two names\n#sky\nroad,street\n", encoding="utf-8")
    expected = [["cat"], ["grass", "lawn"], ["road", "street"]]
    assert parse_vocabulary(str(path)) == expected
    assert parse_vocabulary(path) == expected


def test_parse_vocabulary_file_from_a_windows_editor(tmp_path: Path) -> None:
    """Notepad's UTF-8: a byte-order mark first and CRLF line ends; neither is part of a name."""
    path = tmp_path / "classes.txt"
    path.write_bytes("red stripes\r\ngrass, lawn \r\n".encode("utf-8-sig"))
    assert parse_vocabulary(path) == [["red stripes"], ["grass", "lawn"]]


@pytest.mark.parametrize("spec", ["", " ; ;", [], [[]], ", ,"])
def test_empty_vocabulary_is_an_error(spec) -> None:
    with pytest.raises(VocabularyError, match="empty"):
        parse_vocabulary(spec)


def test_empty_vocabulary_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("# nothing here\n\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match="empty"):
        parse_vocabulary(str(path))


@pytest.mark.parametrize(
    ("spec", "named"),
    [("cat; dog; cat", "cat"), ("cat; Cat", "Cat"), ("grass, lawn; lawn", "lawn"), (["sky", "sky, heaven"], "sky")],
)
def test_duplicate_names_are_an_error_that_names_them(spec, named) -> None:
    with pytest.raises(VocabularyError, match=f"duplicate class names.*{named}"):
        parse_vocabulary(spec)


def test_missing_vocabulary_file_is_an_error() -> None:
    with pytest.raises(VocabularyError, match="not found"):
        parse_vocabulary("no/such/classes.txt")


def test_seen_mask_matches_any_synonym_and_names_unknown_ones() -> None:
    vocabulary = parse_vocabulary("cat; grass, lawn; sky")
    assert seen_mask(vocabulary, ["lawn", "Cat"]) == [True, True, False]
    assert seen_mask(vocabulary, None) is None
    with pytest.raises(VocabularyError, match="not in the vocabulary: dog, tree"):
        seen_mask(vocabulary, ["cat", "dog", "tree"])


# ---------------------------------------------------------------- synonyms


def test_synonym_embedding_is_the_normalised_mean(model: ZegCLIP) -> None:
    embeds = encode_vocabulary(model, [["sky"], ["grass", "lawn"]])
    grass, lawn, sky = model.encode_text(["grass", "lawn", "sky"])
    assert embeds.shape == (2, grass.numel())
    torch.testing.assert_close(embeds[0], sky)
    torch.testing.assert_close(embeds[1], F.normalize((grass + lawn) / 2, dim=-1))
    assert not torch.allclose(embeds[1], grass, atol=1e-3)  # really a mix, not the first name
    assert torch.linalg.vector_norm(embeds[1]).item() == pytest.approx(1.0, abs=1e-5)


def test_synonyms_with_ensemble_templates(model: ZegCLIP) -> None:
    embeds = encode_vocabulary(model, [["grass", "lawn"]], "ensemble")
    grass, lawn = model.encode_text(["grass", "lawn"], "ensemble")
    torch.testing.assert_close(embeds[0], F.normalize(grass + lawn, dim=-1))


# ---------------------------------------------------------------- images and resize


@pytest.mark.parametrize(
    ("size", "expected"),
    [((375, 500), (512, 683)), ((500, 375), (683, 512)), ((512, 512), (512, 512)), ((100, 1000), (512, 5120))],
)
def test_short_side_size_keeps_aspect_without_long_side_cap(size, expected) -> None:
    assert short_side_size(*size, 512) == expected


def test_resize_short_side_is_opencv_bilinear_on_uint8() -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(36, 54, 3), dtype=np.uint8)
    out = resize_short_side(image, 64)
    assert out.shape == (64, 96, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, cv2.resize(image, (96, 64), interpolation=cv2.INTER_LINEAR))
    assert resize_short_side(image, None) is image
    assert resize_short_side(image, 36) is image  # already at the test scale


@pytest.mark.parametrize(
    ("size", "short_side", "expected"),
    [
        ((375, 500), 512, (512, 683)),  # ordinary photos: the paper's scale
        ((100, 400), 512, (512, 2048)),  # exactly 4:1: not capped
        ((100, 1000), 512, (205, 2048)),  # 10:1: long side capped at 4 x 512, aspect kept
        ((4000, 20), 512, (2048, MIN_SIDE)),  # 200:1: capped, the short side stretched to MIN_SIDE
        ((8, 8), None, (MIN_SIDE, MIN_SIDE)),  # keep size, but no side below MIN_SIDE
        ((20, 300), None, (MIN_SIDE, 300)),
    ],
)
def test_inference_size_caps_the_long_side(size, short_side, expected) -> None:
    assert inference_size(*size, short_side, 4.0) == expected
    if short_side is not None:
        assert inference_size(*size, short_side) == tuple(max(s, MIN_SIDE) for s in short_side_size(*size, short_side))


def test_load_image_inputs_agree(tmp_path: Path, picture: np.ndarray) -> None:
    path = tmp_path / "pic.png"
    Image.fromarray(picture).save(path)
    np.testing.assert_array_equal(load_image(path), picture)
    np.testing.assert_array_equal(load_image(str(path)), picture)
    np.testing.assert_array_equal(load_image(Image.fromarray(picture)), picture)
    np.testing.assert_array_equal(load_image(picture[..., 0]), np.repeat(picture[..., :1], 3, axis=-1))
    rgba = np.concatenate([picture, np.full_like(picture[..., :1], 255)], axis=-1)
    np.testing.assert_array_equal(load_image(rgba), picture)


def _gradient16() -> np.ndarray:
    """A 16-bit grey gradient 6 x 64 covering 0..65535 (with the half-way points of /257)."""
    row = np.linspace(0, 65535, 64).round().astype(np.uint16)
    row[1:4] = [128, 129, 257 + 128]  # round(128 / 257) = 0, round(129 / 257) = 1, 385 / 257 -> 1
    return np.repeat(row[None], 6, axis=0)


def test_load_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    gradient = _gradient16()
    path = tmp_path / "grey16.png"
    Image.fromarray(gradient).save(path)
    with Image.open(path) as pil:
        assert pil.mode == "I;16"
    expected = np.round(gradient / 257).astype(np.uint8)
    assert list(expected[0, :4]) == [0, 0, 1, 1]
    loaded = load_image(path)
    assert loaded.shape == (6, 64, 3) and loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, np.repeat(expected[..., None], 3, axis=-1))
    assert len(np.unique(loaded)) > 50  # a gradient, not {0, 255}
    np.testing.assert_array_equal(load_image(gradient), loaded)  # uint16 arrays
    np.testing.assert_array_equal(load_image(np.repeat(gradient[..., None], 3, -1)), loaded)
    np.testing.assert_array_equal(load_image(gradient.astype(">u2")), loaded)


def test_load_32bit_and_float_images(tmp_path: Path) -> None:
    gradient = _gradient16()
    expected = np.round(gradient / 257).astype(np.uint8)
    Image.fromarray(gradient.astype(np.int32)).save(tmp_path / "i32.tif")  # mode I, 16-bit values
    np.testing.assert_array_equal(load_image(tmp_path / "i32.tif")[..., 0], expected)
    wide = (gradient.astype(np.int32) * 1000) - 5000  # beyond 16 bits: min..max stretched
    np.testing.assert_array_equal(load_image(Image.fromarray(wide))[..., 0][:, [0, -1]], [[0, 255]] * 6)
    unit = np.linspace(0, 1, 64, dtype=np.float32)[None].repeat(4, 0)
    Image.fromarray(unit).save(tmp_path / "f.tif")  # mode F in 0..1: x 255
    np.testing.assert_array_equal(load_image(tmp_path / "f.tif")[..., 0], np.rint(unit * 255).astype(np.uint8))
    np.testing.assert_array_equal(load_image(Image.fromarray(unit * 255))[..., 0], np.rint(unit * 255))


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 3), dtype=np.float32), np.zeros((4, 4, 2), dtype=np.uint8), np.zeros((0, 4, 3), np.uint8)]
)
def test_load_image_rejects_bad_arrays(bad: np.ndarray) -> None:
    with pytest.raises(ImageReadError):
        load_image(bad)


def test_load_image_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        load_image(path)
    with pytest.raises(ImageReadError, match="missing.png"):
        load_image(tmp_path / "missing.png")


# ---------------------------------------------------------------- segment


def test_segment_non_square_returns_original_size(model: ZegCLIP, picture: np.ndarray) -> None:
    result = segment(model, picture, "cat; grass, lawn; sky", short_side=64)
    assert result.class_names == ["cat", "grass", "sky"]
    assert result.labels.shape == (40, 70) and result.labels.dtype == np.int64
    assert result.scores.shape == (3, 40, 70) and result.scores.dtype == torch.float32
    np.testing.assert_array_equal(result.scores.argmax(0).numpy(), result.labels)
    areas = result.areas()
    assert sum(areas.values()) == pytest.approx(100.0)
    assert set(areas) == {result.class_names[i] for i in np.unique(result.labels)}


def test_segment_paper_scale_slide_and_whole(model: ZegCLIP) -> None:
    # 30 x 45 -> 512 x 768: two sliding windows across the width
    picture = np.random.default_rng(1).integers(0, 256, size=(30, 45, 3), dtype=np.uint8)
    slide = segment(model, picture, ["cat", "dog"])
    whole = segment(model, picture, ["cat", "dog"], mode="whole")
    assert slide.labels.shape == whole.labels.shape == (30, 45)
    assert not torch.allclose(slide.scores, whole.scores)  # the windows change the result


def test_segment_matches_manual_pipeline(model: ZegCLIP, picture: np.ndarray) -> None:
    """segment() == resize short side (uint8, OpenCV), normalise, predict, resize scores back, argmax."""
    result = segment(model, picture, ["cat", "dog"], short_side=64, mode="whole")
    resized = cv2.resize(picture, (112, 64), interpolation=cv2.INTER_LINEAR)
    inputs = model.preprocess(torch.from_numpy(resized).permute(2, 0, 1)[None].float())
    expected = model.predict(inputs, model.encode_text(["cat", "dog"]), mode="whole", output_size=(40, 70))[0]
    torch.testing.assert_close(result.scores, expected)
    assert result.note is None


def test_labels_without_scores_are_the_same(model: ZegCLIP, picture: np.ndarray, monkeypatch) -> None:
    """keep_scores=False scores two classes at a time: same labels, calibration included."""
    import zegclip.model.inference as inference

    monkeypatch.setattr(inference, "SCORE_BUDGET", 40 * 70 * 2)  # two classes per chunk
    vocabulary = "cat; grass, lawn; sky; road; tree"
    options = {"short_side": 64, "crop": 64, "stride": 48, "seen": ["sky", "cat"]}
    full = segment(model, picture, vocabulary, **options)
    (lean,) = segment_batch(model, [picture], vocabulary, keep_scores=False, **options)
    assert lean.scores is None
    top2 = full.scores.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-6).numpy()  # pixels whose label no rounding can change
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(lean.labels[clear], full.labels[clear])
    assert len(np.unique(full.labels)) > 1


def test_extreme_aspect_ratio_is_capped_with_a_warning(model: ZegCLIP) -> None:
    """4000 x 20 would be 102,400 x 512 at the paper's scale; capped it takes a moment."""
    picture = np.random.default_rng(2).integers(0, 256, size=(4000, 20, 3), dtype=np.uint8)
    with pytest.warns(ScaleWarning, match=r"segmented at 32 x 2048 instead of 512 x 102400"):
        result = segment(model, picture, ["cat", "dog"])
    assert result.labels.shape == (4000, 20) and result.scores.shape == (2, 4000, 20)
    assert "long side capped" in result.note


def test_tiny_image_at_its_own_size(model: ZegCLIP) -> None:
    """short_side=None keeps the size; a side below MIN_SIDE (two patches) is stretched to it."""
    picture = np.random.default_rng(2).integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    with pytest.warns(ScaleWarning, match="stretched"):
        result = segment(model, picture, ["cat", "dog"], short_side=None)
    assert result.labels.shape == (8, 12)


@pytest.mark.parametrize("short_side", [0, 1, MIN_SIDE - 1, 4097, 100_000])
def test_short_side_out_of_range_is_an_error(model: ZegCLIP, picture: np.ndarray, short_side: int) -> None:
    with pytest.raises(ValueError, match="short side must be between 32 and 4096"):
        segment(model, picture, ["cat"], short_side=short_side)
    with pytest.raises(ValueError, match="max_aspect_ratio must be at least 1"):
        segment(model, picture, ["cat"], max_aspect_ratio=0.5)


def test_segment_seen_classes_are_shifted(model: ZegCLIP, picture: np.ndarray) -> None:
    plain = segment(model, picture, "cat; grass, lawn; sky", short_side=64)
    calibrated = segment(model, picture, "cat; grass, lawn; sky", short_side=64, seen=["lawn"])
    torch.testing.assert_close(calibrated.scores[1], plain.scores[1] - 0.1)
    torch.testing.assert_close(calibrated.scores[[0, 2]], plain.scores[[0, 2]])
    with pytest.raises(VocabularyError, match="dog"):
        segment(model, picture, "cat; sky", seen=["dog"])


def test_segment_path_and_pil_inputs(model: ZegCLIP, picture: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "pic.png"
    Image.fromarray(picture).save(path)
    reference = segment(model, picture, ["cat", "dog"], short_side=64).labels
    np.testing.assert_array_equal(segment(model, path, ["cat", "dog"], short_side=64).labels, reference)
    np.testing.assert_array_equal(segment(model, Image.open(path), ["cat", "dog"], short_side=64).labels, reference)


def test_segment_bf16_runs_on_cpu(model: ZegCLIP, picture: np.ndarray) -> None:
    result = segment(model, picture, ["cat", "dog"], short_side=64, precision="bf16")
    assert result.scores.dtype == torch.float32 and result.labels.shape == (40, 70)
    with pytest.raises(ValueError, match="precision"):
        segment(model, picture, ["cat"], precision="fp8")
