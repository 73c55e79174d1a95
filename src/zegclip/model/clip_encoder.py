"""Loading open_clip towers, and the frozen CLIP ViT run block by block with deep prompts.

We wrap open_clip's ``VisionTransformer`` and call its own modules (``conv1``,
``class_embedding``, ``positional_embedding``, ``ln_pre``, ``transformer.resblocks[i]``,
``ln_post``, ``proj``); nothing of CLIP is re-implemented (docs/method.md §2).
"""

from __future__ import annotations

import functools
import math
import os
import weakref
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, VisionTransformer
from timm.layers import resample_abs_pos_embed
from torch import nn

from zegclip.errors import ZegCLIPError
from zegclip.model.attention import CPU_BACKWARDS, attention
from zegclip.model.cached import reusable, unchanged_key
from zegclip.model.prompts import DeepPrompts

_CONFIG_DIR = Path(__file__).parent / "configs"
TINY_CLIP = "zegclip-tiny"
"""A random-weight CLIP (ViT width 64, 2 layers, patch 16) for tests and demos."""

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class CLIPLoadError(ZegCLIPError, RuntimeError):
    """CLIP weights could not be found or loaded; the message says what to do."""


def _register_configs() -> None:
    if TINY_CLIP not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


def _is_weights_file(pretrained: str) -> bool:
    return os.path.sep in pretrained or pretrained.endswith(_WEIGHT_SUFFIXES)


def _tag_is_cached(model_name: str, tag: str, cache_dir: str | None) -> bool:
    """True when open_clip can load ``tag`` without touching the network.

    Hub weights: huggingface_hub's own cache lookup for the file names open_clip asks for
    (its safetensors name first, then its ``.bin`` name, or the file the tag names).
    """
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if "file" in cfg:
        return os.path.isfile(cfg["file"])
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo_id, filename = os.path.split(hub)
        names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        return any(isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache_dir), str) for name in names)
    url = cfg.get("url", "")
    root = cache_dir or os.path.expanduser("~/.cache/clip")
    return bool(url) and os.path.isfile(os.path.join(root, os.path.basename(url)))


def resolve_quick_gelu(model_name: str, pretrained: str | None, quick_gelu: bool | None) -> bool:
    """The activation to force: ``quick_gelu`` when given, else what an open_clip tag was trained with.

    open_clip 3.x only warns when a tag trained with QuickGELU (``openai``) is loaded into a
    GELU architecture (``ViT-B-16``), so the tag's own setting is applied here.
    """
    if quick_gelu is not None:
        return bool(quick_gelu)
    if pretrained and not _is_weights_file(pretrained) and not os.path.isfile(pretrained):
        return bool(open_clip.get_pretrained_cfg(model_name, pretrained).get("quick_gelu", False))
    return False


def uses_quick_gelu(clip: nn.Module) -> bool:
    """Whether an open_clip CLIP's towers run QuickGELU (read off the built modules)."""
    return any(isinstance(m, QuickGELU) for m in clip.modules())


