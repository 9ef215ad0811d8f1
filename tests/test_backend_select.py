"""Backend selection: auto's order, precisions per backend, and what to install when one is missing.

The machines here have no GPU, so the NVIDIA check and the provider list are faked.
"""

import pytest

from ai_writer.backends.select import choose
from ai_writer.errors import BackendError

CPU = ["CPUExecutionProvider"]
DML = ["DmlExecutionProvider", "CPUExecutionProvider"]
CUDA_ORT = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def pick(requested="auto", precision=None, *, cuda=False, providers=CPU, torch=True):
    return choose(requested, precision, cuda_check=lambda: cuda, providers=lambda: providers, has_torch=lambda: torch)


def test_auto_prefers_cuda_when_an_nvidia_gpu_is_usable():
    choice = pick(cuda=True, providers=DML)
    assert (choice.backend, choice.precision) == ("cuda", "fp16")
    assert "NVIDIA" in choice.reason


def test_auto_takes_directml_when_its_provider_is_present():
    choice = pick(providers=DML)
    assert (choice.backend, choice.precision) == ("dml", "fp16")
    assert choice.providers == ["DmlExecutionProvider", "CPUExecutionProvider"]
    assert "DirectML" in choice.reason


def test_auto_takes_onnx_runtime_on_the_cpu_otherwise():
    for providers in (CPU, CUDA_ORT):  # onnxruntime-gpu without a usable GPU still runs on the CPU
        choice = pick(providers=providers)
        assert (choice.backend, choice.precision) == ("cpu", "fp32")
        assert choice.providers == ["CPUExecutionProvider"]


def test_auto_falls_back_to_torch_without_onnxruntime():
    choice = pick(providers=None)
    assert choice.backend == "torch-cpu"
    assert "onnxruntime is not installed" in choice.reason


def test_auto_with_nothing_installed_says_what_to_install():
    with pytest.raises(BackendError, match="pip install onnxruntime"):
        pick(providers=None, torch=False)


def test_auto_never_asks_torch_when_onnxruntime_is_there():
    def no_torch_question():
        raise AssertionError("has_torch was called")

    choice = choose("auto", None, cuda_check=lambda: False, providers=lambda: CPU, has_torch=no_torch_question)
    assert choice.backend == "cpu"


@pytest.mark.parametrize(
    "requested, available, hint",
    [
        ("cuda", {}, "NVIDIA GPU"),
        ("dml", {"providers": CPU}, "pip install onnxruntime-directml"),
        ("cpu", {"providers": None}, "pip install onnxruntime"),
    ],
)
def test_a_backend_asked_for_but_missing_names_what_to_install(requested, available, hint):
    with pytest.raises(BackendError, match=f"backend {requested} is not available here.*{hint}"):
        pick(requested, **available)


@pytest.mark.parametrize("requested", ["torch-cpu", "cuda"])
def test_a_torch_backend_without_torch_says_to_install_the_torch_extra(requested):
    with pytest.raises(BackendError) as caught:
        pick(requested, cuda=True, torch=False)
    assert str(caught.value) == (f"the {requested} backend needs PyTorch, which is not installed: "
                                 "pip install 'ai-writer[torch]'")


def test_auto_never_picks_a_torch_backend_without_torch():
    assert pick(cuda=True, torch=False).backend == "cpu"  # a GPU, but no torch to drive it
    with pytest.raises(BackendError, match="install onnxruntime"):
        pick(cuda=True, providers=None, torch=False)


def test_asked_backends_when_present():
    assert pick("cuda", cuda=True).backend == "cuda"
    assert pick("dml", providers=DML).backend == "dml"
    assert pick("cpu").backend == "cpu"
    assert pick("torch-cpu").backend == "torch-cpu"
    assert pick("cpu").reason == "asked for with --backend"


@pytest.mark.parametrize(
    "backend, precision, ok",
    [
        ("cpu", "int8", True), ("cpu", "fp32", True), ("cpu", "fp16", False), ("cpu", "bf16", False),
        ("dml", "fp16", True), ("dml", "fp32", True), ("dml", "int8", False),
        ("cuda", "bf16", True), ("cuda", "fp32", True), ("cuda", "int8", False),
        ("torch-cpu", "bf16", True), ("torch-cpu", "fp16", False),
    ],
)
def test_precision_per_backend(backend, precision, ok):
    kwargs = {"cuda": True, "providers": DML}
    if ok:
        assert pick(backend, precision, **kwargs).precision == precision
    else:
        with pytest.raises(BackendError, match=f"precision {precision} does not run on backend {backend}"):
            pick(backend, precision, **kwargs)


def test_unknown_names_are_refused():
    with pytest.raises(BackendError, match="unknown backend 'gpu'"):
        pick("gpu")
    with pytest.raises(BackendError, match="unknown precision 'int3'"):
        pick("cpu", "int3")
