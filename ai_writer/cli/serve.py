"""`ai-writer serve`: the web page and the HTTP API (ai_writer/server/) from the command line."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import click

from ai_writer.text.punctuation import writes_modern
from ai_writer.cli.options import CliError, model_options, open_model, sampling_options, template_option
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.resources import web_client_root
from ai_writer.server.requests import MAX_CHARS
from ai_writer.text.templates import template_named

DEFAULT_PORT = 8266


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_host_names(host: str, allow_hosts: tuple[str, ...]) -> frozenset[str] | None:
    """The Host names the server answers to: its loopback names, --host's own name and --allow-host's;
    None (any name) for a server bound to every address (0.0.0.0, ::) without --allow-host, which needs
    --token anyway and is reached by whatever name or address the network gives it."""
    from ai_writer.server.http import LOOPBACK_NAMES

    def bracketed(name: str) -> str:
        name = name.strip().lower().rstrip(".")
        return f"[{name}]" if ":" in name and not name.startswith("[") else name

    if host in ("0.0.0.0", "::", "") and not allow_hosts:
        return None
    names = set(LOOPBACK_NAMES) | {bracketed(name) for name in allow_hosts}
    if host not in ("0.0.0.0", "::", ""):
        names.add(bracketed(host))
    return frozenset(names)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. 127.0.0.1 serves only this computer; 0.0.0.0 serves your whole network "
                   "and then needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on; 0 picks a free one.")
@click.option("--token", envvar="AI_WRITER_TOKEN", help="Access token: API calls must send 'Authorization: Bearer "
              "TOKEN'. Required when --host is not a loopback address. Default: $AI_WRITER_TOKEN.")
@click.option("--allow-host", "allow_hosts", metavar="NAME", multiple=True,
              help="Also answer requests that name this server NAME (e.g. a name in /etc/hosts). Without it, a "
                   "server on a loopback address answers only to 127.0.0.1, localhost and [::1]: a web page "
                   "cannot reach it by pointing its own name at this computer. Repeatable.")
@click.option("--cors", "cors_origin", metavar="ORIGIN",
              help="Let web pages from ORIGIN (e.g. https://example.org, or *) call the API. Default: off.")
@click.option("--len", "length", type=click.IntRange(1, MAX_CHARS), default=200, show_default=True,
              help="Default characters per continue, when a request does not say.")
@click.option("--queue", "max_queue", type=click.IntRange(min=1), default=32, show_default=True,
              help="Requests that may wait; more are answered 429.")
@click.option("--batch", "max_batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Continuations written together in one batch.")
@click.option("--max-body", type=click.IntRange(min=1024), default=2**20, show_default=True,
              help="Largest request body in bytes.")
@click.option("-q", "--quiet", is_flag=True, help="Do not log requests.")
@model_options
@template_option
@sampling_options
def serve_command(host, port, token, allow_hosts, cors_origin, length, max_queue, max_batch, max_body, quiet, model,
                  vocab, unknown_char, backend, precision, threads, template, **sampling):
    """Serve the AI-Writer web page and an OpenAI-compatible API.

    \b
    Open the printed address in a browser: 续写 Continue (Alt+Q), 换个写法 Rewrite (Alt+E), Stop.
    API: POST /api/continue, POST /v1/completions, GET /v1/models, GET /api/info, GET /healthz.
    The sampling options set the defaults for requests that do not give their own.

    \b
    Examples:
      ai-writer serve
      ai-writer serve --host 0.0.0.0 --token "$(openssl rand -hex 16)"
    """
    from ai_writer.server.http import AiWriterHTTPServer, ServerSettings, valid_token
    from ai_writer.server.worker import InferenceWorker

    if not is_loopback(host) and not token:
        raise CliError(f"refusing to listen on {host} without --token: anyone who can reach this computer could use "
                       "it; pass --token SECRET (or set AI_WRITER_TOKEN), or keep the default --host 127.0.0.1")
    if token is not None and not token.strip():
        raise CliError("--token must not be empty")
    if token is not None and not valid_token(token):
        raise CliError("--token must be printable ASCII characters without spaces around them (clients send it in "
                       "an HTTP header, which carries nothing else as typed)")
    static_root = web_client_root()
    if static_root is None:
        raise CliError("the web client files are missing from this installation; reinstall ai-writer")
    defaults = SamplerSettings(**sampling)
    template = template_named(template)
    loaded = open_model(model, vocab, unknown_char, backend, precision, threads)
    worker = InferenceWorker(loaded.backend, loaded.tokenizer, max_queue=max_queue, max_batch=max_batch,
                             template=template).start()
    info = {"model": loaded.path.name, "backend": loaded.choice.backend, "precision": loaded.choice.precision,
            "reason": loaded.choice.reason, "config": json.loads(loaded.config.to_json()),
            "vocab_size": loaded.config.vocab_size, "max_chars": MAX_CHARS, "auth": token is not None}
    settings = ServerSettings(static_root=static_root, model_id=loaded.path.stem, info=info, defaults=defaults,
                              default_chars=length, token=token, cors_origin=cors_origin,
                              allowed_hosts=allowed_host_names(host, allow_hosts), max_body=max_body,
                              modern_punctuation=writes_modern(loaded.tokenizer),
                              log=None if quiet else (lambda line: click.echo(f"ai-writer: {line}", err=True)))
    try:
        server = AiWriterHTTPServer((host, port), settings, worker)
    except OSError as exc:
        worker.stop()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo(f"ai-writer: {loaded.describe()}", err=True)
    click.echo(f"ai-writer: serving {server.url} (Ctrl-C stops)", err=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        click.echo("ai-writer: stopped", err=True)
    finally:
        server.server_close()
        worker.stop()
