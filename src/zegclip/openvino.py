"""CPU inference with OpenVINO: ``compile_model(model)`` runs the image side of a ZegCLIP.

The image encoder and the decoder run in OpenVINO (the encoder in bf16 where the CPU has it,
else fp32; the decoder in fp32, as the PyTorch path keeps it). The text embeddings stay in
PyTorch (computed once per vocabulary), and the sliding windows, seen-class calibration and
class chunks are the PyTorch path's own (`zegclip.model.inference.Predictor`), so ``predict``
and ``predict_labels`` take the same arguments and give the same outputs as `ZegCLIP`'s::

    import zegclip, zegclip.openvino

    model = zegclip.load_model("ZegCLIP_voc.pth")
    fast = zegclip.openvino.compile_model(model)          # precision "auto": bf16 where the CPU has it
    scores = fast.predict(images, model.encode_text(names), mode="slide")
    result = zegclip.segment(fast, "street.jpg", "cat; sky")

The PyTorch modules are converted once (``openvino.convert_model``, about a minute for
ViT-B/16 on 2 cores) into OpenVINO's IR, kept in a cache folder named by a hash of the
weights (``$XDG_CACHE_HOME/zegclip/openvino``, else ``~/.cache/zegclip/openvino``): later
processes with the same weights read it back in seconds. The encoder graph takes the
positional embedding as an input, so one graph serves every image size. Needs the
``openvino`` extra (``pip install "zegclip[openvino]"``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zegclip.errors import ZegCLIPError
from zegclip.model import ZegCLIP
from zegclip.model.cached import unchanged_key
from zegclip.model.inference import Predictor

PRECISIONS = ("auto", "bf16", "fp32")
"""``compile_model``'s precisions: ``auto`` is bf16 where the CPU has it (`cpu_precisions`), else fp32."""
GRAPH_VERSION = 1
"""Part of the cache key: raised whenever the converted graphs change, so older IR is not reused."""
_OV_TYPES = {"bf16": "bf16", "fp32": "f32"}


BACKENDS = ("torch", "openvino")
"""The inference backends of ``zegclip predict|demo|suite --backend`` and ``zegclip eval backend=``."""


class OpenVINOError(ZegCLIPError, RuntimeError):
    """The OpenVINO backend cannot run: the extra is missing, or a setting does not fit this CPU or model."""


def check_backend(backend: str, setting: str = "--backend") -> None:
    """Raise an `OpenVINOError` naming ``setting`` unless ``backend`` is one of `BACKENDS`."""
    if backend not in BACKENDS:
        raise OpenVINOError(f"{setting} must be one of {', '.join(BACKENDS)}, got {backend!r}")


def command_precision(precision: str | None, device: str | torch.device = "cpu", setting: str = "--precision") -> str:
    """What a command's precision option means with ``--backend openvino``: None (not given) is ``auto``.

    Raises:
        OpenVINOError: fp16 (OpenVINO runs fp32 or bf16 on CPUs), or a device other than the CPU.
    """
    if torch.device(device).type != "cpu":
        raise OpenVINOError(f"the OpenVINO backend runs on the CPU only, not on {device}")
    if precision is not None and precision not in PRECISIONS:
        raise OpenVINOError(f"{setting} {precision} is not one OpenVINO runs on CPUs: {', '.join(PRECISIONS)}")
    return precision or "auto"


@functools.cache
def _openvino() -> Any:
    """``import openvino``, or an `OpenVINOError` naming the extra to install."""
    try:
        import openvino
    except ImportError as err:
        raise OpenVINOError(
            'the OpenVINO backend needs the openvino extra: pip install "zegclip[openvino]" '
            f"(importing openvino failed: {err})"
        ) from err
    return openvino


@functools.cache
def _core() -> Any:
    return _openvino().Core()


def cpu_precisions() -> list[str]:
    """The precisions OpenVINO runs natively on this CPU: fp32, and bf16 with AVX-512 BF16 or AMX."""
    capabilities = _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return ["fp32", "bf16"] if "BF16" in capabilities else ["fp32"]


