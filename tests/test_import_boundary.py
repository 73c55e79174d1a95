"""The model (and inference) must not pull in Lightning, Hydra or albumentations (DESIGN rule 1)."""

from __future__ import annotations

import subprocess
import sys


def test_model_imports_without_lightning_or_hydra():
    code = (
        "import sys, zegclip, zegclip.model, zegclip.data.classes, zegclip.segmentation, zegclip.predict;"
        "heavy = ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf', 'albumentations');"
        "bad = [m for m in heavy if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
