"""Named sampling presets in plain words: the one table the CLI, the REPL and the web page share.

Each preset is a set of changes to the built-in `SamplerSettings` defaults, with a name to type
(`--preset steady`, `/preset 稳健`) and a title and one-line description in English and Chinese
for people. `balanced` is the defaults themselves (AI-Writer's rule); `novel` is the setting the
RWKV guide gives for fiction (temperature 1.2, top-p 0.5). GET /api/info serves `as_json()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from ai_writer.errors import SettingsError
from ai_writer.generation.sampler import SamplerSettings


@dataclass(frozen=True)
class Preset:
    name: str  # what is typed: --preset NAME, /preset NAME, the page's value
    title: Mapping[str, str]  # {"en": ..., "zh": ...}: the name shown to people
    description: Mapping[str, str]  # {"en": ..., "zh": ...}: one line on what it does
    changes: Mapping[str, float] = field(default_factory=dict)  # SamplerSettings fields that differ from the defaults

    def settings(self, base: SamplerSettings | None = None) -> SamplerSettings:
        """`base` (the built-in defaults if None) with this preset's changes."""
        return (base or SamplerSettings()).replace(**self.changes)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "title": dict(self.title), "description": dict(self.description),
                "settings": self.settings().as_dict()}


PRESETS: tuple[Preset, ...] = (
    Preset("steady", {"en": "Steady", "zh": "稳健"},
           {"en": "Safe, coherent prose with few surprises.", "zh": "稳妥连贯，少出意外。"},
           MappingProxyType({"temperature": 0.8, "top_p": 0.5, "top_p_newline": 0.8})),
    Preset("balanced", {"en": "Balanced", "zh": "平衡"},
           {"en": "AI-Writer's own setting (the default).", "zh": "AI-Writer 原本的设置（默认）。"}),
    Preset("bold", {"en": "Bold", "zh": "奔放"},
           {"en": "Freer words and turns of plot; it may wander.",
            "zh": "用词和情节更放得开，偶尔会跑题。"},
           MappingProxyType({"temperature": 1.1, "top_p": 0.85, "top_p_newline": 0.95})),
    Preset("novel", {"en": "RWKV novel", "zh": "RWKV 小说"},
           {"en": "The RWKV guide's setting for fiction: temperature 1.2, top-p 0.5.",
            "zh": "RWKV 指南给小说的设置：温度 1.2，top-p 0.5。"},
           MappingProxyType({"temperature": 1.2, "top_p": 0.5})),
)


def names() -> list[str]:
    return [preset.name for preset in PRESETS]


def find(name: str) -> Preset:
    """The preset called `name` (its English name in any case, or its Chinese title); SettingsError names the
    presets when there is none."""
    wanted = name.strip()
    for preset in PRESETS:
        if wanted.lower() == preset.name or wanted in preset.title.values():
            return preset
    raise SettingsError(f"unknown preset {name!r}; the presets are: " +
                        ", ".join(f"{p.name} ({p.title['zh']})" for p in PRESETS))


def matching(settings: SamplerSettings) -> Preset | None:
    """The preset whose settings are exactly `settings`, if any."""
    return next((preset for preset in PRESETS if preset.settings() == settings), None)


def as_json() -> list[dict[str, Any]]:
    """Every preset with its complete settings, in order (GET /api/info's `presets`)."""
    return [preset.as_json() for preset in PRESETS]
