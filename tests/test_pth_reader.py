"""The torch-free `.pth` reader (models/pth_archive.py + the restricted unpickler): torch.load's tensors, from a
memory map, without torch; hostile files refused in one line; the cpu path runs a `.pth` with torch blocked."""

from __future__ import annotations

import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, RunsAShellCommand, cli_env

from ai_writer.errors import ModelFileError
from ai_writer.models.aiwriter.restricted_pickle import UnsafePickleError, read_pth
from ai_writer.models.formats import recognise
from ai_writer.models.pth_archive import StoredTensor
from ai_writer.models.tensors import open_tensors

torch = pytest.importorskip("torch")

NO_TORCH = "import sys; sys.modules['torch'] = None; from ai_writer.cli.main import main; main()"  # as if uninstalled


def saved_tensors() -> dict:
    """One tensor of each kind a checkpoint may hold, torch.save'd as they are (views keep their geometry)."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    shared = torch.arange(40, dtype=torch.float32)
    return {
        "float32": torch.randn(3, 5, generator=g),
        "float16": torch.randn(4, 4, generator=g).half(),
        "bfloat16": torch.randn(7, 3, generator=g).bfloat16(),
        "float64": torch.randn(2, 3, generator=g).double(),
        "int64": torch.arange(-5, 7).reshape(3, 4),
        "bool": torch.tensor([True, False, True]),
        "uint16": torch.arange(9).to(torch.uint16).reshape(3, 3),  # torch writes it with _rebuild_tensor_v3
        "transposed": base.t(),  # non-contiguous
        "strided": base[1:5, ::3],  # an offset into its storage, and strides
        "bf16 strided": torch.randn(5, 6, generator=g).bfloat16()[:, 1::2],
        "offset a": shared[3:11],  # two tensors on one storage
        "offset b": shared[20:].view(4, 5),
        "empty": torch.zeros(0, 5),
        "scalar": torch.tensor(3.5),
        "bf16 scalar": torch.tensor(-1.25).bfloat16(),
        "parameter": torch.nn.Parameter(torch.ones(2, 2)),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("pth") / "kinds.pth"
    tensors = saved_tensors()
    torch.save(tensors, path)
    return path, torch.load(path, weights_only=True)


def bits(tensor) -> np.ndarray:
    """A tensor's values as numpy sees them: bfloat16 as its uint16 bits."""
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    if tensor.dtype == torch.uint16:
        return tensor.to(torch.int32).numpy().astype(np.uint16)
    return tensor.numpy()


def test_the_reader_gives_exactly_torch_loads_tensors(saved):
    path, expected = saved
    got = read_pth(path, stored=True)
    assert list(got) == list(expected)
    for key, tensor in expected.items():
        stored = got[key]
        assert isinstance(stored, StoredTensor)
        assert stored.dtype == str(tensor.dtype).removeprefix("torch."), key
        assert stored.shape == tuple(tensor.shape), key
        assert np.array_equal(stored.array, bits(tensor.detach())), key
        assert not stored.array.flags.writeable  # a view of the mapped file, never written through
        if tensor.is_floating_point():
            widened = stored.to_numpy("float32")
            assert widened.flags.c_contiguous and widened.flags.writeable and widened.dtype == np.float32
            assert np.array_equal(widened, tensor.detach().float().numpy()), key
            assert np.array_equal(stored.to_numpy("float16"), tensor.detach().half().numpy()), key


def test_storages_are_mapped_not_copied(saved):
    path, _ = saved
    got = read_pth(path, stored=True)
    assert np.shares_memory(got["offset a"].array, got["offset b"].array) is False  # disjoint parts of one storage
    assert got["offset a"].array.base is not None and got["offset a"].mapped is got["float32"].mapped
    begin, end = got["offset a"].span
    assert end - begin == 8 * 4 and got["offset b"].span[0] - begin == 17 * 4  # elements 3..10 and 20.. of one storage
    with open(path, "rb") as f:
        f.seek(begin)
        assert np.array_equal(np.frombuffer(f.read(end - begin), "<f4"), np.arange(3, 11, dtype=np.float32))


def test_the_float32_reading_and_the_tensor_source_agree_with_torch(saved):
    path, expected = saved
    plain = read_pth(path)  # the original AI-Writer models' reading: every tensor a new float32 array
    assert all(a.dtype == np.float32 and a.flags.writeable for a in plain.values())
    assert np.array_equal(plain["bfloat16"], expected["bfloat16"].float().numpy())
    source = open_tensors(path, "pth")
    assert source.dtypes["bfloat16"] == "bfloat16" and source.shapes["strided"] == (4, 3)
    for key in ("float32", "bfloat16", "transposed", "bf16 strided", "empty", "scalar"):
        assert np.array_equal(source.read(key), expected[key].float().numpy()), key
    with pytest.raises(ModelFileError, match="tensor 'int64' is int64, not floating point"):
        source.read("int64")


def test_shapes_only_reads_no_storage(saved, tmp_path):
    path, expected = saved
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tmp_path / "bare.pth", "w") as out:
        for info in source.infolist():
            if "/data/" not in info.filename:  # the storages left out: a shapes-only read never needs them
                out.writestr(info, source.read(info))
    shapes = read_pth(tmp_path / "bare.pth", shapes_only=True)
    assert {key: value.shape for key, value in shapes.items()} == {k: tuple(t.shape) for k, t in expected.items()}


# ---- hostile and broken files: one line naming the file, nothing run ------------------------------------------


def one_line(action) -> str:
    with pytest.raises(ModelFileError) as caught:
        action()
    message = str(caught.value)
    assert "\n" not in message
    return message


