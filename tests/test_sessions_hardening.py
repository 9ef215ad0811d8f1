"""Session files from a hostile or damaged source (issue 15, item 6): every array and setting is checked on
load, a bad session is one line (SessionFileError), a damaged autosave is moved aside and kept, and the REPL
starts all the same. Each finding has its own test; a property-based fuzz (hypothesis) keeps it so."""

from __future__ import annotations

import base64
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pexpect
import pytest
from helpers import ROOT, cli_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai_writer.backends.open import load_model
from ai_writer.generation.reading import Reader
from ai_writer.story.document import MODEL, WRITER, Document, SessionFileError, Span

OPENING = "\n这是一颗魔法，林黛玉竟如此精妙。"
FINGERPRINT = "tiny-model"


@pytest.fixture(scope="module")
def loaded(tiny_model, tiny_onnx_cache):
    return load_model(tiny_model, backend="cpu", threads=1, onnx_cache=tiny_onnx_cache)


@pytest.fixture(scope="module")
def reader(loaded):
    return Reader(loaded.backend, loaded.tokenizer)


@pytest.fixture(scope="module")
def good_record(reader) -> dict:
    """A valid session with its saved model state (an ONNX Runtime state: att_shift, wkv, ffn_shift)."""
    doc = Document([Span(WRITER, OPENING)])
    start = doc.state_at_end(reader)
    doc.append(Span(MODEL, "三体舰队\n", seed=1, settings={"temperature": 1.0}, start=start))
    doc.state_at_end(reader)
    from ai_writer.generation.sampler import SamplerSettings

    return doc.to_json(settings=SamplerSettings(), length=30, fingerprint=FINGERPRINT, with_state=True)


def load(record, loaded, reader) -> Document:
    return Document.from_json(record, "s.json", fingerprint=FINGERPRINT, zero_state=reader.empty_state(),
                              vocab_size=loaded.config.vocab_size)


def refused(record, loaded, reader) -> str:
    with pytest.raises(SessionFileError) as caught:
        load(record, loaded, reader)
    message = str(caught.value)
    assert message.startswith("s.json: ") and "\n" not in message and len(message) < 300
    return message


def test_the_good_session_loads_with_its_state(good_record, loaded, reader):
    doc = load(copy.deepcopy(good_record), loaded, reader)
    assert doc.text == OPENING + "三体舰队\n" and doc.known_end_state() is not None
    logits, _ = loaded.backend.forward([[1]], doc.known_end_state().state)
    assert np.isfinite(logits).all()


def _array(record, name):
    return record["state"]["arrays"][name]


@pytest.mark.parametrize("dtype", ["<U1", "O", "float64", "int64", "(1000000000,)f4", "float16"])
def test_a_state_array_of_another_dtype_is_refused(good_record, loaded, reader, dtype):
    """"<U1" reached ONNX Runtime and segfaulted it (exit 139); "O" and the rest were tracebacks."""
    record = copy.deepcopy(good_record)
    _array(record, "wkv")["dtype"] = dtype
    assert "must be float32" in refused(record, loaded, reader)


@pytest.mark.parametrize("shape", [[1], [2, 2, 2, 32, 32], [2, 1, 2, 32, 16], [-1, 1, 2, 32, 32], "x",
                                   [2, 1, 2, 32, 32.0], [10**12, 1, 1, 1, 1]])
def test_a_state_array_of_another_shape_is_refused(good_record, loaded, reader, shape):
    """The tiny model's wkv is (2, 1, 2, 32, 32): layers, one row, heads, head size twice."""
    record = copy.deepcopy(good_record)
    _array(record, "wkv")["shape"] = shape
    assert "must have the shape" in refused(record, loaded, reader)


def test_bad_base64_and_a_wrong_byte_count_are_refused(good_record, loaded, reader):
    record = copy.deepcopy(good_record)
    data = _array(record, "att_shift")["data"]
    _array(record, "att_shift")["data"] = "!" + data[1:]
    assert "not valid base64" in refused(record, loaded, reader)
    _array(record, "att_shift")["data"] = data[:-8]
    assert "cannot hold" in refused(record, loaded, reader)
    _array(record, "att_shift")["data"] = 12
    assert "not base64 text" in refused(record, loaded, reader)


def test_a_missing_or_extra_array_is_refused(good_record, loaded, reader):
    record = copy.deepcopy(good_record)
    del record["state"]["arrays"]["ffn_shift"]
    assert "must hold the arrays att_shift, wkv, ffn_shift" in refused(record, loaded, reader)
    record = copy.deepcopy(good_record)
    record["state"]["arrays"]["extra"] = record["state"]["arrays"]["wkv"]
    assert "must hold the arrays" in refused(record, loaded, reader)
    record["state"]["arrays"] = []
    assert "must hold the arrays" in refused(record, loaded, reader)


