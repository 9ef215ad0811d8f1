"""Atomic writes (ai_writer/files.py): the new file appears whole or not at all, and nothing is left behind."""

from __future__ import annotations

import pytest

from ai_writer.files import atomic_files, atomic_path, write_atomic


def test_text_and_bytes_are_written_whole(tmp_path):
    path = tmp_path / "story.txt"
    write_atomic(path, "第一章\n")
    assert path.read_text(encoding="utf-8") == "第一章\n"
    write_atomic(path, b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"
    assert [p.name for p in tmp_path.iterdir()] == ["story.txt"]  # no temporary left


def test_a_writer_gets_an_empty_temporary_file_beside_the_destination(tmp_path):
    path = tmp_path / "model.safetensors"
    with atomic_path(path) as temporary:
        assert temporary.is_file() and temporary.read_bytes() == b""
        assert temporary.name == path.name and temporary.parent.parent == tmp_path  # same disk, same name
        assert not path.exists()  # nothing is visible before the block ends
        temporary.write_bytes(b"weights")
    assert path.read_bytes() == b"weights"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path, error):
    path = tmp_path / "s.json"
    path.write_text("old", encoding="utf-8")
    with pytest.raises(type(error)):
        with atomic_path(path) as temporary:
            temporary.write_text("half", encoding="utf-8")
            raise error
    assert path.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_a_failed_first_write_creates_nothing(tmp_path):
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "new.txt"):
            raise ValueError("the writer failed")
    assert list(tmp_path.iterdir()) == []


def test_temporary_names_are_unique(tmp_path):
    path = tmp_path / "same.txt"
    with atomic_path(path) as first, atomic_path(path) as second:
        assert first != second and first.parent != second.parent
        first.write_text("first", encoding="utf-8")
        second.write_text("second", encoding="utf-8")
    assert path.read_text(encoding="utf-8") == "first"  # the outer block ends last: its file wins
    assert [p.name for p in tmp_path.iterdir()] == ["same.txt"]


def test_a_group_of_files_appears_together_and_a_stale_companion_goes(tmp_path):
    model, data = tmp_path / "m.onnx", tmp_path / "m.onnx.data"
    with atomic_files(data, model) as staging:
        (staging / data.name).write_bytes(b"weights")
        (staging / model.name).write_bytes(b"graph -> m.onnx.data")
        assert list(tmp_path.iterdir()) == [staging]
    assert (model.read_bytes(), data.read_bytes()) == (b"graph -> m.onnx.data", b"weights")
    with atomic_files(data, model) as staging:
        (staging / model.name).write_bytes(b"graph, weights inside")
    assert model.read_bytes() == b"graph, weights inside"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # the old data file would contradict it


def test_a_failed_group_changes_nothing(tmp_path):
    model, data = tmp_path / "m.onnx", tmp_path / "m.onnx.data"
    model.write_bytes(b"old graph")
    data.write_bytes(b"old weights")
    with pytest.raises(OSError):
        with atomic_files(data, model) as staging:
            (staging / data.name).write_bytes(b"new weights")
            raise OSError(28, "No space left on device")
    assert (model.read_bytes(), data.read_bytes()) == (b"old graph", b"old weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]


def test_a_folder_is_renamed_into_place_whole(tmp_path):
    entry = tmp_path / "cache" / "key"
    entry.parent.mkdir()
    with atomic_files(entry) as staging:
        (staging / entry.name).mkdir()
        (staging / entry.name / "train.npy").write_bytes(b"ids")
        assert not entry.exists()
    assert [p.name for p in entry.iterdir()] == ["train.npy"]
    assert [p.name for p in entry.parent.iterdir()] == ["key"]


def test_paths_in_different_folders_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="same folder"):
        with atomic_files(tmp_path / "a" / "x", tmp_path / "y"):
            pass
