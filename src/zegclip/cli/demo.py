"""Command line: a web demo (Gradio) to segment uploaded images with any vocabulary.

Example::

    zegclip demo --checkpoint ZegCLIP_voc.pth          # then open http://127.0.0.1:7860
    zegclip demo --tiny                                # tiny random model: no download, meaningless masks

Needs the ``demo`` extra (``pip install -e ".[demo]"``); the rest of the package never
imports Gradio. The page runs offline (no analytics, fonts or scripts from elsewhere).
Requests are handled by :class:`zegclip.cli.demo_requests.Demo`, which runs the loop of
``zegclip predict``: the same vocabulary syntax, segmentation and outputs. Bad input gives a
message in the page; the app stays up.
"""

from __future__ import annotations

import argparse
import html
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zegclip.cli.demo_requests import EXAMPLE_CLASSES, MAX_IMAGES, MAX_PIXELS, TEMPLATES, Demo, write_examples
from zegclip.cli.model_options import add_model_options, check_model_options, load_checkpoint_model
from zegclip.errors import UsageError, ZegCLIPError, one_line, run_command
from zegclip.model import ZegCLIP

if TYPE_CHECKING:
    import gradio


# ---------------------------------------------------------------- the Gradio app


def import_gradio() -> Any:
    """Import Gradio with its analytics off; a UsageError with the install hint when missing."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio
    except ImportError as err:
        raise UsageError('the demo needs Gradio: pip install "zegclip[demo]" (or pip install -e ".[demo]")') from err
    return gradio


def _describe(model: ZegCLIP, source: str | None) -> str:
    clip = model.config.get("clip_model")
    parts = [html.escape(source) if source else "", html.escape(str(clip)) if clip else ""]
    return ", ".join(p for p in parts if p)


def request_handler(demo: Demo, gr: Any) -> Callable[..., tuple]:
    """The page's Segment action: `Demo.run`, with every error shown in the page (the app stays up)."""

    def segment_request(files, classes, seen, mode, precision, templates, progress=gr.Progress()):  # noqa: B008
        empty = ([], "", [], None)
        try:
            out = demo.run(files, classes, seen, mode, precision, templates, progress=progress)
        except ZegCLIPError as err:  # a bad vocabulary, option or upload: shown in the page
            message = str(err)
            gr.Warning(message)
            return (*empty, f"**Error:** {html.escape(message)}")
        except Exception as err:  # the details go to the server's log
            traceback.print_exc()
            message = f"internal error: {one_line(err)}"
            gr.Warning(message)
            return (*empty, f"**Error:** {html.escape(message)}")
        for problem in out.problems:
            gr.Warning(problem)
        return out.overlays, out.legend_html, out.table, out.downloads, out.status

    return segment_request


def _input_column(gr: Any, demo: Demo, templates: str, examples: bool) -> tuple[list, Any]:
    """Uploads, vocabulary, options and examples; (the request's input components, the Segment button)."""
    files = gr.File(label="Images", file_count="multiple", type="filepath", elem_id="zc-files")
    classes = gr.Textbox(
        label="Classes", placeholder="cat; grass, lawn; sky", lines=1, max_lines=4, elem_id="zc-classes"
    )
    with gr.Accordion("Options", open=False):
        seen = gr.Textbox(
            label="Seen classes (optional: inductive checkpoints; names or a dataset name)",
            placeholder="voc",
            elem_id="zc-seen",
        )
        mode = gr.Radio(["slide", "whole"], value="slide", label="Mode", elem_id="zc-mode")
        precision = gr.Radio(
            demo.precisions,
            value=demo.precisions[0],
            label=f"Precision ({demo.device.type}, {demo.backend})",
            elem_id="zc-precision",
        )
        templates_choice = gr.Radio(list(TEMPLATES), value=templates, label="Prompt templates", elem_id="zc-templates")
    button = gr.Button("Segment", variant="primary", elem_id="zc-segment")
    if examples:
        paths = write_examples(demo.work_dir / "examples")
        gr.Examples(
            examples=[[[str(path)], EXAMPLE_CLASSES] for path in paths],
            inputs=[files, classes],
            label="Examples (generated images; use the vocabulary of the synthetic dataset)",
        )
    return [files, classes, seen, mode, precision, templates_choice], button


