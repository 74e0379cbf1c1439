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


# The stages from the bottom up: a package may import only from packages before it (lazy imports inside functions
# count too: they hide a cycle, they do not remove it). runners/ and scripts/ are the CLIs on top.
LAYERS = ("errors", "config", "storage", "model", "data", "evaluation", "training", "runtime", "export", "bench",
          "studio", "runners", "scripts")


def _imports(path: Path, everywhere: bool) -> set[str]:
    """The ``lora`` modules ``path`` imports: at module level, or (``everywhere``) inside functions as well."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    deps = set()
    for node in ast.walk(tree) if everywhere else tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lora"):
            deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names if a.name.startswith("lora")}
    return deps


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_packages_import_only_downward_lazy_imports_included():
    assert {p.stem if p.suffix else p.name for p in PKG.iterdir() if p.name != "__init__.py" and
            (p.suffix == ".py" or (p / "__init__.py").is_file())} == set(LAYERS)
    upward = []
    for path in PKG.rglob("*.py"):
        src = _layer(_module(path))
        for dep in _imports(path, everywhere=True):
            dst = _layer(dep)
            if src and dst and dst in LAYERS and LAYERS.index(dst) > LAYERS.index(src):
                upward.append(f"{path.relative_to(PKG)} imports {dep} ({src} is below {dst})")
    assert not upward, "\n".join(sorted(set(upward)))


def test_no_import_cycles_between_modules():
    """Module-level imports (within a package a function's lazy import may close a loop: both modules exist by then)."""
    graph = {_module(path): _imports(path, everywhere=False) for path in PKG.rglob("*.py")}
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
