"""`--remote URL`: writing through an OpenAI-compatible server instead of a local model.

`remote_options` adds --remote, --remote-model and --api-key-env to a command (`continue`, `repl`)
and hands it one `remote` argument (a RemoteOptions, or None); `write_remote` is what `continue`
does with it instead of loading a model (the REPL writes through repl/writer.RemoteWriter). The
API key is read here, the one place that reads it, from the environment variable --api-key-env
names; it is sent as a Bearer token (generation/remote.RemoteEngine) and never printed.

The steering block goes to the server in the way it can use best: an ai-writer server takes it
as its own fields and reads it into a state as a local model does; any other server gets one
assembled prompt (story/steering.Steering.remote_prompt: memory, lore, the story's tail, the
note, the last paragraph); story/steering.remote_request chooses. A template (--template) wraps
the prompt before it is sent.

    ai-writer continue --remote http://big-machine:8266 --len 500 < opening.txt
    OPENAI_API_KEY=... ai-writer continue --remote http://127.0.0.1:8000/v1 --api-key-env OPENAI_API_KEY
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import click

from ai_writer.cli.options import CliError
from ai_writer.generation.generator import RunResult
from ai_writer.generation.remote import DEFAULT_TIMEOUT, RemoteEngine
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.story.steering import Steering, remote_request
from ai_writer.text.templates import SHIPPED, Template


@dataclass(frozen=True)
class RemoteOptions:
    url: str  # --remote
    model: str | None = None  # --remote-model; None: the first model the server lists
    api_key_env: str | None = None  # --api-key-env: the name of the variable, never its value
    timeout: float = DEFAULT_TIMEOUT  # seconds the server may stay silent

    def engine(self, environ: Mapping[str, str] | None = None) -> RemoteEngine:
        key = api_key(self.api_key_env, os.environ if environ is None else environ)
        return RemoteEngine(self.url, self.model, api_key=key, timeout=self.timeout)


def remote_options(command):
    """--remote, --remote-model and --api-key-env, handed to the command as one `remote` argument."""

    @click.option("--remote", metavar="URL",
                  help="Write through an OpenAI-compatible /v1/completions server instead of a local model: "
                       "ai-writer serve on another machine, vLLM, llama.cpp's server, AI00 (the model options are "
                       "then not used). E.g. http://host:8266 or http://host:8000/v1.")
    @click.option("--remote-model", metavar="NAME",
                  help="With --remote: the model to ask the server for. Default: the first one it lists.")
    @click.option("--api-key-env", metavar="VAR",
                  help="With --remote: the environment variable holding the server's API key (sent as "
                       "'Authorization: Bearer', never printed). E.g. --api-key-env OPENAI_API_KEY.")
    @functools.wraps(command)
    def wrapper(*args, remote=None, remote_model=None, api_key_env=None, **kwargs):
        if remote is None:
            given = "--remote-model" if remote_model is not None else "--api-key-env" if api_key_env else None
            if given:
                raise CliError(f"{given} needs --remote URL")
        options = RemoteOptions(remote, remote_model, api_key_env) if remote is not None else None
        return command(*args, remote=options, **kwargs)

    return wrapper


def api_key(variable: str | None, environ: Mapping[str, str]) -> str | None:
    """The API key in the environment variable `variable` (None: no key)."""
    if variable is None:
        return None
    value = environ.get(variable, "").strip()
    if not value:
        raise CliError(f"--api-key-env {variable}: the environment variable {variable} is not set (or empty)")
    return value


def write_remote(remote: RemoteOptions, story: str, out, *, length: int, runs: int, settings: SamplerSettings,
                 seed: int, stop: Sequence[str] = (), bans: Sequence[str] = (), quiet: bool = False,
                 steering: Steering | None = None, template: Template = SHIPPED["plain"],
                 extra: Mapping[str, Any] | None = None) -> None:
    """`continue --remote`: write `runs` continuations of `story` through the server to `out` (the command's
    output: .chunk(run, text), .finished(result), .close(), .total_chars), with status lines on stderr.
    `extra`: more fields for an ai-writer server (e.g. loop_guard)."""
    status = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    engine = remote.engine()
    prompt, fields = remote_request(engine, story, steering, template)
    status(f"ai-writer: {engine.describe()}; seed {seed}")
    began = time.perf_counter()
    results: list[RunResult] = []
    for chunk in engine.stream(prompt, max_chars=length, runs=runs, settings=settings, seed=seed, stop=stop,
                               bans=bans, extra={**fields, **(extra or {})}, results=results):
        out.chunk(chunk.run, chunk.text)
        while results:
            out.finished(results.pop(0))
    for result in results:  # runs that ended with no new text
        out.finished(result)
    out.close()
    elapsed = time.perf_counter() - began
    status(f"ai-writer: sent {len(prompt)} characters, wrote {out.total_chars} in {elapsed:.2f} s "
           f"({out.total_chars / max(elapsed, 1e-9):.1f} characters/s)")
