"""The model presets, defined once: the Hydra model configs ``zegclip/conf/model/*.yaml``.

Hydra composes them (``model=zegclip_tiny``); Python reads the same files here, so
`zegclip.model.MODEL_PRESETS` and ``zegclip train model=...`` build the same networks.
A file holds ``build_zegclip`` keyword arguments and may start from a sibling file
(``defaults: [zegclip_vitb16, _self_]``, Hydra's own syntax; only that form is read here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MODEL_CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf" / "model"

PRESET_CONFIGS: dict[str, str] = {
    "vitb16_voc": "zegclip_vitb16",
    "vitb16_coco": "zegclip_vitb16_coco",
    "tiny": "zegclip_tiny",
}
"""Preset name -> its Hydra model config (``conf/model/<name>.yaml``)."""


def _read(config: str) -> dict[str, Any]:
    data = yaml.safe_load((MODEL_CONFIG_DIR / f"{config}.yaml").read_text()) or {}
    defaults = data.pop("defaults", [])
    if "_self_" not in defaults:  # Hydra's rule: the file's own keys come last unless placed
        defaults = [*defaults, "_self_"]
    merged: dict[str, Any] = {}
    for base in defaults:
        merged.update(data if base == "_self_" else _read(base))
    return merged


def preset_kwargs(name: str) -> dict[str, Any]:
    """The ``build_zegclip`` keyword arguments of preset ``name`` (a fresh dict)."""
    try:
        config = PRESET_CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESET_CONFIGS)}") from None
    return _read(config)
