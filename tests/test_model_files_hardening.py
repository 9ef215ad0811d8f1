"""Model files from a hostile or damaged source (issue 15, items 7 and 8): the config is checked against the
tensors actually present and the file's size before anything is allocated, and every bad file is one line
(exit 2 through the CLI), never a traceback or an out-of-memory kill. A property-based fuzz keeps it so."""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, cli_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai_writer.errors import ModelFileError, VocabularyError
from ai_writer.models.aiwriter.restricted_pickle import _rebuild_tensor, read_pth
from ai_writer.models.checkpoint import NATIVE_FORMAT, load_checkpoint, read_pth_tensors
from ai_writer.models.formats import header_config, recognise
from ai_writer.text.char_tokenizer import CharTokenizer
from ai_writer.text.world_tokenizer import WorldTokenizer

SLACK = 16 * 2**20  # what reading a header may allocate beyond the file's own size


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict | None = None,
                      header_changes: dict | None = None) -> Path:
    """A .safetensors written by hand (float32 tensors), its header optionally changed after the fact."""
    header, offset, blobs = {}, 0, []
    for key, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[key] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    header.update(header_changes or {})
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))
    return path


@pytest.fixture(scope="module")
def tiny_tensors(tiny_model) -> dict[str, np.ndarray]:
    return {key: value.float().numpy() for key, value in read_pth_tensors(tiny_model).items()}


@pytest.fixture(scope="module")
def tiny_config(tiny_tensors) -> dict:
    from ai_writer.models.config import ModelConfig

    return json.loads(ModelConfig.from_tensors({k: v.shape for k, v in tiny_tensors.items()}, "tiny").to_json())


def native(path, tensors, config: dict | str, vocab_size=50) -> Path:
    vocab = json.dumps({str(i): chr(0x4E00 + i) for i in range(vocab_size - 1)} | {str(vocab_size - 1): "\ue083"})
    config = config if isinstance(config, str) else json.dumps(config)
    return write_safetensors(path, tensors, {"format": NATIVE_FORMAT, "config": config, "vocab": vocab})


def one_line(call, error=ModelFileError) -> str:
    """`call()` raises `error` with a one-line message, allocating no more than the slack."""
    tracemalloc.start()
    try:
        with pytest.raises(error) as caught:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    assert peak < SLACK, f"{peak:,} bytes allocated"
    return message


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "ai_writer", *map(str, args)], input=b"\xe6\x9e\x97", cwd=ROOT,
                          env=cli_env(), capture_output=True, timeout=120)