def _missing_locally(err: BaseException | None) -> bool:
    """Whether huggingface_hub gave up for want of a cached file (offline, or no network)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    while err is not None:
        if isinstance(err, LocalEntryNotFoundError):
            return True
        err = err.__cause__ or err.__context__
    return False


def _tag_error(model_name: str, tag: str, why: str) -> CLIPLoadError:
    return CLIPLoadError(
        f"cannot load CLIP weights for model {model_name!r} with pretrained tag {tag!r}: {why}. "
        "Download them on a machine with internet access (they are cached under "
        "~/.cache/huggingface), or pass a local weights file: "
        f"build_zegclip(clip_model={model_name!r}, pretrained='/path/to/weights.pt', "
        "quick_gelu=True) for OpenAI weights (in Hydra: model.pretrained=/path/to/weights.pt)."
    )


def load_clip(
    model_name: str = "ViT-B-16",
    pretrained: str | None = "openai",
    *,
    quick_gelu: bool | None = None,
    clip_config: dict[str, Any] | None = None,
    cache_dir: str | None = None,
) -> nn.Module:
    """Build an open_clip CLIP model, frozen and in eval mode.

    Args:
        model_name: an open_clip architecture name (``open_clip.list_models()``) or
            ``"zegclip-tiny"``.
        pretrained: an open_clip tag (``"openai"``, a LAION tag), a local weights file
            (.pt/.bin/.safetensors state dict), or None for random weights.
        quick_gelu: force QuickGELU (True) or not (False). None: what the tag was trained
            with (QuickGELU for ``openai``), plain GELU for files and random weights unless the
            architecture name says otherwise (``ViT-B-16-quickgelu``). Pass True with a local
            OpenAI weights file.
        clip_config: an explicit open_clip config (``embed_dim``, ``vision_cfg``,
            ``text_cfg``, ``quick_gelu``) used instead of ``model_name``; random weights.
        cache_dir: where tagged weights are cached.
    """
    _register_configs()
    if clip_config is None and pretrained and not _is_weights_file(pretrained) and not os.path.isfile(pretrained):
        _check_tag(model_name, pretrained)
    force_quick_gelu = resolve_quick_gelu(model_name, pretrained, quick_gelu)
    if clip_config is not None:
        clip = open_clip.model.CLIP(**clip_config)
    elif not pretrained:
        clip = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=force_quick_gelu)
    elif _is_weights_file(pretrained) or os.path.isfile(pretrained):
        if not os.path.isfile(pretrained):
            raise CLIPLoadError(f"CLIP weights file not found: {pretrained}")
        try:
            clip = open_clip.create_model(model_name, pretrained=pretrained, force_quick_gelu=force_quick_gelu)
        except Exception as err:  # open_clip raises many kinds; name the file once
            raise CLIPLoadError(f"cannot load CLIP weights file {pretrained} into {model_name!r}: {err}") from err
    else:
        from huggingface_hub import is_offline_mode  # HF_HUB_OFFLINE, as huggingface_hub reads it

        if is_offline_mode() and not _tag_is_cached(model_name, pretrained, cache_dir):  # fail before any request
            raise _tag_error(model_name, pretrained, "offline (HF_HUB_OFFLINE) and no cached copy")
        try:
            clip = open_clip.create_model(
                model_name,
                pretrained=pretrained,
                force_quick_gelu=force_quick_gelu,
                cache_dir=cache_dir,
            )
        except Exception as err:
            why = "no network and no cached copy" if _missing_locally(err) else str(err)
            raise _tag_error(model_name, pretrained, why) from err
    clip.requires_grad_(False)
    return clip.eval()


def is_clip_architecture(model_name: object) -> bool:
    """Whether ``model_name`` is an architecture open_clip builds (``open_clip.list_models()``, or ``zegclip-tiny``)."""
    _register_configs()
    return isinstance(model_name, str) and model_name in open_clip.list_models()


def _check_tag(model_name: str, tag: str) -> None:
    if model_name not in open_clip.list_models():
        raise CLIPLoadError(f"unknown open_clip model {model_name!r}")
    if not open_clip.get_pretrained_cfg(model_name, tag):
        known = open_clip.list_pretrained_tags_by_model(model_name)
        raise _tag_error(model_name, tag, f"unknown tag; known tags: {known}")


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a square (1 + g*g) x W positional embedding to (1 + h*w) x W.

    timm's ``resample_abs_pos_embed`` (bilinear, no antialias, as the authors' code), on the
    unbatched layout CLIP keeps; it traces into ONNX too (tests/test_export.py), so no own copy.
    """
    if math.isqrt(int(pos_embed.shape[0]) - 1) ** 2 != pos_embed.shape[0] - 1:
        raise ValueError(f"positional embedding of {pos_embed.shape[0] - 1} patches is not a square grid")
    # int(): under the ONNX tracer shapes are tensors
    size = [int(grid[0]), int(grid[1])]
    out = resample_abs_pos_embed(pos_embed[None], size, interpolation="bilinear", antialias=False)  # 1 x (1+h*w) x W
    return out[0]


