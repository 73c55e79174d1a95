"""ZegCLIP's image encoder compiled for inference gives the eager outputs, and only for its own weights."""

from __future__ import annotations

import functools

import pytest
import torch


def _encode(model, images):
    with torch.no_grad():
        return model.image_encoder(images)


def _eager(model, images):
    """The eager outputs of a compiled encoder: its graph set aside for one call."""
    encoder = model.image_encoder
    compiled, encoder._compiled = encoder._compiled, None
    try:
        return _encode(model, images)
    finally:
        encoder._compiled = compiled


def _spy(model) -> list:
    """The input shapes of the calls that run the compiled graph, as they come."""
    calls, compiled = [], model.image_encoder._compiled
    model.image_encoder._compiled = lambda x: calls.append(x.shape) or compiled(x)
    return calls


def _assert_close(got, expected):
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.slow  # several torch.compile graphs: over 20 s
def test_compiled_encoder_matches_eager_and_guards_weights(make_tiny_model):
    images = torch.randn(2, 3, 64, 48)
    model, other = make_tiny_model(seed=0), make_tiny_model(seed=1)
    eager, eager_other = _encode(model, images), _encode(other, images)

    model.image_encoder.compile_for_inference(autotune=False)  # autotuning: slow to compile, same maths
    calls = _spy(model)
    _assert_close(_encode(model, images), eager)
    assert calls == [images.shape]
    # another batch size runs the same graph (the batch is dynamic), with the same maths
    more = torch.randn(3, 3, 64, 48)
    _assert_close(_encode(model, more), _eager(model, more))
    del calls[1:]

    # with gradients (training) the eager forward runs
    model.image_encoder(images)
    assert len(calls) == 1

    # a second model compiled in the same process keeps its own (frozen) weights
    other.image_encoder.compile_for_inference(autotune=False)
    _assert_close(_encode(other, images), eager_other)

    # weights changed after compiling: refused, not silently stale
    with torch.no_grad():
        other.image_encoder.prompts.prompt_embeddings.add_(1.0)
    with pytest.raises(RuntimeError, match="compile_for_inference"):
        _encode(other, images)


def test_unfrozen_compile_follows_weight_changes(make_tiny_model):
    """freeze=False (validation during training): the graph reads the weights at every call."""
    images = torch.randn(1, 3, 64, 48)
    model = make_tiny_model(seed=0)
    model.image_encoder.compile_for_inference(autotune=False, freeze=False)
    calls = _spy(model)
    before = _encode(model, images)
    with torch.no_grad():  # what an optimizer step does to the trainable weights, in place
        model.image_encoder.prompts.prompt_embeddings.add_(1.0)
        model.image_encoder.prompt_norm.weight.mul_(2.0)
    after = _encode(model, images)
    assert calls == [images.shape, images.shape]  # both through the compiled graph
    _assert_close(after, _eager(model, images))
    for got, old in zip(after, before, strict=True):
        assert not torch.allclose(got, old, atol=1e-3)  # the change shows: not stale


def test_a_move_before_the_first_compiled_call_is_followed(make_tiny_model):
    """What Lightning does to an evaluation model compiled before ``trainer.validate``: it moves
    it (new addresses, new device). A dtype round trip reallocates every weight the same way."""
    images = torch.randn(1, 3, 64, 48)
    model = make_tiny_model(seed=0)
    eager = _encode(model, images)
    model.image_encoder.compile_for_inference(autotune=False)
    before = [p.data for p in model.parameters()]  # kept alive: the move cannot reuse their memory
    model.to(torch.float64).to(torch.float32)  # as .to("cuda") does: every weight reallocated
    assert all(p.data_ptr() != b.data_ptr() for p, b in zip(model.parameters(), before, strict=True))
    calls = _spy(model)
    _assert_close(_encode(model, images), eager)
    assert calls == [images.shape]

    # after the first compiled call the weights are frozen into the graph: a move is refused
    before = [p.data for p in model.parameters()]
    model.to(torch.float64).to(torch.float32)
    with pytest.raises(RuntimeError, match="changed after its first compiled call"):
        _encode(model, images)


class CountingBackend:
    """A ``torch.compile`` backend that runs each graph as traced: counts graphs and their runs,
    and records whether inductor was asked to autotune when each was compiled."""

    def __init__(self) -> None:
        self.graphs, self.runs, self.autotune = 0, 0, []

    def __call__(self, graph: torch.fx.GraphModule, example_inputs):
        from torch._inductor import config

        self.graphs += 1
        self.autotune.append(config.max_autotune)

        def run(*args):
            self.runs += 1
            return graph.forward(*args)

        return run


@pytest.fixture
def counting(monkeypatch) -> CountingBackend:
    backend = CountingBackend()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    return backend


def test_sliding_window_chunks_of_any_size_share_one_graph(make_tiny_model, counting):
    """1 to window_batch windows per chunk (the last chunk of each image) compile at most twice
    (batch 1 is its own graph), not once per chunk size; every chunk runs compiled."""
    model = make_tiny_model(seed=0)
    embeds = model.encode_text(["cat", "dog", "sky"])
    model.image_encoder.compile_for_inference()
    widths = [100, 64, 150, 200, 64, 120]  # 2, 1, 3, 4, 1, 3 windows of 64 px, stride 48
    for width in widths:
        model.predict(torch.randn(1, 3, 64, width), embeds, crop=64, stride=48, window_batch=4)
    assert counting.graphs <= 2
    assert counting.runs == len(widths)  # one chunk per image, none fell back to eager
    assert counting.autotune == [True] * counting.graphs  # frozen weights: GEMMs autotuned


def test_whole_images_of_every_size_share_one_graph(make_tiny_model, counting):
    """Whole-image evaluation: each image its own size. The first size compiles, the second makes
    height and width dynamic; no recompile after that, and no eager fallback at torch's limit of 8."""
    model = make_tiny_model(seed=0)
    embeds = model.encode_text(["cat", "dog", "sky"])
    model.image_encoder.compile_for_inference(freeze=False)
    sizes = [(64, 64 + 16 * i) for i in range(10)] + [(80, 96), (96, 80)]
    for size in sizes:
        model.predict(torch.randn(1, 3, *size), embeds, mode="whole")
    assert counting.graphs <= 2
    assert counting.runs == len(sizes)
    assert counting.autotune == [False] * counting.graphs  # weights as graph inputs: never autotuned
