"""The document model: spans with provenance, incremental reading, snapshots, undo/redo, sessions (version 2: chapter
snapshots, steering and bans; version 1 still read)."""

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
from ai_writer.story import document as document_module
from ai_writer.story.lorebook import Lorebook, parse_line
from ai_writer.story.steering import Steering

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
    assert record["version"] == 2 and record["len"] == 50
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


# ---- marks, chapter snapshots and session version 2 -------------------------------------------------------

CHAPTER = "第{}章\n\n" + "林黛玉竟如此精妙。\n" * 4 + "\n"  # 46 characters a chapter


def book(chapters: int) -> str:
    return "\n" + "".join(CHAPTER.format(n) for n in range(1, chapters + 1))


def load_again(doc, reader, tmp_path, **options):
    path = tmp_path / "s.json"
    doc.save(path, fingerprint="abc", with_state=True, **options)
    return Document.load(path, fingerprint="abc", zero_state=reader.backend.zero_state(1)), path


def test_pinned_marks_hold_until_the_text_before_them_changes(reader):
    text = book(6)
    doc = Document([Span(WRITER, text)])
    offsets = [text.index(f"第{n}章") for n in range(2, 7)]
    for offset in offsets:
        doc.state_at(offset, reader, pin=True)
    assert sorted(o for o, pinned in doc.kept_offsets().items() if pinned) == offsets
    before = fed(reader)
    whole = Reader(reader.backend, reader.tokenizer).feed(None, text[:offsets[3]])
    np.testing.assert_allclose(doc.state_at(offsets[3], reader).logits, whole.logits, rtol=1e-4, atol=1e-4)
    assert fed(reader) - before == offsets[3]  # only the check read anything: the mark was there
    paragraph = next(p for p in doc.paragraphs() if p.begin > offsets[2])  # in chapter 4
    doc.edit_paragraph(paragraph.index, "众人惊")
    assert sorted(doc.kept_offsets()) == offsets[:3]  # the marks after the edit are gone, those before it stay
    before = fed(reader)
    doc.state_at_end(reader)
    assert fed(reader) - before == len(doc.text) - offsets[2]  # read on from the nearest mark before the edit
    doc.undo()
    assert sorted(doc.kept_offsets()) == offsets[:3]


def test_session_keeps_spaced_chapter_snapshots_and_the_rewrite_start(reader, tmp_path, monkeypatch):
    monkeypatch.setattr(document_module, "SNAPSHOT_SPACING", 100)
    text = book(8)
    doc = Document([Span(WRITER, text)])
    pins = [text.index(f"第{n}章") for n in range(2, 9)]
    for offset in pins:
        doc.state_at(offset, reader, pin=True)
    start = doc.state_at_end(reader)
    doc.append(Span(MODEL, "三体舰队来了\n", seed=1, settings={}, start=start))
    doc.state_at_end(reader)
    again, path = load_again(doc, reader, tmp_path)
    record = json.loads(path.read_text(encoding="utf-8"))
    saved = [(s["offset"], s["pinned"]) for s in record["snapshots"]["states"]]
    spaced = [pins[2], pins[5]]  # at least 100 characters apart (46 a chapter), from the start
    assert spaced[0] >= 100 and spaced[1] - spaced[0] >= 100 and pins[-1] - spaced[1] < 100
    assert saved == [(o, True) for o in spaced] + [(len(text), False)]  # + where the rewrite starts
    assert all(len(s["digest"]) == 32 for s in record["snapshots"]["states"])
    assert again.kept_offsets() == {**{o: True for o in spaced}, len(text): False}
    before = fed(reader)
    assert again.state_at_end(reader) is not None and again.state_before(1, reader) is not None
    assert fed(reader) == before  # reopening and a rewrite's start read nothing
    np.testing.assert_array_equal(again.state_at(pins[3], reader).state.wkv, doc.state_at(pins[3], reader).state.wkv)


