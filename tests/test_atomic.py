"""Files written whole or not at all: the one write-to-a-temporary-name-then-rename."""

from __future__ import annotations

import pytest

from zegclip.atomic import atomic_path, atomic_write


@pytest.mark.parametrize("durable", [True, False])
def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path, durable):
    path = tmp_path / "sub" / "out.txt"
    with atomic_write(path, durable=durable) as f:
        f.write(b"first")
        assert not path.exists()  # nothing under the final name until the end
    with atomic_write(path, "w", durable=durable) as f:
        f.write("second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_an_error_keeps_the_previous_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write(b"half")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_path_gives_writers_a_name_beside_the_destination(tmp_path):
    path = tmp_path / "model.onnx"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.onnx.") and tmp.suffix == ".tmp"
        tmp.write_bytes(b"graph")
    assert path.read_bytes() == b"graph" and not tmp.exists()
    with pytest.raises(OSError), atomic_path(path) as tmp:
        tmp.write_bytes(b"partial")
        raise OSError("disk full")
    assert path.read_bytes() == b"graph" and not tmp.exists()
