"""Building ZegCLIP: the factory, the size presets, and reading checkpoints of every kind.

``build_zegclip`` is the one factory (presets are small functions over it, as in
segment-anything's ``build_sam.py``). ``load_model`` reads our files (``ZegCLIP.save``),
training checkpoints (Lightning ``.ckpt``) and the authors' released ``.pth`` (key mapping in
:mod:`zegclip.model.official`), always with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import inspect
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from typing import Any

import open_clip
import torch

from zegclip.errors import ZegCLIPError
from zegclip.model.clip_encoder import (
    PromptedVisionEncoder,
    is_clip_architecture,
    load_clip,
    resolve_quick_gelu,
    uses_quick_gelu,
)
from zegclip.model.decoder import AttentionMaskDecoder, RelationshipDescriptor
from zegclip.model.official import (
    NOT_IN_OFFICIAL,
    convert_official_state_dict,
    is_official,
    official_config,
)
from zegclip.model.presets import preset_kwargs
from zegclip.model.pretrained import CONFIG_NAME, is_pretrained_source, read_pretrained, resolve_folder
from zegclip.model.text import TextEncoder
from zegclip.model.zegclip import CHECKPOINT_FORMAT, ZegCLIP


def _warn_quick_gelu(clip_model: str, pretrained: str | None, quick_gelu: bool | None) -> None:
    if (
        quick_gelu is None
        and pretrained
        and pretrained != "openai"
        and os.path.isfile(pretrained)
        and "quickgelu" not in clip_model.lower()
    ):
        warnings.warn(
            f"loading CLIP weights from {pretrained} with GELU; OpenAI CLIP weights need "
            "QuickGELU (pass quick_gelu=True), or accuracy drops silently. Pass quick_gelu=False "
            "to silence this for LAION-style weights.",
            UserWarning,
            stacklevel=3,
        )


def build_zegclip(
    clip_model: str = "ViT-B-16",
    pretrained: str | None = "openai",
    num_prompts: int = 10,
    *,
    image_size: int = 512,
    decoder_layers: int = 3,
    decoder_heads: int = 8,
    decoder_ffn_dim: int = 2048,
    dropout: float = 0.1,
    prompt_dropout: float = 0.1,
    quick_gelu: bool | None = None,
    clip_config: dict[str, Any] | None = None,
    cache_dir: str | None = None,
) -> ZegCLIP:
    """Build ZegCLIP around an open_clip ViT.

    Args:
        clip_model: open_clip architecture name, e.g. ``"ViT-B-16"``, or ``"zegclip-tiny"``.
        pretrained: open_clip tag (``"openai"``, a LAION tag), a local weights file, or None
            for random weights.
        num_prompts: deep prompt tokens per layer (10 for VOC/Context, 100 for COCO-Stuff).
        image_size: training crop; the positional embedding is resized to its grid once.
        decoder_layers, decoder_heads, decoder_ffn_dim, dropout: the mask decoder (3, 8, 2048, 0.1).
        prompt_dropout: dropout on inserted prompts (0.1).
        quick_gelu: force QuickGELU (True) or GELU (False); None takes the tag's own
            activation (QuickGELU for ``openai``). Needed as True for OpenAI weights given as
            a file. ``config["quick_gelu"]`` records the activation actually built.
        clip_config: explicit open_clip config instead of ``clip_model`` (random weights).
        cache_dir: download cache for tagged weights.
    """
    _warn_quick_gelu(clip_model, pretrained, quick_gelu)
    config = {
        "clip_model": clip_model,
        "pretrained": pretrained,
        "num_prompts": num_prompts,
        "image_size": image_size,
        "decoder_layers": decoder_layers,
        "decoder_heads": decoder_heads,
        "decoder_ffn_dim": decoder_ffn_dim,
        "dropout": dropout,
        "prompt_dropout": prompt_dropout,
        "quick_gelu": quick_gelu,
        "clip_config": clip_config,
    }
    clip = load_clip(clip_model, pretrained, quick_gelu=quick_gelu, clip_config=clip_config, cache_dir=cache_dir)
    config["quick_gelu"] = uses_quick_gelu(clip)  # rebuilt the same from a checkpoint, whatever the tag
    if clip_config is not None:
        context = clip_config["text_cfg"].get("context_length", 77)
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context)
    else:
        tokenizer = open_clip.get_tokenizer(clip_model)
    visual, clip.visual = clip.visual, None  # the text tower keeps the rest of CLIP
    dim = visual.output_dim
    return ZegCLIP(
        image_encoder=PromptedVisionEncoder(
            visual=visual,
            num_prompts=num_prompts,
            image_size=image_size,
            prompt_dropout=prompt_dropout,
        ),
        text_encoder=TextEncoder(clip=clip, tokenizer=tokenizer),
        relationship=RelationshipDescriptor(dim=dim),
        decoder=AttentionMaskDecoder(
            dim=dim,
            num_layers=decoder_layers,
            num_heads=decoder_heads,
            ffn_dim=decoder_ffn_dim,
            dropout=dropout,
        ),
        config=config,
    )


def zegclip_vitb16_voc(**kwargs: Any) -> ZegCLIP:
    """The paper's VOC / Context model: ViT-B/16 (OpenAI), 10 prompt tokens (``model=zegclip_vitb16``)."""
    return build_zegclip(**{**preset_kwargs("vitb16_voc"), **kwargs})


