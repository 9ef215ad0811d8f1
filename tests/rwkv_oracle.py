"""Reference results from the official `rwkv` pip package, run in a subprocess.

The package decides at import time whether it is an RWKV-7 build (RWKV_V7_ON=1),
so it always runs in its own interpreter here; the test process never imports it.
`rwkv7=False` runs the package's generic class, which detects RWKV-4/5/6 files itself.
Inputs and outputs go through a JSON file and an .npz file in a temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

# Runs inside the child interpreter: argv[1] = request JSON, argv[2] = result .npz
_WORKER = r"""
import json, os, sys
req = json.load(open(sys.argv[1]))
import torch
torch.set_num_threads(int(req["threads"]))
torch.set_num_interop_threads(1)
import numpy as np
from rwkv.model import RWKV

model = RWKV(req["model"], "cpu fp32")
out = {}
def zero_state():  # the generic (v4/5/6) class starts from state None
    return model.generate_zero_state() if hasattr(model, "generate_zero_state") else None

with torch.no_grad():
    if req["mode"] == "logits":
        ids = [int(t) for t in req["tokens"]]
        logits, _ = model.forward(list(ids), zero_state())
        out["prefill"] = logits.float().cpu().numpy()
        state = zero_state()
        rows = []
        for t in ids:
            logits, state = model.forward([t], state)
            rows.append(logits.float().cpu().numpy())
        out["steps"] = np.stack(rows)
    elif req["mode"] == "greedy":
        ids = [int(t) for t in req["tokens"]]
        n = int(req["n_tokens"])
        logits, state = model.forward(list(ids), zero_state())
        chosen = []
        for i in range(n):
            tok = int(torch.argmax(logits).item())
            chosen.append(tok)
            if i + 1 < n:
                logits, state = model.forward([tok], state)
        out["chosen"] = np.asarray(chosen, dtype=np.int64)
    else:
        raise ValueError("unknown mode " + repr(req["mode"]))
np.savez(sys.argv[2], **out)
"""


def _child_env(threads: int, rwkv7: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env["RWKV_V7_ON"] = "1" if rwkv7 else "0"
    env["RWKV_JIT_ON"] = "1"
    env["RWKV_CUDA_ON"] = "0"
    env.pop("RWKV_DE_VERSION", None)
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    return env


def _model_arg(checkpoint_path, tmp: str) -> str:
    """The package opens ``<arg> + '.pth'``: give it a name that resolves to the file."""
    path = os.path.abspath(os.fspath(checkpoint_path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".pth"):
        return path[: -len(".pth")]
    link = os.path.join(tmp, "model.pth")
    os.symlink(path, link)
    return link[: -len(".pth")]


def _run(checkpoint_path, request: dict, threads: int, rwkv7: bool = True) -> dict[str, np.ndarray]:
    threads = int(threads)
    if threads < 1:
        raise ValueError("threads must be >= 1")
    with tempfile.TemporaryDirectory(prefix="rwkv-oracle-") as tmp:
        req = dict(request)
        req["model"] = _model_arg(checkpoint_path, tmp)
        req["threads"] = threads
        req_path = os.path.join(tmp, "request.json")
        out_path = os.path.join(tmp, "result.npz")
        with open(req_path, "w") as fh:
            json.dump(req, fh)
        proc = subprocess.run(
            [sys.executable, "-c", _WORKER, req_path, out_path],
            env=_child_env(threads, rwkv7),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 or not os.path.exists(out_path):
            raise RuntimeError(
                f"rwkv package oracle failed (exit code {proc.returncode}) "
                f"for {os.fspath(checkpoint_path)!r}\n"
                f"--- stderr ---\n{proc.stderr.strip()}\n"
                f"--- stdout (tail) ---\n{proc.stdout[-2000:].strip()}"
            )
        with np.load(out_path) as data:
            return {k: data[k] for k in data.files}


def _check_ids(ids, name: str) -> list[int]:
    ids = [int(t) for t in ids]
    if not ids:
        raise ValueError(f"{name} must not be empty")
    if any(t < 0 for t in ids):
        raise ValueError(f"{name} must be non-negative token ids")
    return ids


def oracle_logits(checkpoint_path, token_ids: list[int], *, threads: int = 2, rwkv7: bool = True) -> dict:
    """Logits of the package for ``token_ids`` from a zero state.

    Returns ``{"prefill": [V] float32`` (all ids fed as one sequence, the package's
    sequence path when len > 1) ``, "steps": [T, V] float32`` (row t = logits after
    feeding ids[0..t] one token at a time) ``}``.
    """
    ids = _check_ids(token_ids, "token_ids")
    res = _run(checkpoint_path, {"mode": "logits", "tokens": ids}, threads, rwkv7)
    return {
        "prefill": np.asarray(res["prefill"], dtype=np.float32),
        "steps": np.asarray(res["steps"], dtype=np.float32),
    }


def oracle_greedy(checkpoint_path, prompt_ids: list[int], n_tokens: int, *,
                  threads: int = 2, rwkv7: bool = True) -> list[int]:
    """Greedy (argmax) continuation by the package: the prompt as one sequence, then
    ``n_tokens`` argmax picks, each fed back before the next pick. Returns the picks."""
    ids = _check_ids(prompt_ids, "prompt_ids")
    n = int(n_tokens)
    if n < 0:
        raise ValueError("n_tokens must be >= 0")
    if n == 0:
        return []
    res = _run(checkpoint_path, {"mode": "greedy", "tokens": ids, "n_tokens": n}, threads, rwkv7)
    return [int(t) for t in res["chosen"]]
