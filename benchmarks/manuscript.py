"""A whole manuscript in the REPL: reading it once, the session it leaves, and reopening it.

    python benchmarks/manuscript.py [--chars 1000000] [--chapter-chars 5000] [--model PATH] [--threads N]

A manuscript of --chars characters is made from a few repeated lines under 第N章 headings (the
model's cost per character does not depend on the text), written to a temporary folder and
opened as `ai-writer repl novel.txt` opens it: tidied, read once chapter by chapter with the
state kept at each chapter's start (`Repl.read_through`), then autosaved. A second process
reopens the session as the REPL does when novel.txt is opened again. Each phase runs in a fresh
process, so its peak RSS (getrusage) is its own: the model, the text, the kept states.

Prints one Markdown table: read time and speed, peak RSS, chapters and states kept in memory,
snapshots and size of the session file, the time of one autosave, and the reopening time with
the tokens it fed to the model (0: nothing is read again) and the time of the first paragraph
written after it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LINES = ("林黛玉笑道：“你们在说什么？”", "宝玉听了，忙走过来，只见众人都在那里说笑，便也坐下了。", "众人听了，都笑起来。")


def manuscript(chars: int, chapter_chars: int) -> str:
    chapters, total, n = [], 0, 0
    while total < chars:
        n += 1
        body, k, size = [], 0, 0
        while size < chapter_chars:
            line = "\u3000\u3000" + LINES[k % 3] * (1 + k % 4) + "\n"
            body.append(line)
            size += len(line)
            k += 1
        chapter = f"第{n}章 风起\n\n" + "".join(body) + "\n"
        chapters.append(chapter)
        total += len(chapter)
    return "".join(chapters)


def _repl(args, session: Path):
    from ai_writer.backends.open import load_model
    from ai_writer.export.cache import default_cache_dir
    from ai_writer.generation.sampler import SamplerSettings
    from ai_writer.repl.session import Repl
    from ai_writer.repl.ui import PlainUI
    from ai_writer.repl.writer import LocalWriter
    from ai_writer.resources import default_model_path

    class QuietUI(PlainUI):
        def story(self, text, author):
            pass

        def info(self, text):
            pass

    loaded = load_model(args.model or default_model_path(), backend="cpu", threads=args.threads,
                        onnx_cache=default_cache_dir())
    return loaded, Repl(LocalWriter(loaded), QuietUI(), settings=SamplerSettings(), length=100, seed=1,
                        session_path=session)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_read(args) -> dict:
    folder = Path(args.folder)
    loaded, repl = _repl(args, folder / "novel.txt.session.json")
    model_mb = _peak_mb()
    began = time.perf_counter()
    repl.adopt(repl.load(folder / "novel.txt"))
    repl.read_through()  # reads, keeps the chapter states, autosaves
    seconds = time.perf_counter() - began
    began = time.perf_counter()
    repl._autosave(repl.doc.spans)
    autosave = time.perf_counter() - began
    kept = repl.doc.kept_offsets()
    from ai_writer.story.chapters import split_chapters

    return {"describe": loaded.describe(), "chars": len(repl.doc), "read_s": seconds, "fed": repl.writer.backend.fed,
            "model_mb": model_mb, "peak_mb": _peak_mb(), "chapters": len(split_chapters(repl.doc.text)),
            "pinned": sum(kept.values()), "autosave_s": autosave}


def phase_reopen(args) -> dict:
    folder = Path(args.folder)
    session = folder / "novel.txt.session.json"
    _, repl = _repl(args, session)
    model_mb = _peak_mb()
    began = time.perf_counter()
    repl.adopt(repl.load(session))
    repl.read_through()
    seconds = time.perf_counter() - began
    fed = repl.writer.backend.fed
    began = time.perf_counter()
    repl.write_next()
    write = time.perf_counter() - began
    return {"reopen_s": seconds, "reopen_fed": fed, "write_s": write, "write_fed": repl.writer.backend.fed - fed,
            "model_mb": model_mb, "peak_mb": _peak_mb()}


def run_phase(phase: str, args, folder: Path) -> dict:
    command = [sys.executable, __file__, "--phase", phase, "--folder", str(folder), "--threads", str(args.threads)]
    if args.model:
        command += ["--model", str(args.model)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=1_000_000)
    parser.add_argument("--chapter-chars", type=int, default=5_000)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--phase", choices=["read", "reopen"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps((phase_read if args.phase == "read" else phase_reopen)(args)))
        return

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        raw = manuscript(args.chars, args.chapter_chars)
        (folder / "novel.txt").write_text(raw, encoding="utf-8")
        read = run_phase("read", args, folder)
        session = folder / "novel.txt.session.json"
        record = json.loads(session.read_text(encoding="utf-8"))
        snapshots = record.get("snapshots", {}).get("states", [])
        size_mb = session.stat().st_size / 2**20
        text_mb = (folder / "novel.txt").stat().st_size / 2**20
        reopen = run_phase("reopen", args, folder)

    print(f"{read['describe']}; threads {args.threads}", file=sys.stderr)
    rows = [
        ("manuscript", f"{len(raw):,} characters as written ({text_mb:.1f} MB), {read['chars']:,} once tidied "
                       f"(no indentation), {read['chapters']} chapters"),
        ("read once", f"{read['read_s']:.1f} s ({read['chars'] / read['read_s']:,.0f} characters/s), "
                      f"{read['fed']:,} tokens"),
        ("peak RSS, reading", f"{read['peak_mb']:.0f} MB (model loaded: {read['model_mb']:.0f} MB)"),
        ("states kept in memory", f"{read['pinned']} chapter starts"),
        ("session file", f"{size_mb:.1f} MB: {sum(s['pinned'] for s in snapshots)} chapter snapshots "
                         f"+ {sum(not s['pinned'] for s in snapshots)} other + the end state"),
        ("one autosave", f"{read['autosave_s'] * 1000:.0f} ms"),
        ("reopen", f"{reopen['reopen_s']:.2f} s, {reopen['reopen_fed']} tokens read"),
        ("peak RSS, reopening", f"{reopen['peak_mb']:.0f} MB (model loaded: {reopen['model_mb']:.0f} MB)"),
        ("first paragraph after reopening", f"{reopen['write_s']:.2f} s, {reopen['write_fed']} tokens fed "
                                            "(100 characters at most)"),
    ]
    print("| | |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