def test_nan_logits_and_a_foreign_last_token_are_refused(good_record, loaded, reader):
    record = copy.deepcopy(good_record)
    nan = np.full(loaded.config.vocab_size, np.nan, dtype=np.float32)
    record["state"]["logits"]["data"] = base64.b64encode(nan.tobytes()).decode()
    assert "NaN" in refused(record, loaded, reader)
    record = copy.deepcopy(good_record)
    record["state"]["last_token"] = loaded.config.vocab_size
    assert "not a token of this model" in refused(record, loaded, reader)
    record["state"]["last_token"] = True
    assert "not a token of this model" in refused(record, loaded, reader)


@pytest.mark.parametrize("settings, words", [
    ({"temperature": 10**400}, "out of range"),
    ([1, 2], "not a JSON object"),
    ({"temperature": 20}, "temperature must be a number between 0 and 10"),
    ({"temperature": "hot"}, "temperature must be"),
    ({"colour": 1}, "unknown setting 'colour'"),
    ({"top_k": 1.5}, "top_k must be a whole number"),
    ({"top_p": float("nan")}, "top_p must be"),
])
def test_bad_settings_are_refused(good_record, loaded, reader, settings, words):
    record = copy.deepcopy(good_record)
    record["settings"] = settings
    assert words in refused(record, loaded, reader)
    record = copy.deepcopy(good_record)
    record["spans"][1]["settings"] = settings  # a model span's settings too
    assert words in refused(record, loaded, reader)


@pytest.mark.parametrize("change, words", [
    (lambda r: r.update(spans={"a": 1}), "spans are not a list"),
    (lambda r: r["spans"].append("text"), "span 3 is not a JSON object"),
    (lambda r: r["spans"][0].update(author="hacker"), "author must be"),
    (lambda r: r["spans"][0].update(text=None), "text is not a string"),
    (lambda r: r["spans"][1].update(seed=-1), "seed must be"),
    (lambda r: r.update(len=0), "len must be"),
    (lambda r: r.update(len=10**400), "len must be"),
    (lambda r: r.update(state=[1]), "not a JSON object"),
    (lambda r: r.update(version=10**400), "not supported"),
])
def test_other_bad_fields_are_refused(good_record, loaded, reader, change, words):
    record = copy.deepcopy(good_record)
    change(record)
    assert words in refused(record, loaded, reader)


def test_a_file_that_is_not_json_is_one_line(tmp_path):
    for name, data in {"deep.json": "[" * 100000, "digits.json": '{"format": ' + "1" * 5000 + "}",
                       "binary.json": b"\xff\xfe\x00{"}.items():
        path = tmp_path / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        with pytest.raises(SessionFileError) as caught:
            Document.load(path)
        assert "\n" not in str(caught.value) and str(caught.value).startswith(str(path))


# ---- the REPL, in a real pseudo-terminal (the style of test_repl.py) ----------------------------------------


def spawn(tiny_model, *args):
    return pexpect.spawn(sys.executable, ["-m", "ai_writer", "repl", *map(str, args), "--model", str(tiny_model),
                                          "--threads", "1", "--len", "10", "--plain"],
                         cwd=str(ROOT), env=cli_env(), encoding="utf-8", timeout=60, dimensions=(50, 400))


PROMPT = r"\[(\d+) chars \|[^\]]*\]\r\n> "


def damaged_session(good_record) -> str:
    record = copy.deepcopy(good_record)
    record["state"]["model"] = "any"  # the state is not used: the damage is elsewhere
    record["settings"] = {"temperature": 10**400}
    return json.dumps(record, ensure_ascii=False)


def test_a_damaged_autosave_is_moved_aside_and_the_repl_starts(tiny_model, tmp_path, good_record):
    story = tmp_path / "story.txt"
    story.write_text("林黛玉竟如此精妙。\n", encoding="utf-8")
    autosave = tmp_path / "story.txt.session.json"
    damaged = damaged_session(good_record)
    autosave.write_text(damaged, encoding="utf-8")
    child = spawn(tiny_model, story)
    child.expect(r"Error: the autosaved session cannot be resumed: .*temperature is out of range")
    child.expect(r"it is kept as (.*story\.txt\.session\.json\.damaged);")
    child.expect(PROMPT)
    assert int(child.match.group(1)) == len("\n林黛玉竟如此精妙。")  # the story file was opened
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    aside = tmp_path / "story.txt.session.json.damaged"
    assert aside.read_text(encoding="utf-8") == damaged  # kept as it was: its story text is not lost
    assert json.loads(autosave.read_text(encoding="utf-8"))["spans"][0]["text"] == "\n林黛玉竟如此精妙。"
    assert "Traceback" not in child.before


def test_a_second_damaged_autosave_does_not_overwrite_the_first(tmp_path):
    from ai_writer.story.document import move_aside

    for n in range(3):
        path = tmp_path / "auto.json"
        path.write_text(f"damaged {n}", encoding="utf-8")
        move_aside(path)
    assert [(tmp_path / name).read_text(encoding="utf-8") for name in
            ("auto.json.damaged", "auto.json.damaged-2", "auto.json.damaged-3")] == ["damaged 0", "damaged 1",
                                                                                     "damaged 2"]