def rewritten(path: Path, out: Path, *, compress: bool = False, drop: str | None = None,
              pickle_bytes: bytes | None = None) -> Path:
    """`path`'s zip written again: its members deflated, one left out, or data.pkl replaced."""
    with zipfile.ZipFile(path) as source, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            if drop is not None and info.filename.endswith(drop):
                continue
            data = source.read(info)
            if pickle_bytes is not None and info.filename.endswith("/data.pkl"):
                data = pickle_bytes
            target.writestr(info.filename, data)
    return out


class _Storage:
    def __init__(self, key: str, numel: int):
        self.key, self.numel = key, numel


class _Tensor:
    """Pickles as torch pickles a tensor, with any geometry (torch itself would refuse to make it)."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return "storage", torch.FloatStorage, obj.key, "cpu", obj.numel
        return None


def hand_pickled(tensors: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(tensors)
    return buffer.getvalue()


@pytest.fixture()
def plain(tmp_path) -> Path:
    path = tmp_path / "plain.pth"
    torch.save({"emb.weight": torch.arange(8, dtype=torch.float32)}, path)  # storage "0": 8 floats
    return path


def test_a_pickle_that_imports_os_system_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "hostile.pth"
    torch.save({"emb.weight": torch.zeros(2), "x": RunsAShellCommand(marker)}, path)
    for action in (lambda: read_pth(path, stored=True), lambda: open_tensors(path, "pth")):
        with pytest.raises(UnsafePickleError) as caught:
            action()
        assert "wants to import posix.system" in str(caught.value) or "os.system" in str(caught.value)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert not marker.exists()


def test_a_compressed_storage_is_refused(plain, tmp_path):
    path = rewritten(plain, tmp_path / "deflated.pth", compress=True)
    assert "storage plain/data/0 is compressed" in one_line(lambda: read_pth(path, stored=True))


def test_a_truncated_file_is_refused(plain, tmp_path):
    data = plain.read_bytes()
    for size in (0, 10, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{size}.pth"
        path.write_bytes(data[:size])
        assert str(path) in one_line(lambda: read_pth(path, stored=True))


def test_a_missing_storage_is_refused(plain, tmp_path):
    path = rewritten(plain, tmp_path / "missing.pth", drop="/data/0")
    assert "lacks its storage plain/data/0" in one_line(lambda: read_pth(path, stored=True))


@pytest.mark.parametrize("offset, size, stride, message", [
    (8, (4,), (1,), "reaches past the end of its storage"),  # an offset beyond the 8 elements
    (5, (4,), (1,), "reaches past the end of its storage"),
    (0, (3, 3), (3, 1), "a tensor of 9 elements on a storage of 8"),  # a shape beyond the storage
    (0, (2, 2), (-1, 1), "negative size or stride"),
])
def test_a_tensor_beyond_its_storage_is_refused(plain, tmp_path, offset, size, stride, message):
    pickled = hand_pickled({"emb.weight": _Tensor(_Storage("0", 8), offset, size, stride)})
    path = rewritten(plain, tmp_path / "beyond.pth", pickle_bytes=pickled)
    assert message in one_line(lambda: read_pth(path, stored=True))


def test_a_storage_larger_than_its_member_is_refused(plain, tmp_path):
    pickled = hand_pickled({"emb.weight": _Tensor(_Storage("0", 10**6), 0, (10**6,), (1,))})
    path = rewritten(plain, tmp_path / "large.pth", pickle_bytes=pickled)
    assert "holds 32 bytes, expected 4000000" in one_line(lambda: read_pth(path, stored=True))


def test_the_legacy_torch_format_is_refused_in_one_line(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"emb.weight": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    for action in (lambda: recognise(path), lambda: read_pth(path)):
        message = one_line(action)
        assert "legacy format of torch before 1.6" in message and "save it again with torch.save" in message


# ---- the streaming export and the cpu path, without torch -----------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_export_of_a_pth_is_the_export_of_its_safetensors(tmp_path, precision):
    import onnx
    from onnx import numpy_helper
    from rwkv7_factory import write_random_rwkv7
    from safetensors.torch import save_file

    from ai_writer.export.onnx import export_file

    tensors = write_random_rwkv7(tmp_path / "m.pth", n_layer=2, n_embd=64, head_size=32, vocab_size=50, seed=5,
                                 dtype=torch.bfloat16)
    save_file(tensors, str(tmp_path / "m.safetensors"))
    weights = {}
    for kind in ("pth", "safetensors"):
        (tmp_path / kind).mkdir()
        out = export_file(tmp_path / f"m.{kind}", tmp_path / kind / "m.onnx", precision, kind=kind, source="same")
        model = onnx.load(str(out))
        weights[kind] = {init.name: numpy_helper.to_array(init, base_dir=str(out.parent))
                         for init in model.graph.initializer}
    assert weights["pth"].keys() == weights["safetensors"].keys() and len(weights["pth"]) > 20
    for name, array in weights["pth"].items():
        assert np.array_equal(array, weights["safetensors"][name]), name


def test_the_cpu_backend_runs_a_pth_without_torch(tiny_model, tmp_path):
    env = cli_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    command = [sys.executable, "-c", NO_TORCH, "continue", "--model", str(tiny_model), "--len", "12", "--seed", "1",
               "--threads", "1"]
    wrote = subprocess.run(command, input="林黛玉", capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert wrote.returncode == 0, wrote.stderr
    assert len(wrote.stdout.strip()) >= 6
    refused = subprocess.run(command + ["--backend", "torch-cpu"], input="林黛玉", capture_output=True, text=True,
                             env=env, cwd=ROOT, timeout=300)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == ("Error: the torch-cpu backend needs PyTorch, which is not installed: "
                              "pip install 'ai-writer[torch]'\n")