def resolve_precision(precision: str) -> str:
    """``auto`` -> bf16 where the CPU has it, else fp32; bf16 on a CPU without it is an `OpenVINOError`."""
    if precision not in PRECISIONS:
        raise OpenVINOError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    available = cpu_precisions()
    if precision == "auto":
        return available[-1]
    if precision not in available:
        raise OpenVINOError(
            f"this CPU has no bf16 instructions OpenVINO can use (AVX-512 BF16 or AMX); use precision "
            f"fp32 or auto (available: {', '.join(available)})"
        )
    return precision


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/zegclip/openvino``, else ``~/.cache/zegclip/openvino``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "zegclip" / "openvino"


def _image_side(model: ZegCLIP) -> dict[str, nn.Module]:
    """The modules the converted graphs hold."""
    return {"image_encoder": model.image_encoder, "relationship": model.relationship, "decoder": model.decoder}


def weights_key(model: ZegCLIP) -> str:
    """The cache key of ``model``'s converted graphs: a hash of the image side's weights, the
    model's config and the converter's versions (about 0.3 s for ViT-B/16)."""
    digest = hashlib.sha256()
    versions = {"graph": GRAPH_VERSION, "openvino": openvino_version(), "torch": torch.__version__}
    digest.update(json.dumps([versions, model.config], sort_keys=True, default=str).encode())
    for prefix, module in _image_side(model).items():
        for name, tensor in module.state_dict().items():
            digest.update(f"{prefix}.{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:32]


class _EncoderGraph(nn.Module):
    """Images B x 3 x H x W and positions (1 + h*w) x W -> (global B x D, patches B x D x h x w)."""

    def __init__(self, model: ZegCLIP) -> None:
        super().__init__()
        self.encoder = model.image_encoder

    def forward(self, images: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder._forward(images, positions)  # eager, never a torch.compile'd graph


class _DecoderGraph(nn.Module):
    """(global B x D, patches B x D x h x w, class embeddings C x D) -> mask logits B x C x h x w.

    Holds only the two modules `ZegCLIP.decode` uses, so tracing does not walk the text tower.
    """

    def __init__(self, model: ZegCLIP) -> None:
        super().__init__()
        self.relationship = model.relationship
        self.decoder = model.decoder

    def forward(self, global_embed: torch.Tensor, patches: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
        return ZegCLIP.decode(self, global_embed, patches, class_embeds).logits  # the model's own decode


def _convert(module: nn.Module, example: tuple[torch.Tensor, ...]) -> Any:
    """One module as an OpenVINO model, every input dimension dynamic.

    Through OpenVINO's PyTorch frontend (TorchScript tracing) rather than
    ``openvino.convert_model``, which adds nothing here but a trace check, a few seconds, and
    usage analytics sent from the machine.
    """
    from openvino.frontend import FrontEndManager
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    decoder = TorchScriptPythonDecoder(module, example_input=example, trace_kwargs={"check_trace": False})
    frontend = FrontEndManager().load_by_framework("pytorch")
    return frontend.convert(frontend.load(decoder))


def trace(model: ZegCLIP) -> dict[str, Any]:
    """``model``'s image side as OpenVINO models: ``encoder`` and ``decoder`` (fp32 weights)."""
    encoder = model.image_encoder
    patch = model.patch_size
    # small example inputs: tracing follows the shapes symbolically, so any size works later
    images = torch.zeros(1, 3, 2 * patch, 3 * patch)
    positions = encoder.positions((2, 3))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # Python ints from shapes (checks only)
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's deprecation
            global_embed, patches = encoder._forward(images, positions)
            class_embeds = torch.zeros(2, global_embed.shape[-1])
            return {
                "encoder": _convert(_EncoderGraph(model), (images, positions)),
                "decoder": _convert(_DecoderGraph(model), (global_embed, patches, class_embeds)),
            }
    finally:
        model.train(was_training)


def convert(model: ZegCLIP, folder: str | os.PathLike) -> Path:
    """Write ``model``'s image side as OpenVINO IR in ``folder``: ``encoder.xml``, ``decoder.xml``
    and their ``.bin`` weights (fp32). Written to a temporary folder, then renamed."""
    ov = _openvino()
    folder = Path(folder)
    graphs = trace(model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, graph in graphs.items():
            ov.save_model(graph, tmp / f"{name}.xml", compress_to_fp16=False)  # fp32 weights, as trained
        try:
            os.replace(tmp, folder)
        except OSError:  # another process wrote the same weights' graphs first: keep theirs
            if not (folder / "decoder.xml").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


class OpenVINOZegCLIP(Predictor):
    """A ZegCLIP whose image side runs in OpenVINO; made by `compile_model`.

    ``predict`` and ``predict_labels`` are `ZegCLIP`'s (same arguments, same outputs);
    ``encode_text`` and ``preprocess`` are the PyTorch model's, so `zegclip.segment` and
    `zegclip.segmentation.segment_batch` take it in place of the model. CPU only.

    Attributes:
        model: the PyTorch ZegCLIP (text encoder, preprocessing, positional embedding).
        precision: what the encoder runs in, ``bf16`` or ``fp32`` (read back from OpenVINO).
        folder: the IR's cache folder (None when converted in memory only).
        convert_s: seconds the conversion took in this process (None: read from the cache).
    """

    def __init__(
        self, model: ZegCLIP, encoder: Any, decoder: Any, folder: Path | None, convert_s: float | None
    ) -> None:
        self.model = model
        self.folder = folder
        self.convert_s = convert_s
        self._encoder = encoder.create_infer_request()
        self._decoder = decoder.create_infer_request()
        hint = str(encoder.get_property("INFERENCE_PRECISION_HINT"))
        self.precision = "bf16" if "bf16" in hint else "fp32"
        self._positions: dict[tuple[int, int], np.ndarray] = {}

    # --- the PyTorch model's, so this stands in for it ---------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return self.model.config

    @property
    def patch_size(self) -> int:
        return self.model.patch_size

    @property
    def pixel_mean(self) -> torch.Tensor:
        return self.model.pixel_mean

    def encode_text(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """`ZegCLIP.encode_text` (PyTorch)."""
        return self.model.encode_text(*args, **kwargs)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """`ZegCLIP.preprocess`."""
        return self.model.preprocess(images)

    def to(self, device: str | torch.device) -> OpenVINOZegCLIP:
        """Only the CPU: anything else is an `OpenVINOError`."""
        if torch.device(device).type != "cpu":
            raise OpenVINOError(f"the OpenVINO backend runs on the CPU only, not on {device}")
        return self

    def eval(self) -> OpenVINOZegCLIP:
        return self

    def describe(self) -> str:
        """One line for logs: OpenVINO version, precision, where the graphs came from."""
        made = "read from the cache" if self.convert_s is None else f"converted in {self.convert_s:.1f} s"
        where = "in memory only" if self.folder is None else f"IR in {self.folder}"
        return f"OpenVINO {openvino_version()}, {self.precision}, {made} ({where})"

    # --- the network --------------------------------------------------------------------
    def _positions_for(self, grid: tuple[int, int]) -> np.ndarray:
        if grid not in self._positions:
            with torch.no_grad():
                self._positions[grid] = self.model.image_encoder.positions(grid).float().numpy()
        return self._positions[grid]

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images B x 3 x H x W -> (global B x D, patches B x D x h x w), fp32."""
        x = images.detach().to("cpu", torch.float32).contiguous()
        positions = self._positions_for((x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size))
        # one image per call: OpenVINO's buffers then hold one image's activations (0.1 GB less
        # for two 512 x 512 windows of ViT-B/16), and on CPU a batch runs no faster
        outs = [self._encoder.infer([x[i : i + 1].numpy(), positions], share_inputs=True) for i in range(len(x))]
        global_embed, patches = (torch.from_numpy(np.concatenate([out[k] for out in outs])) for k in (0, 1))
        return global_embed.to(images.device), patches.to(images.device)

    def decode_logits(self, encoded: tuple[torch.Tensor, torch.Tensor], class_embeddings: torch.Tensor) -> torch.Tensor:
        """Encoder outputs and class embeddings C x D -> mask logits B x C x h x w (fp32)."""
        global_embed, patches = (t.detach().to("cpu", torch.float32).contiguous() for t in encoded)
        embeds = class_embeddings.detach().to("cpu", torch.float32).contiguous()
        out = self._decoder.infer([global_embed.numpy(), patches.numpy(), embeds.numpy()], share_inputs=True)
        return torch.from_numpy(out[0]).to(encoded[1].device)

    @torch.no_grad()
    def predict(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """`ZegCLIP.predict`, the network in OpenVINO (scores in fp32 whatever autocast is active)."""
        with torch.autocast("cpu", enabled=False):
            return super().predict(*args, **kwargs)

    @torch.no_grad()
    def predict_labels(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """`ZegCLIP.predict_labels`, the network in OpenVINO."""
        with torch.autocast("cpu", enabled=False):
            return super().predict_labels(*args, **kwargs)


_COMPILED: weakref.WeakKeyDictionary[ZegCLIP, dict[tuple, tuple[tuple, OpenVINOZegCLIP]]] = weakref.WeakKeyDictionary()
"""Per PyTorch model and (precision, threads, cache_dir): the compiled model and the weights it
was made from (their storage and version counters); a call with the same weights reuses it."""


def forget_compiled(model: ZegCLIP) -> None:
    """Drop this process's compiled models of ``model``: the next `compile_model` starts from the IR cache."""
    _COMPILED.pop(model, None)


def openvino_version() -> str:
    """The installed OpenVINO's version (an `OpenVINOError` naming the extra when it is missing)."""
    return _openvino().__version__


def _release_torch_weights(model: ZegCLIP) -> None:
    """Move the modules OpenVINO holds to the ``meta`` device: their memory is freed (see `compile_model`)."""
    encoder = model.image_encoder
    for module in (
        encoder.visual.conv1,
        encoder.visual.transformer,
        encoder.prompts,
        model.relationship,
        model.decoder,
    ):
        module.to("meta")


def _check_model(model: ZegCLIP) -> None:
    if not isinstance(model, ZegCLIP):
        raise TypeError(f"compile_model takes a ZegCLIP, got {type(model).__name__}")
    if model.image_encoder.matmul_dtype != torch.float32:
        raise OpenVINOError(
            "compile_model needs the fp32 weights, but the frozen CLIP weights are stored in "
            f"{model.image_encoder.matmul_dtype} (cast_frozen_matmuls); compile before casting them"
        )
    devices = {p.device.type for module in _image_side(model).values() for p in module.parameters()}
    if "meta" in devices:
        raise OpenVINOError(
            "the model's PyTorch weights were released by compile_model(release_torch_weights=True); "
            "load the model again to compile it again"
        )
    if devices != {"cpu"}:
        raise OpenVINOError(f"compile_model needs the model on the CPU, it is on {', '.join(sorted(devices))}")


_MADV_DONTNEED = 4  # Linux


def _drop_mapped_pages(folder: Path) -> int:
    """Hand back the resident pages of the IR files OpenVINO keeps mapped after compiling; returns
    how many mappings were dropped (0 off Linux).

    OpenVINO maps each ``.bin`` and keeps the mapping, although compiling copied most weights
    into its own layouts (for ViT-B/16 in fp32 it reads about a third of the file again while
    inferring): without this the process holds 0.35 GB of file pages it never reads. Only
    read-only mappings are dropped (``madvise(MADV_DONTNEED)``): nothing can have been written
    to them, and a page read later is read again from the file (or the page cache).
    """
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except (OSError, AttributeError):
        return 0
    dropped, prefix = 0, str(folder.resolve()) + os.sep
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith(prefix) or not fields[1].startswith("r-"):
            continue  # another file, or a mapping that may be written
        start, end = (int(address, 16) for address in fields[0].split("-"))
        dropped += madvise(start, end - start, _MADV_DONTNEED) == 0
    return dropped


def _read_or_convert(
    model: ZegCLIP, cache_dir: str | os.PathLike | bool | None
) -> tuple[Path | None, dict, float | None]:
    """(IR folder or None, each graph for ``Core.compile_model``, seconds converting or None when cached)."""
    if cache_dir is False:
        start = time.perf_counter()
        return None, trace(model), time.perf_counter() - start
    root = default_cache_dir() if cache_dir is None or cache_dir is True else Path(cache_dir)
    folder = root / weights_key(model)
    graphs = {name: folder / f"{name}.xml" for name in ("encoder", "decoder")}
    if all(path.is_file() for path in graphs.values()):
        return folder, graphs, None
    start = time.perf_counter()
    try:
        convert(model, folder)
    except OSError as err:
        raise OpenVINOError(f"cannot write the OpenVINO cache folder {root}: {err.strerror or err}") from err
    return folder, graphs, time.perf_counter() - start


def compile_model(
    model: ZegCLIP,
    precision: str = "auto",
    *,
    cache_dir: str | os.PathLike | bool | None = None,
    threads: int | None = None,
    release_torch_weights: bool = False,
) -> OpenVINOZegCLIP:
    """Run ``model``'s image side in OpenVINO on the CPU; returns an `OpenVINOZegCLIP`.

    Args:
        model: a ZegCLIP on the CPU with its fp32 weights (before ``cast_frozen_matmuls``).
        precision: ``auto`` (bf16 where the CPU has AVX-512 BF16 or AMX, else fp32), ``bf16``
            or ``fp32``; the result's ``precision`` says what runs. The decoder always runs
            in fp32.
        cache_dir: where the converted graphs are kept, in a folder named by a hash of the
            weights (None: `default_cache_dir`); False converts in memory every time.
        threads: CPU threads for OpenVINO (None: its default, every core).
        release_torch_weights: free ``model``'s PyTorch copies of what OpenVINO holds (the
            encoder's patch embedding and blocks, the prompts, the descriptor and decoder:
            0.35 GB for ViT-B/16) before compiling, for a process that segments only through
            the result (``zegclip predict``). ``model`` keeps its text encoder and
            preprocessing, which the result uses, but can no longer segment by itself (those
            modules move to the ``meta`` device) nor be compiled again.

    Raises:
        OpenVINOError: openvino is not installed, bf16 asked of a CPU without it, the model is
            not on the CPU or its weights are not fp32, or the cache folder cannot be written.
    """
    _openvino()
    _check_model(model)
    precision = resolve_precision(precision)
    weights = tuple(unchanged_key(p) for m in _image_side(model).values() for p in m.parameters())
    key = (precision, threads, str(cache_dir))
    compiled = _COMPILED.setdefault(model, {})
    if release_torch_weights and cache_dir is False:
        raise OpenVINOError("release_torch_weights needs the cache folder: graphs kept in memory share the weights")
    if key in compiled and compiled[key][0] == weights:
        if release_torch_weights:
            _release_torch_weights(model)
        return compiled[key][1]
    folder, sources, convert_s = _read_or_convert(model, cache_dir)
    if release_torch_weights:  # OpenVINO reads the IR files: freed before compiling, so the peak is lower
        _release_torch_weights(model)
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    core = _core()
    encoder = core.compile_model(
        sources["encoder"], "CPU", {**config, "INFERENCE_PRECISION_HINT": _OV_TYPES[precision]}
    )
    decoder = core.compile_model(sources["decoder"], "CPU", {**config, "INFERENCE_PRECISION_HINT": "f32"})
    if folder is not None:
        _drop_mapped_pages(folder)
    result = OpenVINOZegCLIP(model, encoder, decoder, folder, convert_s)
    compiled[key] = (weights, result)
    return result