def _output_column(gr: Any) -> list:
    """Status, overlays, legend, area table and downloads: the request's output components."""
    status = gr.Markdown("", elem_id="zc-status")
    gallery = gr.Gallery(
        label="Overlays",
        columns=2,
        height="auto",
        object_fit="contain",
        format="jpeg",
        interactive=False,
        elem_id="zc-overlays",
    )
    legend = gr.HTML(elem_id="zc-legend")
    table = gr.Dataframe(
        headers=["image", "class", "area %"],
        datatype=["str", "str", "number"],
        label="Areas",
        interactive=False,
        elem_id="zc-areas",
    )
    downloads = gr.File(label="Downloads: label PNGs and predictions.jsonl", interactive=False, elem_id="zc-downloads")
    return [gallery, legend, table, downloads, status]


def build_app(
    model: ZegCLIP,
    *,
    device: str | torch.device = "cpu",
    templates: str = "single",
    short_side: int = 512,
    max_pixels: int = MAX_PIXELS,
    max_images: int = MAX_IMAGES,
    work_dir: str | os.PathLike | None = None,
    title: str = "ZegCLIP: open-vocabulary segmentation",
    model_name: str | None = None,
    examples: bool = True,
    backend: str = "torch",
) -> gradio.Blocks:
    """The Gradio page around a `Demo` of ``model`` (launch it with `launch`)."""
    gr = import_gradio()
    demo = Demo(
        model,
        device=device,
        templates=templates,
        short_side=short_side,
        max_pixels=max_pixels,
        max_images=max_images,
        work_dir=work_dir,
        backend=backend,
    )
    described = _describe(model, model_name)
    with gr.Blocks(analytics_enabled=False, title=title, delete_cache=(600, 3600)) as app:
        gr.Markdown(
            f"# {html.escape(title)}\n"
            f"Model: {described or 'ZegCLIP'} on {demo.device.type}. Upload images, name the classes "
            "(`;` between classes, `,` between synonyms, or a dataset name such as `voc`), then **Segment**."
        )
        with gr.Row():
            with gr.Column(scale=1):
                inputs, button = _input_column(gr, demo, templates, examples)
            with gr.Column(scale=2):
                outputs = _output_column(gr)
        handler = request_handler(demo, gr)
        for trigger in (button.click, inputs[1].submit):  # the Segment button, Enter in the classes box
            # one request at a time across both triggers: the model is shared
            trigger(handler, inputs, outputs, concurrency_limit=1, concurrency_id="segment")
    app.zegclip_demo = demo  # for tests and embedding
    return app


def launch(
    app: gradio.Blocks,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
    max_file_size: str | int | None = "64mb",
) -> Any:
    """Serve ``app`` locally: no share link, no analytics, no server-side rendering, system fonts."""
    gr = import_gradio()
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    return app.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        show_error=True,
        max_file_size=max_file_size,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        theme=theme,
    )


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The command line options."""
    parser = argparse.ArgumentParser(
        prog="zegclip demo",
        description="A local web page to segment images with ZegCLIP and a vocabulary of your choice (Gradio).",
        epilog="example: zegclip demo --checkpoint ZegCLIP_voc.pth --device cuda   (then open http://127.0.0.1:7860)",
    )
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--templates", default="single", choices=TEMPLATES, help="default prompt templates")
    parser.add_argument(
        "--max-pixels", type=int, default=MAX_PIXELS, help="refuse uploaded images with more pixels than this"
    )
    parser.add_argument("--max-images", type=int, default=MAX_IMAGES, help="images per request")
    parser.add_argument("--max-file-size", default="64mb", help="largest upload, e.g. 64mb")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Option values that can be checked before loading the model."""
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_pixels < 1 or args.max_images < 1:
        raise UsageError("--max-pixels and --max-images must be at least 1")
    check_model_options(args)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(args: argparse.Namespace) -> int:
    """Load the model, build the page and serve it until Ctrl-C or SIGTERM (exit code 0)."""
    check_args(args)
    import_gradio()
    model = load_checkpoint_model(args)
    app = build_app(
        model,
        device=args.device,
        templates=args.templates,
        short_side=args.short_side,
        max_pixels=args.max_pixels,
        max_images=args.max_images,
        model_name="tiny random model" if args.tiny else Path(args.checkpoint).name,
        backend=args.backend,
    )
    main_thread = threading.current_thread() is threading.main_thread()
    # SIGTERM stops the server as Ctrl-C does: it closes, the work folder is removed at exit
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        launch(app, args.host, args.port, max_file_size=args.max_file_size)
    except OSError as err:  # e.g. the port is taken
        raise UsageError(f"cannot serve on {args.host}:{args.port}: {err}") from err
    except KeyboardInterrupt:  # the way a server is stopped: not an error
        pass
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zegclip demo`` / ``python -m zegclip.demo``; serves until interrupted."""
    return run_command(serve, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
