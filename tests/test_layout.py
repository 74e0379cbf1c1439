"""The tree as the README describes it: one folder per stage, no import cycles, no long functions in the jobs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "lora"
JOBS = ("training/job.py", "export/job.py")  # a job reads as named steps: no function over 60 lines
LIMIT, JOB_LIMIT = 80, 60


def _readme_layout() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^  \| (`[^|]+`) \|", text, flags=re.M)
    return {name for row in rows for name in re.findall(r"`([\w.]+/?)`", row)}


def test_readme_layout_table_names_every_folder_and_top_level_module():
    tree = {p.name + "/" for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    tree |= {p.name for p in PKG.glob("*.py") if p.name != "__init__.py"}
    assert _readme_layout() == tree


def test_no_import_cycles_between_modules():
    """Module-level imports only (a function's lazy import runs after both modules exist)."""
    graph = {}
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lora"):
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("lora")}
        graph[mod] = deps
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}

    def cycle_from(start, node, seen):
        for nxt in graph[node]:
            if nxt == start:
                return [node, nxt]
            if nxt not in seen:
                seen.add(nxt)
                if path := cycle_from(start, nxt, seen):
                    return [node, *path]
        return None

    cycles = [c for m in graph if (c := cycle_from(m, m, {m}))]
    assert not cycles, f"import cycle: {' -> '.join(cycles[0])}"


def test_no_long_functions():
    long = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        limit = JOB_LIMIT if rel in JOBS else LIMIT
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            n = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and n > limit:
                long.append(f"{rel}:{node.lineno} {node.name} ({n} lines, limit {limit})")
    assert not long, "\n".join(sorted(long))
