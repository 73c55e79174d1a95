"""zegclip.segmentation: vocabularies, synonyms, the test-time resize and segment()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from zegclip.data.classes import VOC_CLASSES
from zegclip.model.zegclip import ZegCLIP, zegclip_tiny
from zegclip.segmentation import (
    ImageReadError,
    VocabularyError,
    encode_vocabulary,
    load_image,
    parse_vocabulary,
    resize_short_side,
    seen_mask,
    segment,
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


def test_resize_short_side_is_bilinear_to_the_paper_size() -> None:
    images = torch.rand(2, 3, 30, 45) * 255
    out = resize_short_side(images, 64)
    assert out.shape == (2, 3, 64, 96)
    torch.testing.assert_close(out, F.interpolate(images, size=(64, 96), mode="bilinear", align_corners=False))
    assert resize_short_side(images, None) is images


def test_load_image_inputs_agree(tmp_path: Path, picture: np.ndarray) -> None:
    path = tmp_path / "pic.png"
    Image.fromarray(picture).save(path)
    np.testing.assert_array_equal(load_image(path), picture)
    np.testing.assert_array_equal(load_image(str(path)), picture)
    np.testing.assert_array_equal(load_image(Image.fromarray(picture)), picture)
    np.testing.assert_array_equal(load_image(picture[..., 0]), np.repeat(picture[..., :1], 3, axis=-1))
    rgba = np.concatenate([picture, np.full_like(picture[..., :1], 255)], axis=-1)
    np.testing.assert_array_equal(load_image(rgba), picture)


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
    """segment() == resize short side, normalise, predict, resize scores back, argmax."""
    result = segment(model, picture, ["cat", "dog"], short_side=64, mode="whole")
    images = torch.from_numpy(picture).permute(2, 0, 1)[None].float()
    inputs = model.preprocess(F.interpolate(images, size=(64, 112), mode="bilinear", align_corners=False))
    expected = model.predict(inputs, model.encode_text(["cat", "dog"]), mode="whole", output_size=(40, 70))[0]
    torch.testing.assert_close(result.scores, expected)


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
