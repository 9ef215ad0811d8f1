"""The package's layering rules (README, Layout), checked on the source with `ast`.

Every import counts, those inside functions too: an import hidden in a function is still a
dependency, and a cycle through one is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ai_writer"
SHARED = {"errors", "files", "resources"}  # plain modules any part may use
HEAVY = {"torch", "onnxruntime", "onnx"}
# which parts each part may import (besides itself and SHARED); cli/ may import everything
MAY_IMPORT = {
    "text": set(),
    "generation": {"text", "backends.base"},  # the backend contract only
    "story": {"generation", "text"},
    "repl": {"generation", "story", "text"},
    "server": {"generation", "story", "text", "models.config"},
    "models": {"text"},
    "export": {"models"},
    "backends": {"models", "export", "text"},
    "training": {"models", "backends", "generation", "text"},
    "bench": {"models", "backends", "generation", "text"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in MODULES.items()}


def runtime_nodes(tree: ast.AST):
    """Every node, except those under `if TYPE_CHECKING:` (imports for type hints only, never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from runtime_nodes(node)


def imported(name: str) -> set[str]:
    """Every module `name` imports, anywhere in it (`from a import b` counts a.b when that is a module)."""
    found = set()
    for node in runtime_nodes(TREES[name]):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: relative import (the package uses absolute ones)"
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in MODULES}
    return found


def part(module: str) -> str:
    """The part of the package a module belongs to: `ai_writer.models.rwkv.rwkv7` -> `models`."""
    return module.split(".")[1] if module.count(".") else ""


def allowed(importer: str, target: str) -> bool:
    if target == "ai_writer" or part(importer) in ("cli", "", "__main__"):
        return True
    if part(target) in SHARED or part(target) == part(importer):
        return True
    rest = target.removeprefix("ai_writer.")
    rest = "backends.base" if rest == "backends" else rest  # the backends package exports the contract only
    return any(rest == rule or rest.startswith(rule + ".") for rule in MAY_IMPORT.get(part(importer), ()))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_part_imports_only_what_the_layout_allows(module):
    wrong = sorted(t for t in imported(module) if t.startswith("ai_writer") and not allowed(module, t))
    assert not wrong, f"{module} imports {wrong}"


def test_text_generation_story_repl_server_never_import_torch_or_onnxruntime():
    for module in MODULES:
        if part(module) in ("text", "generation", "story", "repl", "server"):
            heavy = sorted(t for t in imported(module) if t.split(".")[0] in HEAVY)
            assert not heavy, f"{module} imports {heavy}"


def test_only_the_cli_imports_click_or_reads_the_environment():
    for module, tree in TREES.items():
        if part(module) == "cli":
            continue
        assert not any(t.split(".")[0] == "click" for t in imported(module)), f"{module} imports click"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
                pytest.fail(f"{module} line {node.lineno}: reads the environment (os.{node.attr})")
            if isinstance(node, ast.ImportFrom) and node.module == "os" and \
                    any(a.name in ("environ", "getenv") for a in node.names):
                pytest.fail(f"{module} line {node.lineno}: imports os.environ")


def test_repl_and_server_never_drive_a_backend_themselves():
    """They write through generation/ (the decode loop, the reader) and story/, never a backend's own calls."""
    for module, tree in TREES.items():
        if part(module) not in ("repl", "server"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("forward", "zero_state", "concat", "repeat"):
                pytest.fail(f"{module} line {node.lineno}: calls .{node.func.attr}() of a backend or state")


def test_no_import_cycles():
    graph = {m: {t for t in imported(m) if t in MODULES and t != m} for m in MODULES}
    # a package's __init__ is run by importing anything in it: count that edge only when it imports something
    for m in MODULES:
        for t in list(graph[m]):
            parent = t.rpartition(".")[0]
            if parent in MODULES and parent != m and graph[parent]:
                graph[m].add(parent)
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_rules_see_the_whole_package():
    """The checks above are not vacuous: they parse every part, and catch a planted violation."""
    assert {part(m) for m in MODULES} >= {"cli", "models", "export", "backends", "text", "generation", "story",
                                          "repl", "server", "training", "bench"}
    assert not allowed("ai_writer.server.worker", "ai_writer.backends.rwkv_onnx")
    assert not allowed("ai_writer.models.checkpoint", "ai_writer.backends.select")
    assert not allowed("ai_writer.text.cleanup", "ai_writer.generation.sampler")
    assert allowed("ai_writer.generation.generator", "ai_writer.backends")
    assert not allowed("ai_writer.story.document", "ai_writer.backends")
