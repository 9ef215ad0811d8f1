"""What the HTTP API accepts: request bodies turned into validated `Job` specs, or an `ApiError`.

Two request shapes: ai-writer's own `POST /api/continue` and OpenAI's `POST /v1/completions`.
Both become a `JobSpec`; this module knows nothing of sockets or the model. Wrong JSON or
wrong types are 400, settings out of range 422, the OpenAI features we cannot honour 422.

Both take the same steering fields (DESIGN.md §11): `memory` and `note` (text), `lore` (lorebook
entries in any shape `Lorebook.from_json` reads: ours, KoboldAI's or SillyTavern's), `lore_scan`
(characters of the prompt's end searched for lore keys), `ban` (phrases never written) and
`loop_guard` (rewind out of a loop; on by default). `limits()` lists their bounds for GET /api/info.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from typing import Any

from ai_writer.errors import InputTextError, SettingsError
from ai_writer.generation.guards import MAX_PHRASE_CHARS, MAX_PHRASES, Guards
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.story import lorebook
from ai_writer.story.steering import MAX_MEMORY_CHARS, MAX_NOTE_CHARS, MAX_SCAN, Steering
from ai_writer.text.cleanup import clean_opening

MAX_CHARS = 10_000  # longest continuation one request may ask for
MAX_RUNS = 16  # variants (n) per prompt
MAX_PROMPTS = 16  # prompts in one OpenAI request
MAX_STOPS = 4  # stop strings in one request
MAX_STOP_CHARS = 256  # characters in one stop string
SAMPLING_NAMES = tuple(SamplerSettings.RANGES)
STEERING_NAMES = ("memory", "note", "lore", "lore_scan", "ban", "loop_guard")


class ApiError(Exception):
    """An error answered as `{"error": {"message", "type", "param"}}` with an HTTP status."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "not_found_error", 405: "invalid_request_error", 408: "timeout_error", 413: "invalid_request_error",
             415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
             500: "server_error", 503: "server_error"}

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param}}


@dataclass(frozen=True)
class JobSpec:
    """One generation request: prompts, each continued `runs` times from the same state."""

    prompts: tuple[str, ...]  # the text each continuation starts from, as the model reads it
    runs: int
    max_chars: int
    settings: SamplerSettings
    seed: int | None
    stop: tuple[str, ...] = ()
    stream: bool = True
    extras: dict[str, Any] = field(default_factory=dict)  # echoed back (e.g. the OpenAI model name)
    steering: Steering = field(default_factory=Steering)  # memory, note, lore: read before each prompt's paragraph
    guards: Guards = field(default_factory=Guards)  # banned phrases, the loop guard


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") \
            from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise ApiError(400, f"the request body is not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:  # "\ud800" is valid JSON but no text: it could not be written back (in a message, a model name)
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        raise ApiError(400, "the request body holds a lone UTF-16 surrogate escape (like \\ud800), which is no "
                            "character") from None
    return body


def continue_spec(body: dict[str, Any], defaults: SamplerSettings, default_chars: int,
                  max_rows: int = MAX_RUNS, modern_punctuation: bool = False) -> JobSpec:
    """`POST /api/continue` {text, settings: {length, seed, raw, stop, <sampling>}, variants, stream}.

    `max_rows`: the most continuations one request may ask for (the server's --batch).
    """
    _only(body, {"text", "settings", "variants", "stream", *STEERING_NAMES}, "")
    text = _typed(body, "text", str, None, "")
    settings = _typed(body, "settings", dict, {}, "") or {}
    _only(settings, {"length", "seed", "raw", "stop", *SAMPLING_NAMES}, "settings.")
    raw = _typed(settings, "raw", bool, False, "settings.")
    # the AI-Writer clean-up, but a text the writer ended with a line break asks for a new paragraph
    ends_paragraph = text.rstrip(" \t\u3000").endswith("\n")
    prompt = text if raw else clean_opening(text, modern_punctuation) + ("\n" if ends_paragraph else "")
    if not text.strip():
        raise ApiError(422, "the text is empty; give some text to continue", "text")
    return JobSpec(
        prompts=(prompt,),
        runs=_integer(body, "variants", 1, 1, min(MAX_RUNS, max_rows), ""),
        max_chars=_integer(settings, "length", default_chars, 1, MAX_CHARS, "settings."),
        settings=_sampling(settings, defaults, "settings."),
        seed=_seed(settings, "settings."),
        stop=_stops(settings.get("stop"), "settings.stop"),
        stream=_typed(body, "stream", bool, True, ""),
        **_steering(body),
    )


