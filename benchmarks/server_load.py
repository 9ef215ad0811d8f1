"""Load on `ai-writer serve` over loopback: one client alone, then many at once.

Starts the server in a subprocess (the shipped model unless --model), then
1. one client sends --requests continues of --chars characters, one after another;
2. --clients clients each send --requests such continues at the same time.
Reports completed and failed requests, latency to the first streamed chunk (p50, p99), and
the aggregate characters/s of each phase; the ratio is what batching buys.

    python benchmarks/server_load.py --clients 16 --requests 10 --chars 200 --rounds 5
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

OPENINGS = ["他走进了房间，", "天色已晚，山路上", "这一年春天，", "却说那人", "雨停了。她推开窗，", "第二天一早，",
            "众人听了，", "城门外，"]


def one_request(port: int, text: str, chars: int, seed: int) -> dict:
    """Stream one continue; return first-chunk latency, total time and characters received."""
    began = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"text": text, "settings": {"length": chars, "seed": seed}, "stream": True})
    try:
        connection.request("POST", "/api/continue", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            return {"ok": False, "status": response.status}
        first, received, done = None, 0, False
        for line in response:
            if line.startswith(b"data: "):
                data = json.loads(line[6:])
                if "text" in data:
                    first = first or time.perf_counter() - began
                    received += len(data["text"])
                elif "variants" in data:
                    done = True
        ok = done and received == chars
        return {"ok": ok, "first": first, "seconds": time.perf_counter() - began, "chars": received}
    except OSError as exc:
        return {"ok": False, "error": str(exc)}
    finally:
        connection.close()


def phase(port: int, clients: int, requests: int, chars: int) -> dict:
    results: list[dict] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(requests):
            outcome = one_request(port, OPENINGS[(c + r) % len(OPENINGS)], chars, seed=c * 1000 + r)
            with lock:
                results.append(outcome)

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    good = [r for r in results if r["ok"]]
    firsts = sorted(r["first"] for r in good)
    p99 = firsts[min(len(firsts) - 1, round(0.99 * (len(firsts) - 1)))] if firsts else float("nan")
    return {"clients": clients, "completed": len(good), "failed": len(results) - len(good),
            "first_p50_s": statistics.median(firsts) if firsts else float("nan"), "first_p99_s": p99,
            "chars_per_s": sum(r["chars"] for r in good) / wall, "wall_s": wall}


def start_server(args) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "ai_writer", "serve", "--port", "0", "--quiet", "--queue", str(args.queue),
               "--batch", str(args.batch)]
    if args.model:
        command += ["--model", args.model]
    if args.threads:
        command += ["--threads", str(args.threads)]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in server.stderr:
        match = re.search(r"serving http://[\d.]+:(\d+)/", line)
        if match:
            threading.Thread(target=server.stderr.read, daemon=True).start()  # keep the pipe drained
            return server, int(match.group(1))
    raise SystemExit(f"the server did not start (exit code {server.wait()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--chars", type=int, default=200)
    parser.add_argument("--queue", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="single-client and many-client phases, alternating")
    args = parser.parse_args()
    server, port = start_server(args)
    ratios = []
    try:
        one_request(port, OPENINGS[0], 20, seed=0)  # warm-up
        for round_ in range(1, args.rounds + 1):  # phases alternate, so a noisy minute hits both
            single = phase(port, 1, args.requests, args.chars)
            many = phase(port, args.clients, args.requests, args.chars)
            for row in (single, many):
                print(f"round {round_}, clients {row['clients']:>3}: completed {row['completed']}, failed "
                      f"{row['failed']}, first chunk p50 {row['first_p50_s'] * 1000:.0f} ms, p99 "
                      f"{row['first_p99_s'] * 1000:.0f} ms, {row['chars_per_s']:.0f} characters/s, "
                      f"{row['wall_s']:.1f} s", flush=True)
            ratios.append(many["chars_per_s"] / single["chars_per_s"])
    finally:
        server.terminate()
        server.wait()
    print(f"aggregate throughput: {statistics.median(ratios):.2f}x one client (median of {len(ratios)} rounds; "
          f"{min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
