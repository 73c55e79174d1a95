"""Model folders people can pass around: ``model.safetensors`` + ``config.json`` + a model card.

The folder (or a Hugging Face Hub repository holding it, named ``hf-hub:org/name``) is
this package's shareable format: the weights are safetensors (no pickle, so loading runs
no code), ``config.json`` holds every ``build_zegclip`` argument (the CLIP activation
included) and what the model was trained on, and ``README.md`` is the model card.
Writing lives here; :func:`zegclip.load_model` reads folders and hub names.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Protocol

import torch

from zegclip.atomic import atomic_write
from zegclip.errors import ZegCLIPError


class ZegCLIP(Protocol):
    """What this module needs of a `zegclip.model.zegclip.ZegCLIP` (named here, not imported:
    that module imports this one)."""

    metadata: dict[str, Any]
    config: dict[str, Any]

    def state_dict(self) -> Mapping[str, torch.Tensor]: ...


WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
FORMAT = "zegclip-pretrained"
FORMAT_VERSION = 1
"""Bumped when the folder's meaning changes; a folder from a newer version is refused."""
HUB_PREFIX = "hf-hub:"


def _json_ready(value: Any) -> Any:
    """Metadata as JSON: tensors become lists, paths strings; anything else unrepresentable is dropped."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in ((k, _json_ready(v)) for k, v in value.items()) if v is not _DROP}
    if isinstance(value, list | tuple):
        return [v for v in map(_json_ready, value) if v is not _DROP]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return _DROP


_DROP = object()


class HubError(ZegCLIPError, ConnectionError):
    """The Hugging Face Hub could not be reached or refused the upload; the message says which."""


def _local_path(value: str) -> Path | None:
    """``value`` as a path on this machine, when it is one (absolute, or an existing relative path)."""
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).drive:
        return Path(value)
    if ("/" in value or os.sep in value) and not value.startswith(HUB_PREFIX) and os.path.exists(value):
        return Path(os.path.abspath(value))
    return None


def _portable(value: Any, run: Path) -> Any:
    """``info`` with no path of this machine in it: paths inside ``run`` become relative to it,
    any other local path its file name (``/home/me/outputs/x/checkpoints/best.ckpt`` ->
    ``checkpoints/best.ckpt``)."""
    if isinstance(value, Mapping):
        return {k: _portable(v, run) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v, run) for v in value]
    if isinstance(value, str):
        path = _local_path(value)
        if path is not None:
            try:
                return Path(os.path.abspath(path)).relative_to(run).as_posix()
            except ValueError:
                return path.name
    return value


_EVAL_COLUMNS = (
    ("pAcc", "pAcc"),
    ("mIoU", "mIoU"),
    ("mIoU_seen", "mIoU seen"),
    ("mIoU_unseen", "mIoU unseen"),
    ("hIoU", "hIoU"),
)
"""The evaluation metrics of the card (``<split>/<key>`` in ``info["metrics"]``) and their headers."""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _metrics_section(info: Mapping[str, Any]) -> list[str]:
    """The card's evaluation table (dataset, split, step, pAcc, mIoU, seen, unseen, hIoU) and the losses apart."""
    metrics = {str(k): _number(v) for k, v in (info.get("metrics") or {}).items()}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    step = info.get("step")
    step_text = str(step) if isinstance(step, int) else "?"
    lines: list[str] = []
    rows = []
    for split in ("val", "test"):
        values = [metrics.get(f"{split}/{key}") for key, _ in _EVAL_COLUMNS]
        if any(v is not None for v in values):
            cells = ["-" if v is None else "n/a" if not math.isfinite(v) else f"{v:.2f}" for v in values]
            rows.append(f"| {info.get('dataset') or '?'} | {split} | {step_text} | " + " | ".join(cells) + " |")
    if rows:
        header = "| dataset | split | step | " + " | ".join(name for _, name in _EVAL_COLUMNS) + " |"
        lines += ["", "## Evaluation", "", header, "|---" * (3 + len(_EVAL_COLUMNS)) + "|", *rows]
        lines += ["", "Percent. mIoU seen / unseen: over the classes trained on / held out; hIoU: their harmonic mean."]
    losses = {k.split("/")[-1]: v for k, v in sorted(metrics.items()) if "loss" in k.split("/")[-1]}
    if losses:
        shown = ", ".join(f"{name} {value:.4g}" for name, value in losses.items())
        lines += ["", f"Training losses at step {step_text}: {shown}."]
    return lines