def zegclip_vitb16_coco(**kwargs: Any) -> ZegCLIP:
    """The paper's COCO-Stuff model: ViT-B/16 (OpenAI), 100 prompt tokens (``model=zegclip_vitb16_coco``)."""
    return build_zegclip(**{**preset_kwargs("vitb16_coco"), **kwargs})


def zegclip_tiny(**kwargs: Any) -> ZegCLIP:
    """A tiny random-weight model for tests and demos (CPU, seconds; ``model=zegclip_tiny``)."""
    return build_zegclip(**{**preset_kwargs("tiny"), **kwargs})


MODEL_PRESETS = {
    "vitb16_voc": zegclip_vitb16_voc,
    "vitb16_coco": zegclip_vitb16_coco,
    "tiny": zegclip_tiny,
}
"""Preset name -> its builder; each reads its arguments from the Hydra model config
(:mod:`zegclip.model.presets`), so Python and Hydra share one definition."""


# ---------------------------------------------------------------- checkpoints


class CheckpointError(ZegCLIPError, ValueError):
    """A checkpoint that cannot be read as a ZegCLIP model; the message names the file."""


def _load_failure(path: str | os.PathLike, err: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words a person understands."""
    text = str(err)
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, EOFError) or os.path.getsize(path) == 0:
        return "the file is empty or cut short"
    if "central directory" in text or "zip archive" in text or isinstance(err, OSError):
        # the zip reader fails on a cut file with "failed finding central directory" or a bare OSError
        return "the file is truncated or corrupt (incomplete zip archive); download or copy it again"
    blocked = re.search(r"GLOBAL ([\w.]+)", text)
    if blocked:
        return (
            f"it holds a Python object ({blocked.group(1)}) besides tensors and plain containers; "
            "refusing to unpickle it, since that could run code from the file"
        )
    if isinstance(err, pickle.UnpicklingError | KeyError | ValueError | UnicodeDecodeError):
        return "not a PyTorch checkpoint (its content is neither a torch.save zip archive nor a tensor pickle)"
    return f"{type(err).__name__}: {text.splitlines()[0] if text else 'unreadable'}"


def torch_load(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", *, mmap: bool = False
) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with one readable :class:`CheckpointError` per failure.

    Never unpickles arbitrary objects: no code from a file runs. ``mmap`` maps the tensors
    instead of reading them (a cheap look at a large file).
    """
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:
        raise CheckpointError(f"{path}: cannot read this checkpoint: {_load_failure(path, err)}") from err
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(payload).__name__}")
    return payload


