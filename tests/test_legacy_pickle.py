"""Reading `.pth` files with the restricted unpickler: the pickled-module release loads to the same weights
as the plain state dict, and a pickle that wants to run anything is refused before it runs."""

from __future__ import annotations

import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from helpers import DATA, RunsAShellCommand, save_original_module_with_payload

from ai_writer.errors import ModelFileError
from ai_writer.models.formats import recognise
from ai_writer.models.aiwriter.restricted_pickle import TensorShape, UnsafePickleError, read_pth

HERE = DATA / "aiwriter"


def test_the_pickled_module_gives_the_state_dict_bit_for_bit():
    plain = read_pth(HERE / "a_tiny_state_dict.pth")
    module = read_pth(HERE / "a_tiny_pickled_module.pth")
    assert list(module) == list(plain)  # the same keys in state_dict() order
    assert all(module[k].dtype == np.float32 and np.array_equal(module[k], plain[k]) for k in plain)
    numpy_copy = np.load(HERE / "a_tiny_state_dict.tensors.npz")
    assert set(numpy_copy.files) == set(plain) and all(np.array_equal(plain[k], numpy_copy[k]) for k in plain)
    with pytest.raises(Exception, match="src.model.GPT"):  # what torch's own safe loader says about it
        torch.load(HERE / "a_tiny_pickled_module.pth", weights_only=True)


def test_plain_generation_b_files_equal_torch_load():
    for name in ("b_on_tiny.pth", "b_off_tiny.pth"):
        ours, theirs = read_pth(HERE / name), torch.load(HERE / name, weights_only=True)
        assert list(ours) == list(theirs)
        assert all(np.array_equal(ours[k], theirs[k].numpy()) for k in theirs)


def test_shapes_only_reads_no_storage(tmp_path):
    path = tmp_path / "no_storage.pth"
    with zipfile.ZipFile(HERE / "a_tiny_pickled_module.pth") as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            if "/data/" not in item.filename:
                target.writestr(item, source.read(item))
    shapes = read_pth(path, shapes_only=True)
    assert shapes["blocks.1.attn.time_w"] == TensorShape((2, 16)) and shapes["tok_emb.weight"].shape == (50, 32)
    assert recognise(path) == "aiwriter-window"
    with pytest.raises(ModelFileError, match="lacks its storage"):
        read_pth(path)


def test_half_bfloat16_views_and_shared_storages_become_float32(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7
    path = tmp_path / "mixed.pth"
    torch.save(OrderedDict(half=base.half(), bf16=base.bfloat16(), view=base.t(), part=base[1:, 2:], whole=base),
               path)
    got = read_pth(path)
    np.testing.assert_array_equal(got["half"], base.half().float().numpy())
    np.testing.assert_array_equal(got["bf16"], base.bfloat16().float().numpy())
    np.testing.assert_array_equal(got["view"], base.t().numpy())
    np.testing.assert_array_equal(got["part"], base[1:, 2:].numpy())
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in got.values())


def test_a_pickle_that_runs_a_shell_command_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"emb.weight": torch.zeros(2, 2), "payload": RunsAShellCommand(marker)}, path)
    with pytest.raises(UnsafePickleError) as refused:
        read_pth(path, shapes_only=True)
    message = str(refused.value)
    assert "\n" not in message and "refused" in message and "system" in message and str(path) in message
    with pytest.raises(UnsafePickleError):
        read_pth(path)
    assert recognise(path) == "pth"  # no original class in it: left to the ordinary (also safe) loader
    assert not marker.exists()


def test_an_original_looking_module_with_a_payload_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    path = tmp_path / "wangwen-2022-02-15.pth"
    save_original_module_with_payload(path, marker, monkeypatch)
    with pytest.raises(UnsafePickleError, match=r"refused to load: its pickle wants to import (os|posix)\.system"):
        recognise(path)  # the original class came first: refused here, naming the real culprit
    assert not marker.exists()


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_or_foreign_files_are_one_line_errors(tmp_path, cut):
    data = (HERE / "b_off_tiny.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ModelFileError) as error:
        read_pth(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ModelFileError, match="not a PyTorch checkpoint"):
        read_pth(text)


@pytest.mark.parametrize("decay_shape, kind", [((8, 1), "aiwriter-rnn"), ((8,), "pth"), ((2, 4), "pth"), ((1, 1, 8), "pth")])
def test_generations_are_told_apart_by_their_keys(tmp_path, decay_shape, kind):
    """A `_new_` model has (C, 1) decays; RWKV-4, -5 and -6 checkpoints (C,), (H, N), (1, 1, C) are not one."""
    path = tmp_path / "m.pth"
    torch.save({"emb.weight": torch.zeros(50, 8), "blocks.0.att.time_decay": torch.zeros(decay_shape)}, path)
    assert recognise(path) == kind


def test_other_models_keep_their_own_loader(tiny_model, tmp_path):
    assert recognise(tiny_model) == "pth"  # an RWKV-7 .pth
    with pytest.raises(ModelFileError, match="no such model file"):
        recognise(tmp_path / "missing.pth")
    assert recognise(HERE / "a_tiny_state_dict.pth") == "aiwriter-window"
    assert recognise(HERE / "b_off_tiny.pth") == "aiwriter-rnn"
