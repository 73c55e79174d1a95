"""Reading checkpoints: our own files, training checkpoints, and the authors' released ``.pth``."""

from __future__ import annotations

import inspect
import os
import pickle
import re
from dataclasses import dataclass
from typing import Any

import torch

from zegclip.model.clip_encoder import resolve_quick_gelu
from zegclip.model.zegclip import CHECKPOINT_FORMAT, ZegCLIP, build_zegclip


class CheckpointError(ValueError):
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


@dataclass
class CheckpointContents:
    """What a checkpoint of any supported format holds, in this package's key names.

    Attributes:
        config: ``build_zegclip`` keyword arguments.
        state: weights under :class:`ZegCLIP` state-dict names.
        full: whether ``state`` holds every weight (CLIP included), so no CLIP source is needed.
        metadata: provenance and facts stored with the weights.
        kind: ``zegclip`` (``ZegCLIP.save``), ``lightning`` (a training ``.ckpt``) or ``official``.
    """

    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    full: bool
    metadata: dict[str, Any]
    kind: str


def _ours(payload: dict[str, Any], path: str | os.PathLike) -> CheckpointContents:
    """A file written by ``ZegCLIP.save`` or a ``ZegCLIPModule`` training checkpoint."""
    if payload.get("format") == CHECKPOINT_FORMAT:
        config, state, kind = dict(payload["config"]), payload["state_dict"], "zegclip"
        metadata = dict(payload.get("metadata", {}))
    elif "model" in payload.get("hyper_parameters", {}) and isinstance(payload.get("state_dict"), dict):
        config, kind, metadata = dict(payload["hyper_parameters"]["model"]), "lightning", {}
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
    """Read any supported checkpoint without building a model (``weights_only`` loading)."""
    payload = torch_load(path, map_location)
    if _is_official(payload):
        return _official(payload, path, decoder_heads)
    return _ours(payload, path)


def _is_official(payload: dict[str, Any]) -> bool:
    state = payload.get("state_dict", {})
    return isinstance(state, dict) and any(k.startswith("backbone.") for k in state)


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.match(k))})