def fails_in_one_line(result, *words):
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.startswith("Error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


# ---- item 7: exhausting memory before any check ------------------------------------------------------------


def test_a_native_config_of_a_billion_layers_stops_before_allocating(tmp_path, tiny_tensors, tiny_config):
    path = native(tmp_path / "billion.safetensors", tiny_tensors, {**tiny_config, "n_layer": 10**9})
    message = one_line(lambda: header_config(path, "safetensors"))
    assert "says 1000000000 layers" in message
    assert "says 1000000000 layers" in one_line(lambda: load_checkpoint(path))


def test_a_native_config_wider_than_the_file_stops_before_allocating(tmp_path, tiny_tensors, tiny_config):
    path = native(tmp_path / "wide.safetensors", tiny_tensors, {**tiny_config, "n_embd": 2**30, "head_size": 2**20})
    assert "bytes of weights but the file has" in one_line(lambda: header_config(path, "safetensors"))


def test_a_pth_key_of_layer_999999999_does_not_build_a_billion_element_set(tmp_path, tiny_model):
    import torch

    tensors = torch.load(tiny_model, weights_only=True)
    tensors["blocks.999999999.x"] = torch.zeros(1)
    path = tmp_path / "far.pth"
    torch.save(tensors, path)
    message = one_line(lambda: header_config(path, "pth"))
    assert "layers are missing: 999999997 of the 1000000000 that the keys number, the first is 2" in message
    assert "layers are missing" in one_line(lambda: load_checkpoint(path))


def _aiwriter_pth(path: Path, emb, compress: bool = False) -> Path:
    """A file shaped like an AI-Writer 2022-02-15 state dict (tok_emb.weight and time_out) holding `emb`."""
    import torch

    torch.save({"tok_emb.weight": emb, "time_out": torch.ones(1, 4, 1)}, path)
    if compress:
        deflated = path.with_suffix(".deflated")
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as out:
            for info in source.infolist():
                out.writestr(info.filename, source.read(info))
        deflated.replace(path)
    return path


def test_an_aiwriter_zero_stride_tensor_is_refused_before_allocating(tmp_path):
    import torch

    path = _aiwriter_pth(tmp_path / "zero-stride.pth", torch.zeros(1).expand(10**6, 10**9))  # 1e15 elements
    assert "a tensor of 1000000000000000 elements on a storage of 1" in one_line(lambda: read_pth(path))
    assert "on a storage of 1" in one_line(lambda: read_pth(path, shapes_only=True))


def test_an_aiwriter_deflated_storage_is_refused_before_allocating(tmp_path):
    import torch

    path = _aiwriter_pth(tmp_path / "deflated.pth", torch.zeros(2**20, 8), compress=True)  # 32 MB in 30 KB
    assert path.stat().st_size < 2**20
    assert "is compressed" in one_line(lambda: read_pth(path))


def test_a_pickle_memo_index_of_gigabytes_is_refused(tmp_path):
    path = tmp_path / "memo.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("memo/data.pkl", b"\x80\x02N" + b"r" + struct.pack("<I", 2**31) + b".")
    assert "stores a value at 2147483648" in one_line(lambda: read_pth(path))
    assert "stores a value" in one_line(lambda: header_config(path, "pth"))


def test_the_model_files_of_item_7_are_one_line_through_the_cli(tmp_path, tiny_tensors, tiny_config):
    import torch

    billion = native(tmp_path / "billion.safetensors", tiny_tensors, {**tiny_config, "n_layer": 10**9})
    fails_in_one_line(run_cli("continue", "--model", billion, "--len", "1"), "billion.safetensors", "layers")
    zero = _aiwriter_pth(tmp_path / "zero.pth", torch.zeros(1).expand(10**6, 10**9))
    fails_in_one_line(run_cli("continue", "--model", zero, "--len", "1"), "zero.pth", "storage of 1")


# ---- item 8: one line and exit 2 instead of tracebacks ------------------------------------------------------


@pytest.mark.parametrize("change, words", [
    ("[" * 100000, "not JSON"),
    ({"head_size": 0}, "head_size 0 is not between 1"),
    ({"version": 9}, "RWKV version 9"),
    ({"n_layer": -1}, "n_layer -1 is not between 1"),
    ({"n_layer": 1e400}, "n_layer is not a whole number"),
    ({"n_embd": "64"}, "n_embd is not a whole number"),
    ({"head_size": 48}, "head_size 48 does not divide n_embd 64"),
    ([], "not a JSON object"),
])
def test_bad_native_configs_are_one_line(tmp_path, tiny_tensors, tiny_config, change, words):
    config = change if isinstance(change, str) else json.dumps(change if isinstance(change, list)
                                                               else {**tiny_config, **change})
    path = native(tmp_path / "bad.safetensors", tiny_tensors, config)
    assert words in one_line(lambda: header_config(path, "safetensors"))
    assert words in one_line(lambda: load_checkpoint(path))


def test_bad_native_configs_exit_2_through_the_cli(tmp_path, tiny_tensors, tiny_config):
    for name, config in {"brackets": "[" * 100000, "version": json.dumps({**tiny_config, "version": 9})}.items():
        path = native(tmp_path / f"{name}.safetensors", tiny_tensors, config)
        fails_in_one_line(run_cli("continue", "--model", path, "--len", "1"), f"{name}.safetensors")


def test_a_vocabulary_key_of_5000_digits_is_one_line(tmp_path):
    table = {"0": "a", "1" * 5000: "b"}
    message = one_line(lambda: CharTokenizer.from_json_text(json.dumps(table), "v.json"), VocabularyError)
    assert "is not an id of a table of 2 entries" in message


def test_a_world_vocabulary_the_rust_tokenizer_rejects_is_read_in_python(tmp_path, capfd):
    """pyrwkv_tokenizer panics (PanicException, a BaseException) on lines it cannot split, such as two spaces
    between the fields: the Python matcher reads the same table, and the panic prints nothing."""
    import pyrwkv_tokenizer

    source = Path(pyrwkv_tokenizer.__file__).parent / "rwkv_vocab_v20230424.txt"
    lines = source.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "spaced.txt"
    path.write_text("\n".join(lines[:300] + ["301  'xyz'  3"]) + "\n", encoding="utf-8")
    tokenizer = WorldTokenizer.from_file(path)
    assert tokenizer.encode("xyzab") == [301, 98, 99]
    assert capfd.readouterr().err == ""


def test_a_pickle_refusal_names_the_real_global_and_prints_no_torch_warning(tmp_path, capfd):
    import os

    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "p4.pth"
    torch.save({"emb.weight": torch.zeros(2, 2), "x": Payload()}, path, pickle_protocol=4)
    message = one_line(lambda: read_pth_tensors(path))
    assert "wants to import posix.system" in message or "wants to import os.system" in message
    assert "operand" not in message
    plain = tmp_path / "plain4.pth"
    torch.save({"emb.weight": torch.zeros(2, 2)}, plain, pickle_protocol=4)
    assert "opcode 149" in one_line(lambda: read_pth_tensors(plain))
    assert capfd.readouterr().err == ""  # torch's "Detected pickle protocol 4" UserWarning is not shown


# ---- fuzzing: hostile headers, configs and tensors ----------------------------------------------------------

CONFIG_VALUES = st.one_of(st.integers(-2**70, 2**70), st.integers(-2, 70), st.sampled_from([0, 1, 5, 6, 7, 9]),
                          st.floats(), st.text(max_size=5), st.none(), st.booleans())
FIELDS = ["vocab_size", "n_layer", "n_embd", "head_size", "ffn_dim", "dim_w", "dim_a", "dim_v", "dim_g",
          "ctx_len", "version", "dim_mix"]


def _fuzz_configs(tmp_path_factory, tiny_tensors, tiny_config, changes):
    folder = tmp_path_factory.mktemp("fuzz-config")
    path = native(folder / "m.safetensors", tiny_tensors, {**tiny_config, **changes})
    tracemalloc.start()
    try:
        config = header_config(path, "safetensors")
    except ModelFileError as exc:
        assert "\n" not in str(exc)
    else:
        config.expected_shapes()  # what a caller then lists: bounded by the file's own keys
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < path.stat().st_size + SLACK


@settings(database=None, max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), CONFIG_VALUES, min_size=1, max_size=4))
def test_fuzz_native_configs(tmp_path_factory, tiny_tensors, tiny_config, changes):
    _fuzz_configs(tmp_path_factory, tiny_tensors, tiny_config, changes)