def check_build_config(config: Any, where: str) -> dict[str, Any]:
    """A checkpoint's ``build_zegclip`` arguments, checked before anything is built.

    Raises:
        CheckpointError: the config is not a mapping, holds a key that is no argument, or
            names no open_clip architecture; the message names ``where`` and the key.
    """
    if not isinstance(config, dict):
        kind = type(config).__name__
        raise CheckpointError(f"{where}: the config is a {kind}, not a mapping of build_zegclip arguments")
    known = set(inspect.signature(build_zegclip).parameters) - {"cache_dir"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise CheckpointError(
            f"{where}: unknown config key(s) {', '.join(map(repr, unknown))}; expected build_zegclip arguments: "
            f"{', '.join(sorted(known))}"
        )
    clip_model = config.get("clip_model", "ViT-B-16")
    if config.get("clip_config") is None and not is_clip_architecture(clip_model):
        raise CheckpointError(
            f"{where}: config key 'clip_model' is {clip_model!r}, not an open_clip architecture "
            "(e.g. 'ViT-B-16', 'ViT-L-14'; see open_clip.list_models())"
        )
    return config


@dataclass
class CheckpointContents:
    """What a checkpoint of any supported format holds, in this package's key names.

    Attributes:
        config: ``build_zegclip`` keyword arguments.
        state: weights under :class:`ZegCLIP` state-dict names.
        full: whether ``state`` holds every weight (CLIP included), so no CLIP source is needed.
        metadata: provenance and facts stored with the weights.
        kind: ``zegclip`` (``ZegCLIP.save``), ``lightning`` (a training ``.ckpt``) or ``official``.
        config_file: the file the config was read from, for messages (a folder's ``config.json``).
    """

    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    full: bool
    metadata: dict[str, Any]
    kind: str
    config_file: str | None = None


def training_facts(payload: dict[str, Any]) -> dict[str, Any]:
    """What a training ``.ckpt`` records of its run, as ``save_pretrained`` info.

    ``dataset``, ``setting``, ``class_names`` and ``unseen`` (from the module's hyperparameters;
    a folder dataset's classes only while its ``classes.txt`` is still there), ``step`` (the
    optimizer steps done) and ``metrics``: the score each monitoring checkpoint callback saw
    at this save (``val/hIoU`` of a best checkpoint).
    """
    from zegclip.data.datasets import get_dataset_info  # deferred: the model loads without the data readers

    hparams = payload.get("hyper_parameters") or {}
    facts: dict[str, Any] = {k: hparams[k] for k in ("dataset", "setting") if isinstance(hparams.get(k), str)}
    if "dataset" in facts:
        try:
            info = get_dataset_info(
                facts["dataset"], hparams.get("dataset_root"), hparams.get("unseen"), hparams.get("ignore_index")
            )
        except (ZegCLIPError, KeyError, OSError):  # an unknown name, a folder dataset no longer on this disk
            info = None
        if info is not None:
            facts["class_names"] = list(info.class_names)
            unseen = () if hparams.get("cross_dataset") else info.unseen_ids
            facts["unseen"] = [info.class_names[i] for i in unseen]
    if isinstance(payload.get("global_step"), int):
        facts["step"] = payload["global_step"]
    metrics = {}
    for state in (payload.get("callbacks") or {}).values():
        monitor = state.get("monitor") if isinstance(state, dict) else None
        score = state.get("current_score") if isinstance(state, dict) else None
        if isinstance(monitor, str) and isinstance(score, torch.Tensor | float | int):
            metrics[monitor] = float(score)
    if metrics:
        facts["metrics"] = metrics
    return facts


def _ours(payload: dict[str, Any], path: str | os.PathLike) -> CheckpointContents:
    """A file written by ``ZegCLIP.save`` or a ``ZegCLIPModule`` training checkpoint."""
    if payload.get("format") == CHECKPOINT_FORMAT and isinstance(payload.get("state_dict"), dict):
        config, state, kind = check_build_config(payload.get("config"), str(path)), payload["state_dict"], "zegclip"
        metadata = dict(payload.get("metadata") or {})
    elif "model" in payload.get("hyper_parameters", {}) and isinstance(payload.get("state_dict"), dict):
        config, kind = check_build_config(payload["hyper_parameters"]["model"], str(path)), "lightning"
        metadata = training_facts(payload)
        state = {k[len("model.") :]: v for k, v in payload["state_dict"].items() if k.startswith("model.")}
    else:
        raise CheckpointError(
            f"{path}: not a ZegCLIP checkpoint (expected one written by ZegCLIP.save, "
            "a zegclip training .ckpt, or an authors' .pth)"
        )
    full = "image_encoder.visual.conv1.weight" in state
    return CheckpointContents(config, state, full, metadata, kind)


def read_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu", decoder_heads: int = 8
) -> CheckpointContents:
    """Read any supported checkpoint without building a model (``weights_only`` or safetensors).

    ``path``: a ``ZegCLIP.save`` file, a training ``.ckpt``, an authors' ``.pth``, a folder
    written by ``model.save_pretrained`` or an ``hf-hub:org/name`` holding one.
    """
    if is_pretrained_source(path):
        try:
            folder = resolve_folder(path)
            config, state, info = read_pretrained(folder)
        except (ValueError, FileNotFoundError) as err:
            raise CheckpointError(str(err)) from err
        config_file = str(folder / CONFIG_NAME)
        check_build_config(config, config_file)
        state = {k: v.to(map_location) for k, v in state.items()}
        full = "image_encoder.visual.conv1.weight" in state
        return CheckpointContents(config, state, full, info, "pretrained", config_file)
    payload = torch_load(path, map_location)
    if is_official(payload):
        return _official(payload, path, decoder_heads)
    return _ours(payload, path)