def official_config(state: dict[str, torch.Tensor], *, decoder_heads: int = 8) -> dict[str, Any]:
    """``build_zegclip`` kwargs inferred from the shapes of an authors' state dict."""
    conv = state["backbone.conv1.weight"]  # W x 3 x p x p
    width, patch = conv.shape[0], conv.shape[-1]
    grid = int(round((state["backbone.positional_embedding"].shape[0] - 1) ** 0.5))
    vision_layers = _count(state, r"backbone\.transformer\.resblocks\.(\d+)\.")
    text_width = state["text_encoder.token_embedding.weight"].shape[1]
    prompts = state["backbone.prompt_embeddings"]  # 1 x N x W
    clip_config = {
        "embed_dim": state["backbone.proj"].shape[1],
        "quick_gelu": True,  # the released towers always use QuickGELU
        "vision_cfg": {
            "image_size": grid * patch,
            "layers": vision_layers,
            "width": width,
            "patch_size": patch,
            "head_width": 64,
            "mlp_ratio": state["backbone.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
        },
        "text_cfg": {
            "context_length": state["text_encoder.positional_embedding"].shape[0],
            "vocab_size": state["text_encoder.token_embedding.weight"].shape[0],
            "width": text_width,
            "heads": max(1, text_width // 64),  # CLIP text heads are 64 wide
            "layers": _count(state, r"text_encoder\.transformer\.resblocks\.(\d+)\."),
        },
    }
    return {
        "clip_model": "ViT-B-16-quickgelu" if (width, patch, vision_layers) == (768, 16, 12) else "custom",
        "pretrained": None,
        "num_prompts": prompts.shape[1],
        "image_size": grid * patch,
        "decoder_layers": _count(state, r"decode_head\.decoder_1\.layers\.(\d+)\."),
        "decoder_heads": decoder_heads,
        "decoder_ffn_dim": state["decode_head.decoder_1.layers.0.linear1.weight"].shape[0],
        "quick_gelu": True,
        "clip_config": clip_config,
    }


def unused_official_keys(num_layers: int) -> dict[str, str]:
    """Patterns of released keys this model does not hold, each with the reason."""
    last = num_layers - 1
    return {
        r"decode_head\.decoder_1\.layers\.\d+\.self_attn\.": (
            "the decoder layers never run self-attention among the class queries"
        ),
        r"decode_head\.decoder_1\.layers\.\d+\.norm1\.": "norm of the never-run self-attention",
        rf"decode_head\.decoder_1\.layers\.{last}\.(multihead_attn\.(v|proj)|linear1|linear2|norm2|norm3)\.": (
            "only the last layer's attention scores reach the prediction"
        ),
        r"decode_head\.loss_decode\.": "a buffer of the training loss, not of the model",
    }


def _official_rename(key: str, num_layers: int) -> str:
    """Authors' key -> our key (raises KeyError for a key we do not know)."""
    rules = [
        (r"backbone\.prompt_(embeddings|proj\.)", r"image_encoder.prompts.prompt_\1"),
        (r"backbone\.deep_prompt_embeddings", "image_encoder.prompts.deep_prompt_embeddings"),
        (r"backbone\.prompt_norm\.", "image_encoder.prompt_norm."),
        (
            r"backbone\.(class_embedding|positional_embedding|proj$|conv1\.|ln_pre\.|ln_post\.|transformer\.)",
            r"image_encoder.visual.\1",
        ),
        (r"text_encoder\.", "text_encoder.clip."),
        (r"decode_head\.q_proj\.", "relationship.proj."),
        (
            rf"decode_head\.decoder_1\.layers\.{num_layers - 1}\.multihead_attn\.(q|k)\.",
            r"decoder.last.\1.",
        ),
        (
            r"decode_head\.decoder_1\.layers\.(\d+)\.multihead_attn\.(q|k)\.",
            r"decoder.layers.\1.cross_attn.scores.\2.",
        ),
        (
            r"decode_head\.decoder_1\.layers\.(\d+)\.multihead_attn\.(v|proj)\.",
            r"decoder.layers.\1.cross_attn.\2.",
        ),
        (r"decode_head\.decoder_1\.layers\.(\d+)\.linear1\.", r"decoder.layers.\1.ffn.0."),
        (r"decode_head\.decoder_1\.layers\.(\d+)\.linear2\.", r"decoder.layers.\1.ffn.3."),
        (r"decode_head\.decoder_1\.layers\.(\d+)\.norm2\.", r"decoder.layers.\1.norm1."),
        (r"decode_head\.decoder_1\.layers\.(\d+)\.norm3\.", r"decoder.layers.\1.norm2."),
    ]
    for pattern, repl in rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key, count=1)
    raise KeyError(key)


NOT_IN_OFFICIAL: dict[str, str] = {
    "text_encoder.clip.logit_scale": "CLIP's contrastive temperature; segmentation never uses it",
}
"""Our keys that a released checkpoint does not carry, with the reason."""


def convert_official_state_dict(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Rename released keys to ours, dropping the known-unused ones (unknown keys: error)."""
    unused = [re.compile(p) for p in unused_official_keys(num_layers)]
    converted, unknown = {}, []
    for key, value in state.items():
        if any(p.match(key) for p in unused):
            continue
        try:
            converted[_official_rename(key, num_layers)] = value
        except KeyError:
            unknown.append(key)
    if unknown:
        raise KeyError(f"unexpected keys in the released checkpoint: {unknown}")
    return converted


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
    config = {**contents.config, **overrides}
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
    if not _is_official(payload):
        raise CheckpointError(f"{path}: not an authors' ZegCLIP checkpoint (no 'state_dict' with 'backbone.' keys)")
    return build_from_checkpoint(_official(payload, path, decoder_heads), str(path))


def load_model(path: str | os.PathLike, *, map_location: str | torch.device = "cpu", **overrides: Any) -> ZegCLIP:
    """Any checkpoint: ours (``ZegCLIP.save``), a training ``.ckpt`` or the authors' ``.pth``.

    Full checkpoints need no network and no CLIP cache. ``overrides`` change build
    arguments (e.g. ``prompt_dropout``, or ``decoder_heads`` of an authors' file, which
    does not store it); one that does not fit the stored weights raises CheckpointError.
    """
    contents = read_checkpoint(path, map_location=map_location, decoder_heads=overrides.get("decoder_heads", 8))
    return build_from_checkpoint(contents, str(path), overrides)