ENTRY_VALUES = st.recursive(st.none() | st.integers(-2**66, 2**66) | st.text(max_size=6) | st.floats(),
                            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=3), max_leaves=10)


@settings(database=None, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_safetensors_headers(tmp_path_factory, tiny_tensors, tiny_config, data):
    """A header entry replaced by anything: a tensor's shape, dtype, offsets, the metadata, a new key."""
    keys = sorted(tiny_tensors) + ["__metadata__", "blocks.999999999.x", "emb.weight"]
    changes = {data.draw(st.sampled_from(keys)): data.draw(ENTRY_VALUES | st.fixed_dictionaries(
        {"dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "F64", "?"]),
         "shape": st.lists(st.integers(-1, 2**40), max_size=4),
         "data_offsets": st.lists(st.integers(-1, 2**40), min_size=2, max_size=2)}))
        for _ in range(data.draw(st.integers(1, 3)))}
    folder = tmp_path_factory.mktemp("fuzz-header")
    vocab = json.dumps({str(i): chr(0x4E00 + i) for i in range(49)} | {"49": "\ue083"})
    path = write_safetensors(folder / "m.safetensors", tiny_tensors,
                             {"format": NATIVE_FORMAT, "config": json.dumps(tiny_config), "vocab": vocab}, changes)
    tracemalloc.start()
    try:
        for call in (lambda: header_config(path, recognise(path)), lambda: _read_all(path)):
            try:
                call()
            except ModelFileError as exc:
                assert "\n" not in str(exc)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 2 * path.stat().st_size + SLACK


def _read_all(path: Path) -> None:
    from ai_writer.models.tensors import open_tensors

    source = open_tensors(path, "safetensors")
    for key in source.shapes:
        if source.is_float(key):
            source.read(key)


@settings(database=None, max_examples=300, deadline=None)
@given(size=st.lists(st.integers(0, 2**62), max_size=4), stride=st.lists(st.integers(-1, 2**62), max_size=4),
       offset=st.integers(-1, 2**62), numel=st.integers(0, 64))
def test_fuzz_pickled_tensor_geometry(size, stride, offset, numel):
    """The restricted reader's tensor rebuild: a view of the storage it was given, or a refusal; never a copy."""
    storage = np.zeros(numel, dtype=np.float32)
    tracemalloc.start()
    try:
        view = _rebuild_tensor(storage, offset, tuple(size), tuple(stride))
    except pickle.UnpicklingError:
        view = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 2**20
    if view is not None:
        assert view.size <= max(numel, 1) and np.shares_memory(view, storage) or view.size == 0


@settings(database=None, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_pth_pickles(tmp_path_factory, tiny_model, data):
    """data.pkl of the tiny .pth with bytes flipped or cut: the restricted reader (what recognises every .pth)
    returns tensors or refuses in one line, allocating nothing beyond the file."""
    with zipfile.ZipFile(tiny_model) as source:
        entries = {info.filename: source.read(info) for info in source.infolist()}
    name = next(n for n in entries if n.endswith("data.pkl"))
    pickled = bytearray(entries[name])
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(pickled) - 1))
        pickled[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        pickled = pickled[: data.draw(st.integers(0, len(pickled)))]
    path = tmp_path_factory.mktemp("fuzz-pth") / "m.pth"
    with zipfile.ZipFile(path, "w") as out:
        for filename, content in entries.items():
            out.writestr(filename, bytes(pickled) if filename == name else content)
    tracemalloc.start()
    try:
        for shapes_only in (True, False):
            try:
                read_pth(path, shapes_only=shapes_only)
            except ModelFileError as exc:
                assert "\n" not in str(exc)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 2 * path.stat().st_size + SLACK


@pytest.mark.slow
@settings(database=None, max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), CONFIG_VALUES, min_size=1, max_size=6))
def test_fuzz_native_configs_long(tmp_path_factory, tiny_tensors, tiny_config, changes):
    _fuzz_configs(tmp_path_factory, tiny_tensors, tiny_config, changes)