def _official(payload: dict[str, Any], path: str | os.PathLike, decoder_heads: int) -> CheckpointContents:
    state = payload["state_dict"]
    try:
        config = official_config(state, decoder_heads=decoder_heads)
        converted = convert_official_state_dict(state, config["decoder_layers"])
    except KeyError as err:
        raise CheckpointError(f"{path}: {err.args[0]}") from err
    metadata: dict[str, Any] = {}
    empty_weight = state.get("decode_head.loss_decode.criterion.empty_weight")
    if empty_weight is not None:  # one entry per training class plus "no object"
        metadata["num_train_classes"] = int(empty_weight.shape[0]) - 1
    return CheckpointContents(config, converted, True, metadata, "official")


def build_from_checkpoint(
    contents: CheckpointContents, source: str, overrides: dict[str, Any] | None = None
) -> ZegCLIP:
    """Build the network a checkpoint describes and load its weights.

    Full checkpoints build CLIP with random weights (then overwritten), so they load with no
    network and no CLIP cache; the activation is resolved from the recorded CLIP source.
    ``overrides`` change build arguments; one that does not fit the weights is an error
    naming the tensor.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(inspect.signature(build_zegclip).parameters))
    if unknown:
        raise TypeError(f"unknown override(s) {unknown}; expected arguments of build_zegclip")
    config = check_build_config({**contents.config, **overrides}, contents.config_file or source)
    if contents.full:
        config["quick_gelu"] = resolve_quick_gelu(
            config.get("clip_model", "ViT-B-16"), config.get("pretrained"), config.get("quick_gelu")
        )
        model = build_zegclip(**{**config, "pretrained": None})
        model.config["pretrained"] = config.get("pretrained")  # where CLIP came from, for the record
    else:
        model = build_zegclip(**config)
    state = dict(contents.state)
    if contents.kind == "official":
        for key, value in model.state_dict().items():
            if key in NOT_IN_OFFICIAL:
                state.setdefault(key, value)
    try:
        model.load_weights(state, trainable_only=not contents.full, source=source)
    except (KeyError, ValueError) as err:
        raise CheckpointError(err.args[0] if err.args else f"{source}: weights do not fit") from err
    model.metadata.update(contents.metadata, source=source)
    return model


def load_official_checkpoint(
    path: str | os.PathLike, *, decoder_heads: int = 8, map_location: str | torch.device = "cpu"
) -> ZegCLIP:
    """Build a ZegCLIP from a checkpoint released by the ZegCLIP authors (mmseg ``.pth``).

    Architecture (prompt count, widths, depths, resolution) is inferred from the tensor
    shapes; the number of heads is not stored in the file (8 in every released model).
    """
    payload = torch_load(path, map_location)
    if not is_official(payload):
        raise CheckpointError(f"{path}: not an authors' ZegCLIP checkpoint (no 'state_dict' with 'backbone.' keys)")
    return build_from_checkpoint(_official(payload, path, decoder_heads), str(path))


def load_model(path: str | os.PathLike, *, map_location: str | torch.device = "cpu", **overrides: Any) -> ZegCLIP:
    """Any checkpoint: ours (``ZegCLIP.save``), a training ``.ckpt``, the authors' ``.pth``, a
    ``save_pretrained`` folder or an ``hf-hub:org/name`` (huggingface_hub's cache and download).

    Full checkpoints need no network and no CLIP cache. ``overrides`` change build
    arguments (e.g. ``prompt_dropout``, or ``decoder_heads`` of an authors' file, which
    does not store it); one that does not fit the stored weights raises CheckpointError.
    """
    contents = read_checkpoint(path, map_location=map_location, decoder_heads=overrides.get("decoder_heads", 8))
    return build_from_checkpoint(contents, str(path), overrides)