def test_a_snapshot_of_other_text_or_another_model_is_not_used(reader, monkeypatch):
    monkeypatch.setattr(document_module, "SNAPSHOT_SPACING", 10)
    doc = Document([Span(WRITER, book(3))])
    doc.state_at(doc.text.index("第2章"), reader, pin=True)
    doc.state_at_end(reader)
    record = doc.to_json(fingerprint="abc", with_state=True)
    zero = reader.backend.zero_state(1)
    changed = json.loads(json.dumps(record))
    changed["spans"][0]["text"] = changed["spans"][0]["text"].replace("第1章", "第9章")  # same length, other text
    changed.pop("state")
    assert Document.from_json(record, "s", fingerprint="abc", zero_state=zero).kept_offsets() == {47: True}
    assert Document.from_json(changed, "s", fingerprint="abc", zero_state=zero).kept_offsets() == {}
    assert Document.from_json(record, "s", fingerprint="other", zero_state=zero).kept_offsets() == {}


@pytest.mark.parametrize("change, words", [
    (lambda r: r.update(snapshots=[1]), "not a JSON object with a model"),
    (lambda r: r["snapshots"].update(states={}), "must be a list"),
    (lambda r: r["snapshots"]["states"][0].update(offset=0), "offset must be"),
    (lambda r: r["snapshots"]["states"][0].update(offset=10**9), "offset must be"),
    (lambda r: r["snapshots"]["states"][0].update(digest="xyz"), "digest must be"),
    (lambda r: r["snapshots"]["states"][0]["arrays"].pop("wkv"), "snapshot 1 must hold the arrays"),
    (lambda r: r.update(bans=["ok", ""]), "banned phrase 2"),
    (lambda r: r.update(bans="突然"), "must be a list"),
    (lambda r: r.update(steering={"memory": 3}), "memory must be text"),
    (lambda r: r.update(steering={"lore": [{"keys": "剑"}]}), "has no text"),
])
def test_bad_version_2_fields_are_one_line(reader, change, words):
    doc = Document([Span(WRITER, book(3))])
    doc.state_at(doc.text.index("第2章"), reader, pin=True)
    start = doc.state_at_end(reader)
    doc.append(Span(MODEL, "三体\n", seed=1, settings={}, start=start))
    record = json.loads(json.dumps(doc.to_json(fingerprint="abc", with_state=True)))
    change(record)
    with pytest.raises(SessionFileError) as error:
        Document.from_json(record, "s.json", fingerprint="abc", zero_state=reader.backend.zero_state(1))
    assert words in str(error.value) and str(error.value).startswith("s.json: ") and "\n" not in str(error.value)


def test_steering_and_bans_are_their_own_part_of_the_session(tmp_path, reader):
    steering = Steering(memory="记忆：林远是剑客。", note="写得紧张些。", lorebook=Lorebook((parse_line("剑: 青锋剑。"),)))
    doc = Document([Span(WRITER, OPENING)])
    again, path = load_again(doc, reader, tmp_path, steering=steering, bans=("突然", "不由得"))
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["steering"] == steering.to_json() and record["bans"] == ["突然", "不由得"]
    assert "记忆" not in "".join(s["text"] for s in record["spans"])
    assert again.saved_steering == steering and again.saved_bans == ("突然", "不由得")
    assert again.text == OPENING


def test_a_version_1_session_still_loads(reader, tmp_path):
    doc = Document([Span(WRITER, OPENING)])
    start = doc.state_at_end(reader)
    doc.append(Span(MODEL, "三体\n", seed=7, settings={"temperature": 1.0}, start=start))
    end = doc.state_at_end(reader)
    record = doc.to_json(fingerprint="abc", with_state=True, length=40)
    v1 = {k: v for k, v in record.items() if k not in ("snapshots", "steering", "bans")}
    v1["version"] = 1
    v1["steering"] = {"memory": 5}  # a version 1 file has no steering part: whatever is there is not read
    again = Document.from_json(v1, "v1.json", fingerprint="abc", zero_state=reader.backend.zero_state(1))
    assert again.text == doc.text and again.saved_length == 40
    assert again.saved_steering is None and again.saved_bans is None
    np.testing.assert_array_equal(again.known_end_state().logits, end.logits)
    for version in (0, 3, True, "2"):
        with pytest.raises(SessionFileError, match="is not supported"):
            Document.from_json({**v1, "version": version}, "v.json")
