"""The document model: spans with provenance, incremental reading, snapshots, undo/redo, sessions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ai_writer.story.document import (
    MODEL,
    WRITER,
    Document,
    SessionFileError,
    Span,
    atomic_write,
)
from ai_writer.errors import InputTextError
from ai_writer.generation.reading import CountingBackend, Reader
from ai_writer.backends.open import load_model

OPENING = "\n这是一颗魔法\n林黛玉竟如此精妙。"


@pytest.fixture(scope="module")
def reader(tiny_model, tiny_onnx_cache):
    loaded = load_model(tiny_model, backend="cpu", threads=1, onnx_cache=tiny_onnx_cache)
    return Reader(CountingBackend(loaded.backend), loaded.tokenizer)


def fed(reader) -> int:
    return reader.backend.fed


def test_appending_reads_only_the_new_text(reader):
    doc = Document([Span(WRITER, OPENING)])
    doc.state_at_end(reader)
    before = fed(reader)
    doc.append(Span(WRITER, "众人惊"))
    state = doc.state_at_end(reader)
    assert fed(reader) - before == 3
    whole = Reader(reader.backend, reader.tokenizer).feed(None, OPENING + "众人惊")
    np.testing.assert_allclose(state.logits, whole.logits, rtol=1e-4, atol=1e-4)
    assert state.n_tokens == len(OPENING) + 3
    before = fed(reader)
    doc.state_at_end(reader)
    assert fed(reader) == before  # nothing new: nothing read


def test_model_span_snapshot_serves_its_rewrite_without_reading(reader):
    doc = Document([Span(WRITER, OPENING * 20)])
    start = doc.state_at_end(reader)
    doc.append(Span(MODEL, "三体舰队\n", seed=1, settings={}, start=start))
    doc.append(Span(WRITER, "众人"))
    before = fed(reader)
    assert doc.state_before(1, reader) is start
    assert fed(reader) == before


def test_paragraphs_and_edit_recompute_from_the_nearest_snapshot(reader):
    doc = Document([Span(WRITER, OPENING * 10 + "\n")])
    start = doc.state_at_end(reader)
    doc.append(Span(MODEL, "三体舰队来了\n", seed=1, settings={}, start=start))
    doc.append(Span(WRITER, "众人惊"))
    paragraphs = doc.paragraphs()
    assert [p.text for p in paragraphs[-2:]] == ["三体舰队来了", "众人惊"]
    number = len(paragraphs) - 1
    doc.edit_paragraph(number, "三体舰队没来")
    assert doc.text.endswith("\n三体舰队没来\n众人惊")
    before = fed(reader)
    state = doc.state_at_end(reader)
    assert fed(reader) - before == len("三体舰队没来\n众人惊")  # from the snapshot, not from the start
    whole = Reader(reader.backend, reader.tokenizer).feed(None, doc.text)
    np.testing.assert_allclose(state.logits, whole.logits, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputTextError):
        doc.edit_paragraph(99, "x")


def test_edit_in_the_middle_of_a_span_keeps_both_sides(reader):
    doc = Document([Span(WRITER, "\n第一\n第二\n第三")])
    doc.edit_paragraph(2, "二")
    assert doc.text == "\n第一\n二\n第三"
    assert [s.author for s in doc.spans] == [WRITER, WRITER, WRITER]
    doc.undo()
    assert doc.text == "\n第一\n第二\n第三"


def test_undo_redo_over_every_change():
    doc = Document([Span(WRITER, "\n开头")])
    doc.append(Span(MODEL, "甲\n", seed=1, settings={}))
    doc.replace_span(1, Span(MODEL, "乙\n", seed=2, settings={}))
    doc.append(Span(WRITER, "丙"))
    assert doc.text == "\n开头乙\n丙"
    assert doc.undo() and doc.text == "\n开头乙\n"
    assert doc.undo() and doc.text == "\n开头甲\n"
    assert doc.redo() and doc.text == "\n开头乙\n"
    doc.append(Span(WRITER, "丁"))
    assert not doc.redo()  # a new change clears the redo stack
    assert doc.undo() and doc.undo() and doc.undo() and not doc.undo()
    assert doc.text == "\n开头"


def test_session_round_trip_with_state(reader, tmp_path):
    doc = Document([Span(WRITER, OPENING)])
    start = doc.state_at_end(reader)
    doc.append(Span(MODEL, "三体\n", seed=7, settings={"temperature": 1.0}, start=start))
    end = doc.state_at_end(reader)
    path = tmp_path / "s.json"
    doc.save(path, fingerprint="abc", with_state=True, length=50)
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["version"] == 1 and record["len"] == 50
    assert record["spans"][1] == {"author": "model", "text": "三体\n", "seed": 7, "settings": {"temperature": 1.0}}
    zero = reader.backend.zero_state(1)
    again = Document.load(path, fingerprint="abc", zero_state=zero)
    assert again.text == doc.text and [s.author for s in again.spans] == [WRITER, MODEL]
    before = fed(reader)
    restored = again.state_at_end(reader)
    assert fed(reader) == before  # the saved state: nothing re-read
    np.testing.assert_array_equal(restored.logits, end.logits)
    np.testing.assert_array_equal(restored.state.wkv, end.state.wkv)
    other = Document.load(path, fingerprint="another model", zero_state=zero)
    other.state_at_end(reader)
    assert fed(reader) - before == len(doc.text)  # a different model re-reads the text


def test_bad_session_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"format\": \"something else\"}", encoding="utf-8")
    with pytest.raises(SessionFileError, match="not an ai-writer session"):
        Document.load(bad)
    with pytest.raises(SessionFileError, match="no such file"):
        Document.load(tmp_path / "missing.json")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "s.json"
    atomic_write(path, "old")
    with pytest.raises(SessionFileError, match="cannot write"):
        atomic_write(tmp_path / "s.json" / "inside", "new")  # a file is not a folder
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary file left behind
