"""Fixtures for the dataset-preparation tests: tiny raw downloads and prepared roots."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.fake_raw import COCO_IDS, CONTEXT_IDS, VOC_IDS, make_coco_raw, make_context_raw, make_voc_raw
from zegclip.data.prepare import prepare_coco_stuff, prepare_context, prepare_voc


@pytest.fixture
def raw_voc(tmp_path: Path) -> tuple[Path, dict]:
    raw = tmp_path / "raw"
    return raw, make_voc_raw(raw, **VOC_IDS)


@pytest.fixture
def prepared_voc(raw_voc: tuple[Path, dict], tmp_path: Path) -> Path:
    out = tmp_path / "data"
    prepare_voc(raw_voc[0], out, workers=1)
    return out


@pytest.fixture
def prepared_coco(tmp_path: Path) -> Path:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_coco_raw(raw, **COCO_IDS)
    prepare_coco_stuff(raw, out, workers=1)
    return out


@pytest.fixture
def prepared_context(tmp_path: Path) -> Path:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_context_raw(raw, **CONTEXT_IDS)
    prepare_context(raw, out, workers=1)
    return out