def completions_spec(body: dict[str, Any], defaults: SamplerSettings, model_id: str,
                     max_rows: int = MAX_RUNS * MAX_PROMPTS) -> JobSpec:
    """OpenAI `POST /v1/completions`, with AI-Writer's top_p_newline and allow_p as extensions.

    Omitted sampling settings take the server's defaults (AI-Writer's, see GET /api/info),
    not OpenAI's. The prompt is read as it is (no clean-up), as OpenAI clients expect. `max_rows` bounds prompts x n
    (the server's --batch).
    """
    if "prompt" not in body:
        raise ApiError(400, "'prompt' is required", "prompt")
    prompt = body["prompt"]
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise ApiError(400, "'prompt' must be a string or a list of strings", "prompt")
    if not 1 <= len(prompts) <= MAX_PROMPTS:
        raise ApiError(422, f"'prompt' must hold 1 to {MAX_PROMPTS} prompts", "prompt")
    if any(not p for p in prompts):
        raise ApiError(422, "the prompt is empty; give some text to continue", "prompt")
    _unsupported(body)
    model = body.get("model", model_id)
    if not isinstance(model, str):
        raise ApiError(400, "'model' must be a string", "model")
    runs = _integer(body, "n", 1, 1, MAX_RUNS, "")
    if len(prompts) * runs > max_rows:
        raise ApiError(422, f"{len(prompts)} prompts x n={runs} is {len(prompts) * runs} continuations; this server "
                       f"writes at most {max_rows} at once (--batch)", "n")
    sampling = {name: body[name] for name in ("temperature", "top_p", "top_p_newline", "allow_p", "top_k",
                                              "presence_penalty", "frequency_penalty") if body.get(name) is not None}
    return JobSpec(
        prompts=tuple(prompts),
        runs=runs,
        max_chars=_integer(body, "max_tokens", 16, 1, MAX_CHARS, ""),
        settings=_sampling(sampling, defaults, ""),
        seed=_seed(body, ""),
        stop=_stops(body.get("stop"), "stop"),
        stream=_typed(body, "stream", bool, False, ""),
        extras={"model": model},
        **_steering(body),
    )


def limits() -> dict[str, Any]:
    """The bounds of the steering fields, as GET /api/info shows them."""
    return {"memory_chars": MAX_MEMORY_CHARS, "note_chars": MAX_NOTE_CHARS, "lore_entries": lorebook.MAX_ENTRIES,
            "lore_entry_chars": lorebook.MAX_ENTRY_CHARS, "lore_keys": lorebook.MAX_KEYS,
            "lore_key_chars": lorebook.MAX_KEY_CHARS, "lore_scan": {"default": lorebook.DEFAULT_SCAN, "max": MAX_SCAN},
            "ban_phrases": MAX_PHRASES, "ban_chars": MAX_PHRASE_CHARS}


def setting_ranges(max_rows: int = MAX_RUNS) -> dict[str, dict[str, Any]]:
    """The valid values of `POST /api/continue`'s `settings` and `variants`, as GET /api/info shows them:
    {name: {"min", "max" (None: no limit), "integer"}}; the sampling ones come from SamplerSettings.RANGES.
    `max_rows`: the most continuations one request may ask for (the server's --batch)."""
    defaults = SamplerSettings()
    ranges = {"length": _range(1, MAX_CHARS, True)}
    for name, (low, high) in SamplerSettings.RANGES.items():
        ranges[name] = _range(low, high, isinstance(getattr(defaults, name), int))
    ranges["seed"] = _range(0, 2**63 - 1, True)
    ranges["variants"] = _range(1, min(MAX_RUNS, max_rows), True)
    return ranges


def _range(low: float, high: float, integer: bool) -> dict[str, Any]:
    number = int if integer else float
    return {"min": number(low), "max": None if high == float("inf") else number(high), "integer": integer}


