"""The README's Python example runs (with the tiny model in place of the OpenAI weights)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_readme_python_example_runs():
    text = README.read_text()
    block = re.search(r"## Python: use the model.*?```python\n(.*?)```", text, re.S).group(1)
    real = 'zegclip.build_zegclip("ViT-B-16", pretrained="openai", num_prompts=10)'
    assert real in block
    namespace: dict = {}
    exec(block.replace(real, "zegclip.model.build.zegclip_tiny()"), namespace)
    assert namespace["out"].logits.shape == (1, 5, 32, 42)
    assert namespace["scores"].shape == (1, 5, 512, 683)
    assert namespace["labels"].shape == (1, 512, 683)
