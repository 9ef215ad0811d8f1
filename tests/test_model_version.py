"""The architecture is read from the checkpoint's keys and shapes, with no environment switch;
layouts ai-writer does not run are one-line errors that say what the file is."""

from __future__ import annotations

import pytest
import torch
from rwkv7_factory import write_random_rwkv7
from rwkv_world_factory import write_random_rwkv

from ai_writer.models.checkpoint import load_checkpoint
from ai_writer.models.config import ModelConfig
from ai_writer.errors import ModelFileError
from ai_writer.models.version import detect_version


def shapes_of(tensors) -> dict:
    return {key: tuple(t.shape) for key, t in tensors.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("versions")
    made = {}
    for version in (4, 5, 6):
        made[version] = folder / f"v{version}.pth"
        write_random_rwkv(made[version], version=version, n_layer=2, n_embd=64, head_size=32, vocab_size=40)
    made[7] = folder / "v7.pth"
    write_random_rwkv7(made[7], n_layer=2, n_embd=64, head_size=32, vocab_size=40)
    return made


@pytest.mark.parametrize("version, name", [(5, "RWKV-5.2"), (6, "RWKV-6"), (7, "RWKV-7")])
def test_each_supported_layout_is_detected_and_loads(files, version, name, monkeypatch):
    monkeypatch.delenv("RWKV_V7_ON", raising=False)  # what the rwkv package would need for RWKV-7
    checkpoint = load_checkpoint(files[version])
    config = checkpoint.config
    assert config.version == version
    assert config.describe().startswith(f"{name} L2-D64 (2 heads of 32)")
    assert (config.n_layer, config.n_embd, config.head_size, config.vocab_size) == (2, 64, 32, 40)
    assert set(config.expected_shapes()) <= set(checkpoint.tensors)


def test_rwkv6_low_rank_widths_are_read_from_the_shapes(tmp_path):
    write_random_rwkv(tmp_path / "m.pth", version=6, n_layer=1, n_embd=64, head_size=32, vocab_size=9, dim_mix=8,
                      dim_decay=24, ffn_dim=96)
    config = load_checkpoint(tmp_path / "m.pth").config
    assert (config.dim_mix, config.dim_w, config.ffn_dim) == (8, 24, 96)


def test_rwkv4_is_refused_with_one_line_that_names_it(files):
    with pytest.raises(ModelFileError) as error:
        load_checkpoint(files[4])
    message = str(error.value)
    assert "\n" not in message and str(files[4]) in message
    assert "RWKV-4 checkpoint, which is not supported" in message and "RWKV-5.2" in message


def test_rwkv5_previews_are_refused(files):
    shapes = shapes_of(torch.load(files[5], weights_only=True))
    no_gate = {k: s for k, s in shapes.items() if "gate" not in k}
    with pytest.raises(ModelFileError, match="RWKV-5.0 preview"):
        detect_version(no_gate, "m.pth")
    one_decay_per_head = {**shapes, "blocks.0.att.time_decay": (2, 1)}
    with pytest.raises(ModelFileError, match="RWKV-5.1 preview"):
        detect_version(one_decay_per_head, "m.pth")


def test_unknown_layouts_are_named(files):
    with pytest.raises(ModelFileError, match="not an RWKV-7 checkpoint, nor an RWKV-6 or RWKV-5.2 one"):
        detect_version({"wte.weight": (4, 4)}, "gpt.pth")
    shapes = shapes_of(torch.load(files[6], weights_only=True))
    stripped = {k: s for k, s in shapes.items() if ".att.time_maa" not in k and ".att.ln_x" not in k}
    with pytest.raises(ModelFileError, match="unknown layout"):
        detect_version(stripped, "m.pth")


def test_a_missing_or_misshapen_tensor_is_named(files, tmp_path):
    tensors = torch.load(files[6], weights_only=True)
    tensors["blocks.1.att.time_maa_w2"] = torch.zeros(5, 32, 63)
    torch.save(tensors, tmp_path / "bad.pth")
    with pytest.raises(ModelFileError, match=r"blocks.1.att.time_maa_w2.*\[5, 32, 63\]"):
        load_checkpoint(tmp_path / "bad.pth")
    del tensors["blocks.1.att.gate.weight"]
    torch.save(tensors, tmp_path / "bad.pth")
    with pytest.raises(ModelFileError, match="blocks.1.att.gate.weight"):
        load_checkpoint(tmp_path / "bad.pth")


def test_the_config_json_round_trips_and_rwkv7_keeps_its_old_form(files):
    for version in (5, 6, 7):
        config = load_checkpoint(files[version]).config
        assert ModelConfig.from_json(config.to_json(), "x") == config
        assert ('"version"' in config.to_json()) == (version != 7)
    old_rwkv7_json = ('{"vocab_size": 40, "n_layer": 2, "n_embd": 64, "head_size": 32, "ffn_dim": 256, "dim_w": 32, '
                      '"dim_a": 32, "dim_v": 32, "dim_g": 32, "ctx_len": 0}')
    assert ModelConfig.from_json(old_rwkv7_json, "x").version == 7