def _steering(body: dict[str, Any]) -> dict[str, Any]:
    """The JobSpec fields of the steering block and the guards (all optional)."""
    memory = _text(body, "memory", MAX_MEMORY_CHARS)
    note = _text(body, "note", MAX_NOTE_CHARS)
    lore = body.get("lore")
    if lore is not None and not isinstance(lore, (list, dict)):
        raise ApiError(400, "'lore' must be a list of entries like {\"keys\": [\"...\"], \"text\": \"...\"} "
                            "(or a world-info object)", "lore")
    if isinstance(lore, list) and not all(isinstance(item, dict) for item in lore):
        raise ApiError(400, "each entry in 'lore' must be an object like {\"keys\": [...], \"text\": \"...\"}", "lore")
    try:
        book = lorebook.Lorebook.from_json(lore, "lore") if lore else lorebook.Lorebook()
    except InputTextError as exc:
        raise ApiError(422, str(exc), "lore") from None
    scan = _integer(body, "lore_scan", lorebook.DEFAULT_SCAN, 1, MAX_SCAN, "")
    return {"steering": Steering(memory, note, book, scan),
            "guards": _guards(body.get("ban"), _typed(body, "loop_guard", bool, True, ""))}


def _text(body: dict[str, Any], name: str, limit: int) -> str:
    value = _typed(body, name, str, "", "")
    if len(value) > limit:
        raise ApiError(422, f"'{name}' is {len(value)} characters; at most {limit}", name)
    return value


def _guards(bans: Any, loop_guard: bool) -> Guards:
    if bans is not None and (not isinstance(bans, list) or not all(isinstance(s, str) for s in bans)):
        raise ApiError(400, "'ban' must be a list of strings (the phrases never to write)", "ban")
    try:
        return Guards.from_phrases(bans or (), loop_guard=loop_guard)
    except SettingsError as exc:
        raise ApiError(422, str(exc), "ban") from None


def _unsupported(body: dict[str, Any]) -> None:
    """OpenAI fields that change the answer in ways we do not implement: refused unless neutral."""
    neutral = {"echo": (None, False), "logprobs": (None, 0), "best_of": (None, 1), "suffix": (None, ""),
               "logit_bias": (None, {})}
    for name, allowed in neutral.items():
        if name in body and body[name] not in allowed:
            raise ApiError(422, f"'{name}' is not supported by this server", name)


def _only(mapping: dict[str, Any], known: set[str], prefix: str) -> None:
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ApiError(400, f"unknown field '{prefix}{unknown[0]}'; known: {', '.join(sorted(known))}",
                       prefix + unknown[0])


def _typed(mapping: dict[str, Any], name: str, kind: type, default: Any, prefix: str) -> Any:
    if name not in mapping or (mapping[name] is None and default is not None):
        if default is None:
            raise ApiError(400, f"'{prefix}{name}' is required", prefix + name)
        return default
    value = mapping[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        words = {str: "a string", dict: "an object", bool: "true or false"}[kind]
        raise ApiError(400, f"'{prefix}{name}' must be {words}", prefix + name)
    return value


def _integer(mapping: dict[str, Any], name: str, default: int, low: int, high: int, prefix: str) -> int:
    value = mapping.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ApiError(400, f"'{prefix}{name}' must be a whole number", prefix + name)
    if not low <= value <= high:
        shown = value if abs(value) < 10**20 else "a number too large to show"
        raise ApiError(422, f"'{prefix}{name}' must be between {low} and {high}, got {shown}", prefix + name)
    return int(value)


def _seed(mapping: dict[str, Any], prefix: str) -> int | None:
    value = mapping.get("seed")
    if value is None:
        return None
    return _integer(mapping, "seed", 0, 0, 2**63 - 1, prefix)


def _sampling(mapping: dict[str, Any], defaults: SamplerSettings, prefix: str) -> SamplerSettings:
    changes = {name: mapping[name] for name in SAMPLING_NAMES if name in mapping}
    for name, value in changes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ApiError(400, f"'{prefix}{name}' must be a number", prefix + name)
        if isinstance(value, numbers.Integral) and abs(value) >= 2**63:  # past every range (and float's)
            raise ApiError(422, f"'{prefix}{name}' is far out of range", prefix + name)
    try:
        return defaults.replace(**changes)
    except SettingsError as exc:
        name = next((n for n in changes if str(exc).startswith(n)), None)
        raise ApiError(422, str(exc), prefix + name if name else None) from None


def _stops(value: Any, param: str) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ApiError(400, f"'{param}' must be a string or a list of strings", param)
    if len(stops) > MAX_STOPS:
        raise ApiError(422, f"'{param}' may hold at most {MAX_STOPS} strings", param)
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise ApiError(422, f"a stop string in '{param}' may be at most {MAX_STOP_CHARS} characters long", param)
    return tuple(s for s in stops if s)