def test_open_of_a_bad_session_is_one_line_and_the_repl_goes_on(tiny_model, tmp_path):
    story = tmp_path / "story.txt"
    story.write_text("林黛玉\n", encoding="utf-8")
    child = spawn(tiny_model, story, "--session", tmp_path / "auto.json")
    child.expect(PROMPT)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    child.sendline(f"/save {good}")
    child.expect(PROMPT)
    record = json.loads(good.read_text(encoding="utf-8"))
    record["state"]["arrays"]["wkv"]["dtype"] = "<U1"  # with this model's fingerprint: the segfault of item 6
    bad.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    child.sendline(f"/open {bad}")
    child.expect(r"Error: .*bad\.json: the saved model state: array 'wkv' must be float32, got <U1\r\n")
    child.expect(PROMPT)
    assert int(child.match.group(1)) == len("\n林黛玉")  # the story is as it was
    child.sendline("")  # and the model still writes
    child.expect(PROMPT)
    assert int(child.match.group(1)) > len("\n林黛玉")
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in child.before


# ---- fuzzing: hostile session files -------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)


def _paths(record, prefix=()):
    """Every place in a JSON record that a fuzzed value can replace."""
    yield prefix
    if isinstance(record, dict):
        for key, value in record.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(record, list):
        for i, value in enumerate(record):
            yield from _paths(value, prefix + (i,))


def _replace(record, path, value):
    if not path:
        return value
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return record


@st.composite
def mutated_sessions(draw, good):
    record = copy.deepcopy(good)
    places = [p for p in _paths(record) if not (p and p[-1] == "data")]  # state data: a strategy of its own
    for _ in range(draw(st.integers(1, 3))):
        record = _replace(record, draw(st.sampled_from(places)), draw(JSON))
        if not isinstance(record, (dict, list)):
            break
        places = list(_paths(record))
    return record


def _fuzz_sessions(good_record, loaded, reader, data):
    record = data.draw(mutated_sessions(good_record))
    try:
        doc = load(record, loaded, reader)
    except SessionFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("s.json: ")
        return
    state = doc.known_end_state()
    if state is not None:  # whatever passed the checks runs in the model without harm
        logits, _ = loaded.backend.forward([[state.last_token]], state.state)
        assert np.isfinite(logits).all()


@settings(database=None, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_session_fields(good_record, loaded, reader, data):
    _fuzz_sessions(good_record, loaded, reader, data)


@settings(database=None, max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["att_shift", "wkv", "ffn_shift"]), dtype=st.sampled_from(
    ["float32", "<U1", "O", "float64", "int8", "V4", "<f4", "f4,f4", "bool"]),
    shape=st.lists(st.integers(-2, 70), max_size=6), data=st.binary(max_size=300) | st.text(max_size=40))
def test_fuzz_state_arrays(good_record, loaded, reader, name, dtype, shape, data):
    record = copy.deepcopy(good_record)
    array = _array(record, name)
    array.update(dtype=dtype, shape=shape, data=base64.b64encode(data).decode() if isinstance(data, bytes) else data)
    try:
        doc = load(record, loaded, reader)
    except SessionFileError as exc:
        assert "\n" not in str(exc)
        return
    logits, _ = loaded.backend.forward([[1]], doc.known_end_state().state)
    assert np.isfinite(logits).all()


@settings(database=None, max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_autosave_is_resumed_or_kept(good_record, loaded, data):
    """At start-up a fuzzed autosave is either resumed or moved aside byte for byte: its story text is never lost."""
    from ai_writer.cli.repl import _offer_resume
    from ai_writer.repl.session import Repl
    from ai_writer.repl.writer import LocalWriter

    record = data.draw(mutated_sessions(good_record))
    text = json.dumps(record, ensure_ascii=False) if data.draw(st.booleans()) else \
        json.dumps(record)[: data.draw(st.integers(0, 400))]  # or cut short, as a crash mid-write would
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "auto.json"
        path.write_text(text, encoding="utf-8")
        repl = Repl(LocalWriter(loaded), _SilentUI(), settings=_settings(), length=10, seed=1, session_path=path)
        resumed = _offer_resume(repl, path, resume=True)
        kept = [p for p in Path(folder).iterdir() if p.name.startswith("auto.json.damaged")]
        if resumed:
            assert repl.doc.spans and not kept
        elif kept:
            assert kept[0].read_text(encoding="utf-8") == text and not path.exists()
        else:  # an empty story: nothing to resume, nothing lost
            assert path.exists()


class _SilentUI:
    def info(self, text):
        assert isinstance(text, str)

    def error(self, text):
        assert "\n" not in text.strip()


def _settings():
    from ai_writer.generation.sampler import SamplerSettings

    return SamplerSettings()


@pytest.mark.slow
@settings(database=None, max_examples=700, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_session_fields_long(good_record, loaded, reader, data):
    _fuzz_sessions(good_record, loaded, reader, data)
