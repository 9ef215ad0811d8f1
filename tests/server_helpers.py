"""Running the ai-writer HTTP server in-process on a free port, and talking to it over a real socket."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from contextlib import contextmanager
from pathlib import Path

from ai_writer.backends.open import load_model
from ai_writer.server.http import AiWriterHTTPServer, ServerSettings
from ai_writer.server.worker import InferenceWorker

WEB_CLIENT = Path(__file__).resolve().parent.parent / "web-client"


@contextmanager
def running_server(model_path: Path, *, start_worker: bool = True, max_queue: int = 32, max_batch: int = 32,
                   static_root: Path = WEB_CLIENT, template=None, **settings):
    """Yield a serving AiWriterHTTPServer (its .worker too) on 127.0.0.1 and a free port."""
    loaded = load_model(model_path, backend="torch-cpu")
    worker = InferenceWorker(loaded.backend, loaded.tokenizer, max_queue=max_queue, max_batch=max_batch,
                             **({"template": template} if template is not None else {}))
    if start_worker:
        worker.start()
    info = {"model": model_path.name, "backend": "torch-cpu"}
    server = AiWriterHTTPServer(("127.0.0.1", 0), ServerSettings(static_root=static_root, model_id=model_path.stem,
                                                                  info=info, **settings), worker)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        worker.stop()


def request(server, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 60):
    """(status, headers, body bytes); a dict or list body is sent as JSON (a body goes with
    'Content-Type: application/json' unless the headers give one)."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=timeout)
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    headers = dict(headers or {})
    if data is not None and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    connection.request(method, path, body=data, headers=headers)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), payload


def json_request(server, method: str, path: str, body=None, headers: dict | None = None):
    status, headers, payload = request(server, method, path, body, headers)
    return status, headers, json.loads(payload)


def sse_events(payload: bytes) -> list[tuple[str | None, str]]:
    """(event name or None, data) for each event of a text/event-stream body, checking the framing."""
    text = payload.decode("utf-8")
    assert text.endswith("\n\n"), "an event stream ends with a blank line"
    events = []
    for block in text[:-2].split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            assert field in ("event", "data"), f"unexpected line {line!r}"
            if field == "event":
                name = value
            else:
                data.append(value)
        events.append((name, "\n".join(data)))
    return events


def raw_exchange(server, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
            if b"\r\n\r\n" in received and _complete(received):
                break
        return received


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False