QUICK_GELU_SCALE = 1.702
# oneDNN (torch 2.14, AMX CPUs) runs a reduced-precision GEMM with fewer than this many rows
# and a narrow output on one thread; the transposed product W @ x^T is split across all.
_TRANSPOSE_MAX_ROWS = 2048
_TRANSPOSE_MAX_OUT = 1024


@functools.cache
def _narrow_gemms_on_one_thread() -> bool:
    """True on AMX CPUs (see above). Without AMX (AVX-512 bf16 only) the direct product measured
    as fast, and adding its transposed result to the residual slower (a 3 % slower forward)."""
    # private, no public CPU-feature query in torch; its one use, pinned by tests/test_private_apis.py
    is_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return True if is_amx is None else bool(is_amx())


def matmul_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype a matmul of ``x`` with ``weight`` runs in: autocast's for fp32 weights, else theirs."""
    device = x.device.type
    if weight.dtype == torch.float32 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear``; on CPU in bf16/fp16, narrow outputs of short inputs as (W x^T)^T.

    The same product, computed as an N x rows matrix and returned as its transposed view:
    for a 512x512 image (1035 tokens) the 768-wide projections run about twice as fast.
    """
    rows, out = x.numel() // x.shape[-1], weight.shape[0]
    if (
        x.device.type != "cpu"
        or torch.compiler.is_compiling()  # inductor picks its own GEMM layout
        or bias is None
        or rows >= _TRANSPOSE_MAX_ROWS
        or out > _TRANSPOSE_MAX_OUT
        or matmul_dtype(x, weight) not in (torch.bfloat16, torch.float16)
        or not _narrow_gemms_on_one_thread()
    ):
        return F.linear(x, weight, bias)
    product = torch.addmm(bias.unsqueeze(1), weight, x.reshape(rows, -1).t())  # out x rows
    return product.t().reshape(*x.shape[:-1], out)  # a view: ... x out


class FrozenCasts:
    """Frozen fp32 weights in the autocast dtype, cast once and reused while they are unchanged.

    Autocast casts an fp32 weight at every call (it caches only weights that require grad)
    and, in training, keeps each cast copy for the backward. Training and validation under
    bf16-mixed/16-mixed keep the fp32 weights (checkpoints store them unrounded) and take
    the cast copies from here: the same rounding as autocast's, done once. A weight that
    changes (load_state_dict, a move) is cast again, and so is a copy made under
    ``torch.inference_mode`` when a forward outside it needs one (`cached.reusable`).
    """

    def __init__(self) -> None:
        self._cache: dict[int, tuple[tuple, torch.Tensor]] = {}

    def clear(self) -> None:
        self._cache.clear()

    def __call__(self, t: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        """``t`` as autocast would pass it to a matmul on ``x``'s device (or ``t`` itself)."""
        if t is None or t.requires_grad or torch.compiler.is_compiling():
            return t
        dtype = matmul_dtype(x, t)
        if t.dtype != torch.float32 or dtype not in (torch.bfloat16, torch.float16):
            return t
        key = (weakref.ref(t), *unchanged_key(t), dtype)  # the same tensor, unchanged
        cached = self._cache.get(id(t))
        if cached is None or cached[0][0]() is not t or cached[0][1:] != key[1:] or not reusable(cached[1]):
            with torch.no_grad():
                cached = self._cache[id(t)] = (key, t.to(dtype))
        return cached[1]


