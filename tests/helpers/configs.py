"""Overrides and keyword arguments that shrink the real configs and models to seconds."""

TINY_KWARGS = {"image_size": 64, "decoder_ffn_dim": 64, "quick_gelu": True}
"""What the tests change of the tiny preset (``zegclip_tiny``, ``conf/model/zegclip_tiny.yaml``):
a smaller crop and FFN, and QuickGELU stated for its weights given as a file."""

TINY_DEMO = [
    "experiment=demo",
    "trainer.enable_progress_bar=false",
    "data.synthetic.num_train=8",
    "data.synthetic.num_val=3",
    "data.synthetic.size=96",
    "data.batch_size=4",
    "global_batch_size=4",
]
"""Overrides that shrink the demo experiment to seconds."""

SMALL_EVAL = ["data.num_workers=0", "data.persistent_workers=false", "data.pin_memory=false", "data.eval_short_side=64"]
SMALL_EVAL += ["module.crop=64", "module.stride=48", "logger=none", "callbacks=none"]
"""Overrides that shrink an evaluation of a real dataset config (``zegclip suite``) to seconds."""