def model_card(config: Mapping[str, Any], info: Mapping[str, Any], repo_id: str | None = None) -> str:
    """The folder's ``README.md``: what the model is, where CLIP came from, what it learned, how to load it.

    ``repo_id``: the hub repository the folder goes to (its usage lines name it); None: a local folder.
    """
    clip = config.get("clip_model", "?")
    source = config.get("pretrained") or "random or unrecorded weights"
    activation = "QuickGELU" if config.get("quick_gelu") else "GELU"
    classes = list(info.get("class_names", []))
    unseen = set(info.get("unseen", []))
    lines = [
        "---",
        "library_name: zegclip",
        "tags: [zero-shot-segmentation, semantic-segmentation, clip, zegclip]",
        "---",
        "",
        f"# ZegCLIP{' on ' + info['dataset'] if info.get('dataset') else ''}",
        "",
        "ZegCLIP (Zhou et al., CVPR 2023): a frozen CLIP ViT with deep visual prompts, a relationship "
        "descriptor and an attention-mask decoder; it segments classes given by name, including classes "
        "never labelled in training. Weights in `model.safetensors`, architecture in `config.json`.",
        "",
        f"- CLIP: `{clip}` from `{source}` ({activation}), {config.get('num_prompts', '?')} prompt tokens per layer, "
        f"trained at {config.get('image_size', '?')} px",
    ]
    if info.get("dataset"):
        lines.append(f"- Trained on: `{info['dataset']}`, {info.get('setting', '?')} setting")
    if classes:
        seen = [c for c in classes if c not in unseen]
        lines.append(f"- Seen classes ({len(seen)}): {', '.join(seen)}")
        if unseen:
            lines.append(f"- Unseen classes ({len(unseen)}): {', '.join(c for c in classes if c in unseen)}")
    lines += _metrics_section(info)
    name = f"{HUB_PREFIX}{repo_id}" if repo_id else "path/to/this/folder"
    where = "" if repo_id else "  # the folder holding this README, or its hf-hub: name once uploaded"
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import zegclip",
        "",
        f'model = zegclip.load_model("{name}"){where}',
        'result = zegclip.segment(model, "photo.jpg", "cat; grass, lawn; sky")',
        "```",
        "",
        f'or `zegclip predict photos/ --checkpoint {name} --classes "cat; sky" --output out/`.',
        "",
    ]
    return "\n".join(lines)