class FoldedQuickGELU:
    """QuickGELU MLPs rewritten with one fused SiLU, weights folded once and cached.

    x * sigmoid(1.702 x) = silu(1.702 x) / 1.702, so c_proj(quick_gelu(c_fc(x))) equals
    linear(silu(linear(x, 1.702 W1, 1.702 b1)), W2 / 1.702, b2): one elementwise pass
    instead of three, forward and backward. Used where the matmuls run in bf16/fp16, with
    the folded copies kept in that dtype only (in fp32 the MLP runs as it is: a second fp32
    copy of its weights would cost 0.22 GiB for ViT-B/16). The copies are rebuilt whenever
    the CLIP weights change (load_state_dict, dtype or device moves) or the dtype does, and
    when copies made under ``torch.inference_mode`` meet a forward outside it (`cached.reusable`).
    """

    def __init__(self) -> None:
        self._cache: dict[int, tuple[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}

    @staticmethod
    def applies(mlp: nn.Module) -> bool:
        return (
            isinstance(mlp, nn.Sequential)
            and isinstance(getattr(mlp, "gelu", None), QuickGELU)
            and isinstance(getattr(mlp, "c_fc", None), nn.Linear)
            and isinstance(getattr(mlp, "c_proj", None), nn.Linear)
            and mlp.c_fc.bias is not None
            and not any(p.requires_grad for p in mlp.parameters())
        )

    @staticmethod
    def pays_off(mlp: nn.Module, x: torch.Tensor) -> bool:
        """Whether ``mlp`` on ``x`` runs folded: its matmuls in bf16 or fp16."""
        return matmul_dtype(x, mlp.c_fc.weight) in (torch.bfloat16, torch.float16)

    def __call__(self, mlp: nn.Module, x: torch.Tensor, casts: FrozenCasts | None = None) -> torch.Tensor:
        fc, proj = mlp.c_fc, mlp.c_proj
        dtype = matmul_dtype(x, fc.weight)
        key = (*(unchanged_key(t) for t in (fc.weight, fc.bias, proj.weight)), dtype)
        cached = self._cache.get(id(mlp))
        if cached is None or cached[0] != key or not reusable(cached[1][0]):
            self._cache.pop(id(mlp), None)  # the old copies go before the new ones are made
            with torch.no_grad():
                folded = (fc.weight * QUICK_GELU_SCALE, fc.bias * QUICK_GELU_SCALE, proj.weight / QUICK_GELU_SCALE)
                folded = tuple(t.to(dtype) for t in folded)  # only the dtype the matmuls use is kept
            self._cache[id(mlp)] = cached = (key, folded)
        w1, b1, w2 = cached[1]
        b2 = proj.bias if casts is None else casts(proj.bias, x)
        hidden = F.linear(x, w1, b1)
        # in place (no new 4W-wide buffer) unless autograd needs the pre-activation
        hidden = F.silu(hidden, inplace=not (torch.is_grad_enabled() and hidden.requires_grad))
        return linear(hidden, w2, b2)


def run_block(
    block: nn.Module,
    x: torch.Tensor,
    folded_mlp: FoldedQuickGELU | None = None,
    cpu_attention_backward: str = "flash",
    casts: FrozenCasts | None = None,
) -> torch.Tensor:
    """One open_clip residual attention block on B x T x W tokens, attention through SDPA.

    The same maths as ``block(x)``, but with fused scaled-dot-product attention and no
    sequence-first round trips: nn.MultiheadAttention's inference fast path materialises
    every T x T attention matrix, which costs a third of the encoder's time and, in
    training, most of its activation memory. QuickGELU MLPs run folded (`FoldedQuickGELU`),
    and under autocast the frozen fp32 matmul weights come from ``casts`` (`FrozenCasts`);
    ``cpu_attention_backward`` picks the attention backward on CPU (`attention.attention`).
    Blocks of another kind run their own forward.
    """
    attn = getattr(block, "attn", None)
    if (
        not isinstance(attn, nn.MultiheadAttention)
        or attn.in_proj_weight is None  # separate q/k/v projections (kdim/vdim given)
        or attn.in_proj_bias is None
        or attn.dropout
    ):
        return block(x)
    B, T, W = x.shape
    cast = casts if casts is not None else (lambda t, _: t)
    qkv = F.linear(block.ln_1(x), cast(attn.in_proj_weight, x), cast(attn.in_proj_bias, x))  # B x T x 3W
    # B x T x 3 x heads x d -> 3 x B x heads x T x d
    q, k, v = qkv.view(B, T, 3, attn.num_heads, W // attn.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
    out = attention(q, k, v, cpu_backward=cpu_attention_backward)  # B x heads x T x d
    out = linear(out.transpose(1, 2).reshape(B, T, W), cast(attn.out_proj.weight, x), cast(attn.out_proj.bias, x))
    x = x + block.ls_1(out)
    mlp = block.mlp
    hidden = block.ln_2(x)
    # compiled graphs fuse QuickGELU themselves (and cannot hold the folded-weight cache)
    if (
        folded_mlp is not None
        and not torch.compiler.is_compiling()
        and FoldedQuickGELU.applies(mlp)
        and FoldedQuickGELU.pays_off(mlp, hidden)
    ):
        hidden = block.ls_2(folded_mlp(mlp, hidden, casts))
    else:
        hidden = block.ls_2(mlp(hidden))
    if torch.is_grad_enabled() and (x.requires_grad or hidden.requires_grad):
        return x + hidden
    return x.add_(hidden)  # x is this block's own tensor: add in place, no new buffer


class PromptedVisionEncoder(nn.Module):
    """Frozen CLIP ViT with deep visual prompts (docs/method.md §2).

    Token order inside the sequence: [cls, prompts, patches]. Prompts are inserted after
    ``ln_pre`` and replaced before every block; ``prompt_norm`` (trainable) precedes
    CLIP's ``ln_post`` and projection.
    """

    def __init__(
        self,
        *,
        visual: VisionTransformer,
        num_prompts: int,
        image_size: int = 512,
        prompt_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
            raise TypeError("ZegCLIP needs an open_clip VisionTransformer without attention pooling")
        if visual.pool_type != "tok" or visual.final_ln_after_pool:
            raise TypeError("ZegCLIP needs a class-token ViT (pool_type='tok')")
        self.visual = visual
        self.patch_size = int(visual.conv1.kernel_size[0])
        width = visual.conv1.out_channels
        grid = image_size // self.patch_size
        # resized once at build time to the training resolution (14x14 -> 32x32 for 512 px)
        with torch.no_grad():
            pos = resize_pos_embed(visual.positional_embedding.detach(), (grid, grid))
        visual.positional_embedding = nn.Parameter(pos, requires_grad=False)
        self.prompts = DeepPrompts(
            width=width,
            num_layers=len(visual.transformer.resblocks),
            num_tokens=num_prompts,
            patch_size=self.patch_size,
            dropout=prompt_dropout,
        )
        self.prompt_norm = nn.LayerNorm(width, eps=1e-6)
        self.matmul_dtype = torch.float32
        self.folded_mlp = FoldedQuickGELU()
        self.frozen_casts = FrozenCasts()
        self.cpu_attention_backward = "flash"
        self._compiled: Any = None  # compile_for_inference()
        self._freeze = True
        self._compiled_weights: tuple | None = None  # the weights frozen in, taken at the first compiled call
        self._autotune = True
        self._first_size: tuple[int, int] | None = None
        self._sizes_vary = False

    def cast_frozen_matmuls(self, dtype: torch.dtype) -> None:
        """Store the frozen blocks' matmul weights (attention and MLP) in ``dtype``.

        Under autocast, frozen fp32 weights are re-cast on every call (autocast caches
        only weights that require grad); stored once in bf16 they are used as they are.
        Norms, embeddings and the projection stay fp32. Needs autocast to run.
        """
        for module in self.visual.transformer.modules():
            if isinstance(module, nn.Linear):
                module.to(dtype)
            elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
                module.in_proj_weight.data = module.in_proj_weight.data.to(dtype)
                module.in_proj_bias.data = module.in_proj_bias.data.to(dtype)
        self.matmul_dtype = dtype
        self.frozen_casts.clear()  # copies of the fp32 weights, now unused

    @property
    def cpu_attention_backward(self) -> str:
        """``flash`` (PyTorch's) or ``compiled``: faster bf16 training on CPU (`attention.attention`)."""
        return self._cpu_attention_backward

    @cpu_attention_backward.setter
    def cpu_attention_backward(self, value: str) -> None:
        if value not in CPU_BACKWARDS:
            raise ValueError(f"cpu_attention_backward must be one of {CPU_BACKWARDS}, got {value!r}")
        self._cpu_attention_backward = value

    def _weights_key(self) -> tuple:
        return tuple(unchanged_key(p) for p in self.parameters())

    def compile_for_inference(self, autotune: bool = True, freeze: bool = True) -> None:
        """Compile the forward with ``torch.compile`` for calls without gradients.

        Inductor freezes the weights into the graph (folding and prepacking them) and,
        with ``autotune``, picks the fastest of its GEMM kernels; the bf16 forward gets
        about 15-20% faster on AMX CPUs, about 10% with AVX-512 bf16 only. Compiling takes
        25-80 s on 2 CPU cores with autotuning (docs/performance.md; then cached on disk), at most twice for
        batches and twice for image sizes (`_mark_dynamic`).
        Calls with gradients (training) keep running eagerly. Nothing is compiled until the
        first call, and the weights frozen in are the ones of that call: a device or dtype
        move between this method and the first call (Lightning moves the model to the GPU
        after the module is built) is followed; a change after it is refused, not silently
        stale. ``freeze=False`` keeps the weights as inputs of the graph instead (no
        prepacking, so slower than frozen, and never autotuned), which then follows every
        change of them: for validation during training, whose prompts and decoder change at
        every step. Each call of this method drops every graph ``torch.compile`` holds in the
        process (``torch.compiler.reset``), so that no graph frozen with older weights is reused.
        """
        torch.compiler.reset()
        self._compiled = torch.compile(self._forward, dynamic=None)
        self._freeze = freeze
        self._compiled_weights = None
        self._first_size = None  # image size of the first compiled call (`_mark_dynamic`)
        self._sizes_vary = False
        self._autotune = autotune and freeze  # weights as graph inputs: no prepacked GEMMs to tune

    def train(self, mode: bool = True) -> PromptedVisionEncoder:
        super().train(mode)
        self.visual.eval()  # frozen and deterministic; only the prompt dropout trains
        return self

    def positions(self, grid: tuple[int, int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """What `embed` adds to the tokens of an h x w patch grid: (1 + h*w) x W in ``dtype``.

        The positional embedding resized to the grid; the released forward adds the class
        embedding to the class token's position too.
        """
        v = self.visual
        pos = resize_pos_embed(v.positional_embedding, grid).to(dtype)
        return torch.cat([pos[:1] + v.class_embedding.to(dtype), pos[1:]], dim=0)

    def embed(
        self, images: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch + class tokens after ln_pre: B x (1 + h*w) x W, and the grid (h, w).

        ``positions``: `positions` of the grid, when computed beforehand (an exported graph
        takes them as an input, so that one graph serves every image size).
        """
        v = self.visual
        x = v.conv1(images)  # B x W x h x w
        B, W, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # B x (h*w) x W
        cls = v.class_embedding.to(x.dtype).expand(B, 1, W)
        pos = self.positions((h, w), x.dtype) if positions is None else positions.to(x.dtype)
        x = torch.cat([cls, x], dim=1) + pos  # B x (1 + h*w) x W
        return v.ln_pre(x), (h, w)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images B x 3 x H x W -> (global B x D, patches B x D x h x w), both L2-normalised."""
        if self.matmul_dtype != torch.float32 and not torch.is_autocast_enabled(images.device.type):
            raise RuntimeError(
                f"the frozen CLIP weights are stored in {self.matmul_dtype}; run the model under "
                "torch.autocast (Lightning: trainer.precision=bf16-mixed)"
            )
        if self._compiled is None or torch.is_grad_enabled():
            return self._forward(images)
        if self._freeze:
            weights = self._weights_key()  # address, version, dtype and device of every weight
            if self._compiled_weights is None:  # the first compiled call freezes these
                self._compiled_weights = weights
            elif weights != self._compiled_weights:
                raise RuntimeError(
                    "the image encoder's weights changed after its first compiled call, which froze "
                    "the old ones into the compiled graph; call compile_for_inference() again"
                )
        # private: freezing and autotuning exist only in Inductor's config; its one use, pinned by
        # tests/test_private_apis.py
        from torch._inductor import config as inductor_config

        # freezing and autotuning are read from the global config (torch.compile's options= does not apply them)
        backends = "CPP,ATEN" if images.device.type == "cpu" else "ATEN,TRITON"
        autotune = (
            {
                "max_autotune": True,
                "max_autotune_gemm_backends": backends,
                "autotune_num_choices_displayed": 0,  # no timing table per GEMM on stderr
                "max_autotune_report_choices_stats": False,
            }
            if self._autotune
            else {}
        )
        # quieting keys that older torch releases lack are left out rather than failing the patch
        autotune = {k: v for k, v in autotune.items() if hasattr(inductor_config, k)}
        self._mark_dynamic(images)
        with inductor_config.patch(freezing=self._freeze, **autotune):
            return self._compiled(images)

    def _mark_dynamic(self, images: torch.Tensor) -> None:
        """Sizes the compiled graph takes as symbols, so that it compiles at most twice per kind of input.

        The batch from the start: sliding windows come ``window_batch`` at a time and the last
        chunk of each image has fewer, so 1..window_batch windows share one graph (batch 1 gets
        its own). Height and width once the image size has changed (whole-image evaluation):
        every later size then shares one graph, where torch's own rule would recompile for the
        first change of each and a static graph for every size would fall back to eager after 8.
        """
        size = tuple(images.shape[-2:])
        if self._first_size is None:
            self._first_size = size
        self._sizes_vary = self._sizes_vary or size != self._first_size
        for dim in (0, 2, 3) if self._sizes_vary else (0,):
            # torch.compiler has no public mark_dynamic; its one use, pinned by tests/test_private_apis.py
            torch._dynamo.maybe_mark_dynamic(images, dim)

    def _forward(
        self, images: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, (h, w) = self.embed(images, positions)
        B, N = x.shape[0], self.prompts.num_tokens
        for i, block in enumerate(self.visual.transformer.resblocks):
            prompts = self.prompts(i, B).to(x.dtype)  # B x N x W
            # layer 0: insert after cls; later layers: replace the previous block's prompts
            rest = x[:, 1:] if i == 0 else x[:, 1 + N :]
            x = torch.cat([x[:, :1], prompts, rest], dim=1)  # B x (1+N+h*w) x W
            x = run_block(block, x, self.folded_mlp, self.cpu_attention_backward, self.frozen_casts)
        # prompt outputs are discarded; the norms act per token, so drop them first
        x = torch.cat([x[:, :1], x[:, 1 + N :]], dim=1)
        with torch.autocast(x.device.type, enabled=False):  # outputs in fp32 under any precision
            x = self.visual.ln_post(self.prompt_norm(x.float())) @ self.visual.proj  # B x (1 + h*w) x D
        global_embed = F.normalize(x[:, 0], dim=-1)  # B x D
        patches = x[:, 1:].transpose(1, 2).reshape(B, -1, h, w)  # B x D x h x w
        return global_embed, F.normalize(patches, dim=1)
