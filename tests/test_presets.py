"""Sampling presets in plain words (generation/presets.py) and what GET /api/info tells the page: the presets and
every setting's valid range, over a real socket."""

from __future__ import annotations

import math

import pytest
from server_helpers import json_request, running_server

from ai_writer.errors import SettingsError
from ai_writer.generation import presets
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.server.requests import MAX_CHARS, MAX_RUNS, MAX_STOP_CHARS, MAX_STOPS


def test_the_presets():
    assert presets.names() == ["steady", "balanced", "bold", "novel"]
    assert presets.find("balanced").settings() == SamplerSettings()  # today's defaults
    novel = presets.find("novel").settings()
    assert (novel.temperature, novel.top_p) == (1.2, 0.5)  # the RWKV guide's setting for fiction
    assert novel.replace(temperature=1.0, top_p=0.7) == SamplerSettings()  # and nothing else changed
    steady, bold = presets.find("steady").settings(), presets.find("bold").settings()
    assert steady.temperature < 1.0 < bold.temperature and steady.top_p < 0.7 < bold.top_p
    for preset in presets.PRESETS:
        assert set(preset.title) == set(preset.description) == {"en", "zh"}
        assert all(text.strip() for text in [*preset.title.values(), *preset.description.values()])
        assert presets.matching(preset.settings()) is preset


def test_finding_a_preset_by_any_of_its_names():
    assert presets.find("稳健").name == "steady" and presets.find(" Bold ").name == "bold"
    assert presets.find("RWKV 小说").name == "novel"
    with pytest.raises(SettingsError, match=r"unknown preset 'wild'; the presets are: steady \(稳健\), balanced"):
        presets.find("wild")


def test_a_preset_on_other_defaults_changes_only_its_own_settings():
    base = SamplerSettings(top_k=40, presence_penalty=0.3)
    steady = presets.find("steady").settings(base)
    assert (steady.top_k, steady.presence_penalty, steady.temperature) == (40, 0.3, 0.8)
    assert presets.matching(steady) is None


def test_the_json_shape():
    shown = presets.as_json()
    assert [p["name"] for p in shown] == presets.names()
    assert shown[0]["title"] == {"en": "Steady", "zh": "稳健"}
    assert all(set(p["settings"]) == set(SamplerSettings.RANGES) for p in shown)  # complete: the page sets them all


@pytest.fixture(scope="module")
def server(tiny_model, one_torch_thread):
    with running_server(tiny_model, max_batch=6) as serving:
        yield serving


def test_info_serves_the_presets_and_every_range(server):
    status, _, info = json_request(server, "GET", "/api/info")
    assert status == 200
    assert info["presets"] == presets.as_json()
    ranges = info["ranges"]
    for name, (low, high) in SamplerSettings.RANGES.items():
        expected_high = None if math.isinf(high) else high
        assert (ranges[name]["min"], ranges[name]["max"]) == (low, expected_high), name
        assert ranges[name]["integer"] is isinstance(getattr(SamplerSettings(), name), int)
    assert ranges["top_k"] == {"min": 0, "max": None, "integer": True}
    assert ranges["length"] == {"min": 1, "max": MAX_CHARS, "integer": True}
    assert ranges["variants"] == {"min": 1, "max": min(MAX_RUNS, 6), "integer": True}  # the server's --batch
    assert ranges["seed"] == {"min": 0, "max": 2**63 - 1, "integer": True}
    assert info["stop"] == {"strings": MAX_STOPS, "chars": MAX_STOP_CHARS}


@pytest.mark.parametrize("name", ["temperature", "top_p", "penalty_decay", "length", "variants"])
def test_the_ranges_are_the_ones_the_server_enforces(server, name):
    _, _, info = json_request(server, "GET", "/api/info")
    high = info["ranges"][name]["max"]
    step = 1 if info["ranges"][name]["integer"] else 0.01
    settings = {name: high} if name != "variants" else {}
    body = {"text": "林黛玉", "settings": {"length": 1, **settings}, "stream": False}
    if name == "variants":
        body["variants"] = high
    if name != "length":  # (writing 10,000 characters takes a while; the 10,001 refused below is the point)
        assert json_request(server, "POST", "/api/continue", body)[0] == 200
    if name == "variants":
        body["variants"] = high + step
    else:
        body["settings"][name] = high + step
    status, _, error = json_request(server, "POST", "/api/continue", body)
    assert status == 422 and error["error"]["param"] in (name, f"settings.{name}")


def test_a_preset_sent_as_settings_is_accepted(server):
    for preset in presets.PRESETS:
        settings = {"length": 2, "seed": 1, **preset.settings().as_dict()}
        body = {"text": "林黛玉", "settings": settings, "stream": False}
        status, _, answer = json_request(server, "POST", "/api/continue", body)
        assert status == 200 and len(answer["variants"][0]["text"]) == 2


def _cli(*args: str, stdin: str = "林黛玉笑道：“你们在说什么？”\n"):
    import subprocess
    import sys

    from helpers import ROOT, cli_env

    return subprocess.run([sys.executable, "-m", "ai_writer", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, env=cli_env(), timeout=300)


def test_continue_preset_is_its_settings_and_options_given_apply_on_top():
    common = ("continue", "--seed", "3", "--len", "40", "-q")
    by_name = _cli(*common, "--preset", "novel").stdout
    assert by_name == _cli(*common, "--temperature", "1.2", "--top-p", "0.5").stdout
    assert _cli(*common, "--preset", "RWKV 小说").stdout == by_name  # the Chinese title names it too
    assert _cli(*common, "--preset", "novel", "--temperature", "0.3").stdout == \
        _cli(*common, "--temperature", "0.3", "--top-p", "0.5").stdout
    bad = _cli(*common, "--preset", "nope")
    assert bad.returncode == 2 and "unknown preset 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_repl_preset_lists_and_sets(tmp_path):
    done = _cli("repl", "--plain", "--session", str(tmp_path / "s.json"),
                stdin="林黛玉笑道\n/preset\n/preset 稳健\n/settings\n/preset nope\n/quit\n")
    steady = presets.find("steady").settings()
    assert "* balanced" in done.stdout + done.stderr
    assert f"temperature = {steady.temperature:g}" in done.stdout
    assert "unknown preset 'nope'" in done.stdout + done.stderr