def write_pretrained(
    model: ZegCLIP, folder: str | os.PathLike, info: Mapping[str, Any] | None = None, repo_id: str | None = None
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` into ``folder``.

    ``info`` describes the training (``dataset``, ``setting``, ``class_names``, ``unseen``,
    ``step``, ``metrics``); it defaults to ``model.metadata`` and is stored in ``config.json``
    too. Paths of this machine in it (the checkpoint it came from) are made relative to the
    folder's parent, the training run, or cut to their file name. ``repo_id`` names the hub
    repository in the card's usage lines. Every file gets the permissions of a file the user
    creates (safetensors alone would write ``model.safetensors`` readable by its owner only).
    Files are written to temporary names and renamed, so a folder is never half-written.
    """
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    run = Path(os.path.abspath(folder)).parent
    info = _portable(_json_ready({**model.metadata, **(info or {})}), run)
    model_config = _portable(_json_ready(model.config), run)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model_config, "info": info}
    state = {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}
    files = {
        CONFIG_NAME: (json.dumps(config, indent=2) + "\n").encode(),
        CARD_NAME: model_card(config["config"], info, repo_id).encode(),
        WEIGHTS_NAME: save(state, metadata={"format": FORMAT}),
    }
    for name, data in files.items():  # opened as any file the user writes: the umask's permissions
        with atomic_write(folder / name, durable=False) as f:
            f.write(data)
    return folder


def push_to_hub(
    model: ZegCLIP,
    repo_id: str,
    info: Mapping[str, Any] | None = None,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload ZegCLIP model",
    endpoint: str | None = None,
) -> str:
    """Create (or reuse) the hub repository ``repo_id`` and upload the folder; returns its URL.

    ``endpoint``: another hub than huggingface.co (default: ``HF_ENDPOINT`` or huggingface.co).

    Raises:
        HubError: the hub cannot be reached (offline, no network, a wrong endpoint) or refuses
            the upload (no token, no rights); one line saying which.
    """
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            write_pretrained(model, tmp, info, repo_id=repo_id)
            api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
    except Exception as err:
        if not _from_the_network(err):
            raise
        reason = " ".join(str(err).split()) or type(err).__name__
        raise HubError(f"cannot upload to the Hugging Face Hub ({api.endpoint}) as {repo_id}: {reason}") from err
    return f"{api.endpoint.rstrip('/')}/{repo_id}"


_NETWORK_PACKAGES = ("huggingface_hub", "httpx", "httpx2", "httpcore", "requests", "urllib3")
"""Packages whose exceptions mean the hub was unreachable or refused: a user's situation, not a bug."""


def _from_the_network(err: BaseException) -> bool:
    return isinstance(err, OSError) or type(err).__module__.split(".")[0] in _NETWORK_PACKAGES


def is_pretrained_source(path: str | os.PathLike) -> bool:
    """A folder, or an ``hf-hub:`` name."""
    return str(path).startswith(HUB_PREFIX) or os.path.isdir(path)


def resolve_folder(source: str | os.PathLike, cache_dir: str | None = None) -> Path:
    """The local folder of a folder path or an ``hf-hub:org/name[@revision]`` name.

    Hub names go through huggingface_hub's own download and cache (``HF_HUB_OFFLINE=1``:
    the cached copy only). Raises FileNotFoundError with the reason.
    """
    text = str(source)
    if not text.startswith(HUB_PREFIX):
        return Path(text)
    from huggingface_hub import snapshot_download

    repo_id, _, revision = text[len(HUB_PREFIX) :].partition("@")
    try:
        files = [WEIGHTS_NAME, CONFIG_NAME, CARD_NAME]
        folder = snapshot_download(repo_id, revision=revision or None, cache_dir=cache_dir, allow_patterns=files)
    except Exception as err:  # offline without a cached copy, unknown repo, no network
        raise FileNotFoundError(f"cannot get {text} from the Hugging Face Hub or its cache: {err}") from err
    return Path(folder)


def read_pretrained(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(build config, state dict, info) of a folder; ValueError naming what is wrong with it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file():
        raise ValueError(f"{folder}: not a zegclip model folder (no {CONFIG_NAME})")
    try:
        payload = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from err
    if not isinstance(payload, dict):
        payload = {}
    if payload.get("format") != FORMAT:
        kind = payload.get("model_type") or payload.get("architecture")
        raise ValueError(
            f"{config_path}: not a zegclip model folder (format {payload.get('format')!r}"
            f"{f', a {kind} model' if kind else ''}); zegclip writes format {FORMAT!r} with model.save_pretrained"
        )
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{config_path}: key 'format_version' must be a whole number (1), got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{config_path}: format version {version!r}, but this zegclip reads up to {FORMAT_VERSION}; "
            "upgrade zegclip to load it"
        )
    for key, required in (("config", True), ("info", False)):
        value = payload.get(key)
        if (required or value is not None) and not isinstance(value, dict):
            what = "missing" if key not in payload else f"a {type(value).__name__}, not an object"
            raise ValueError(
                f"{config_path}: key {key!r} is {what}; expected an object of "
                + ("build_zegclip arguments" if key == "config" else "training facts (dataset, classes, metrics)")
            )
    if not weights_path.is_file():
        raise ValueError(f"{folder}: {WEIGHTS_NAME} is missing")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:  # a pickle or anything else is not parsed, never run
        raise ValueError(f"{weights_path}: not a readable safetensors file ({err})") from err
    return dict(payload["config"]), state, dict(payload.get("info") or {})
