"""The tree shows the data flow: packages by role, no import loops, nothing imports upward.

Read from the source with `ast` (imports inside functions count too: a lazy import is
still a dependency, and the loops this guards against were lazy ones).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("detector", "train", "export")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


INSTALLED_AS = {"ad_detector_train": "train", "ad_detector_export": "export"}   # pyproject's package-dir


def installed_to_folder(name: str) -> str:
    """`ad_detector_train.windows` -> `train.windows`: the import name of a module -> its folder's."""
    head, _, rest = name.partition(".")
    return INSTALLED_AS.get(head, head) + (f".{rest}" if rest else "")


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for top in OURS for p in sorted((REPO / top).rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Our modules that `name` imports (a `from pkg import mod` counts as pkg.mod when that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            t = installed_to_folder(t)
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = all_modules()
    known = set(mods)
    return {name: imports_of(path, name, known) for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_loops():
    g = graph()
    # a package's __init__ re-exporting its own modules is not a loop between roles
    g = {m: {d for d in deps if not (m.startswith(d + ".") and (REPO / d.replace(".", "/") / "__init__.py").exists())}
         for m, deps in g.items()}
    assert cycles(g) == []


# role -> roles it must never import (directly or lazily)
FORBIDDEN = {
    "detector.analysis": ("detector.live", "detector.events", "detector.offline", "detector.demo", "detector.cli",
                          "detector.sources", "detector.config"),
    "detector.model": ("detector.live", "detector.events", "detector.offline", "detector.demo", "detector.cli", "detector.config"),
    "detector.sources": ("detector.live", "detector.events", "detector.offline", "detector.demo", "detector.cli",
                         "detector.model", "detector.config"),
    "detector.events": ("detector.live", "detector.offline", "detector.demo", "detector.cli", "detector.model"),
    "detector.live": ("detector.offline", "detector.demo", "detector.cli"),
    # the inline marker: TS bytes and cues in, TS bytes out; the daemon wires it, never the reverse
    "detector.marker": ("detector.live", "detector.offline", "detector.demo", "detector.cli", "detector.config",
                        "detector.model"),
    "detector.offline": ("detector.live", "detector.events", "detector.cli"),
    "detector.util": ("detector.analysis", "detector.model", "detector.sources", "detector.live", "detector.events",
                      "detector.offline", "detector.demo", "detector.cli", "detector.config", "detector.marker"),
    "export": ("train",),
}

# narrow, named exceptions to FORBIDDEN: pure modules a lower role shares on purpose
ALLOWED = {
    # the one SCTE-35 cue encoder: events, the offline sidecar/EventStream/HLS and the inline
    # marker all use it, so a cue can never differ between them (pure: no sockets, no threads)
    "detector.offline": ("detector.events.scte35",),
}


@pytest.mark.parametrize("role", list(FORBIDDEN))
def test_nothing_imports_upward(role: str):
    bad = sorted(f"{m} imports {d}" for m, deps in graph().items() if m == role or m.startswith(role + ".")
                 for d in deps if any(d == f or d.startswith(f + ".") for f in FORBIDDEN[role])
                 and d not in ALLOWED.get(role, ()))
    assert bad == []


def test_the_runtime_never_imports_the_training_stack():
    """`pip install .` has no TensorFlow: only the commands that need the extra reach train/ and export/."""
    allowed = {"detector.cli", "detector.demo.command"}
    bad = sorted(f"{m} imports {d}" for m, deps in graph().items() if m.startswith("detector") and m not in allowed
                 for d in deps if d.split(".")[0] in ("train", "export"))
    assert bad == []
    for path in (REPO / "detector").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                assert n.split(".")[0] not in ("tensorflow", "keras", "tf2onnx", "tf_keras"), f"{path} imports {n}"


def test_every_module_of_the_package_imports_with_its_own_interpreter():
    """Including the RTSP test server, a script for the system Python that ships in the package."""
    names = sorted(m for m in all_modules() if m.startswith("detector") and m != "detector.__main__")
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\nprint('ok', len(sys.argv) - 1)"
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"ok {len(names)}"


def test_modules_stay_small():
    """One module, one job: none over about 600 lines (so each can be read in one sitting)."""
    big = {m: n for m, p in all_modules().items() if (n := len(p.read_text().splitlines())) > 620}
    assert big == {}


def test_the_package_root_keeps_only_the_entry_points():
    top = sorted(p.name for p in (REPO / "detector").glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "cli.py", "errors.py"]


def test_installed_names_cannot_collide_and_every_package_is_installed():
    """train/ and export/ install as ad_detector_train / ad_detector_export (generic top-level names
    like `train` would clash with other distributions), and pyproject lists every package."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    tool = project["tool"]["setuptools"]
    assert tool["package-dir"] == {"ad_detector_train": "train", "ad_detector_export": "export"}
    tree = sorted(".".join(p.parent.relative_to(REPO).parts)
                  for p in (REPO / "detector").rglob("__init__.py"))
    assert sorted(tool["packages"]) == sorted(tree + ["ad_detector_train", "ad_detector_export"])
    for path in (REPO / "detector").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not any(n.split(".")[0] in ("train", "export") for n in names), f"{path} imports {names}"
