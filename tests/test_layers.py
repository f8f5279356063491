"""The import contract of edgeq (issue 11): layers that only import downward, and no import cycles.

Every module under ``edgeq/`` is parsed (not imported) and *every* AST node is visited, so these
all count as a dependency of the module that contains them:

* ``import edgeq.x`` / ``from edgeq.x import y`` / relative imports, at module level, inside
  functions or methods (lazy imports), inside ``try:`` blocks, and inside ``if TYPE_CHECKING:``
  blocks. TYPE_CHECKING-only imports count on purpose: they are a design dependency (the module
  is written against the other one's types), they just don't execute. Messages mark them.
* ``importlib.import_module("edgeq.x")`` / ``__import__("edgeq.x")`` with a string literal; with
  an f-string such as ``f"edgeq.cli.{name}"`` the constant prefix counts (-> ``edgeq.cli``).
* string constants of the handler form ``"edgeq.x.y:func"`` (an edge of the module that resolves
  them: RESOLVED_BY; the mode table's handlers are imported by ``edgeq.quantizer``).
* the values of a ``_LAZY = {"name": "edgeq.module", ...}`` dict (lazy re-exports in a
  package ``__init__``).

Not counted: ``importlib.util.find_spec("edgeq.x")`` (a probe for an optional part), the
``-m edgeq.x`` argument of a subprocess, and other strings (labels such as ``"edgeq.compare"``).

An import names one module: ``from edgeq.passes import plan`` -> ``edgeq.passes.plan`` when
``plan`` is a submodule, else ``edgeq.passes`` (the package's ``__init__``); ``import edgeq`` and
``from edgeq import quantize`` -> the package ``edgeq``. Parents that Python also runs on the way
are not added as edges.

The contract, checked below:

1. every edgeq module belongs to exactly one entry of LAYERS (new modules are placed deliberately);
2. a module imports only modules of its own entry (its subtree) or of a lower layer; two entries
   of the same layer ("siblings") do not import each other unless the pair is in ALLOWED;
3. no import cycle among edgeq's modules (package ``__init__`` -> own submodule edges included).

Run: ``.venv/bin/python -m pytest tests/test_layers.py -q`` (about a second; ``make test`` runs it).
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

# --- the contract: edit these ----------------------------------------------------------------

# Bottom first. A module may import from its own entry's subtree or from any lower layer.
# An entry is a module prefix: "edgeq.passes" is edgeq/passes/__init__.py and everything under
# it. The root package entry "edgeq" (last) matches edgeq/__init__.py only. A prefix that matches
# no module is fine (modules being created); a module that matches no entry fails the test.
LAYERS: list[tuple[str, ...]] = [
    ("edgeq.errors", "edgeq._version"),
    ("edgeq.cluster",),  # the executor (serial, or Ray tasks): every layer that spreads work asks it
    ("edgeq.files",),  # regular files only, external data inside the model's folder: every reader
    ("edgeq.config", "edgeq.metrics", "edgeq.graph", "edgeq.zoo"),  # zoo: on errors alone; exporter and cli build from it
    ("edgeq.io",),
    ("edgeq.runtime",),
    ("edgeq.reference", "edgeq.calibrate", "edgeq.prepare", "edgeq.passes", "edgeq.exporter", "edgeq.modelinfo"),
    ("edgeq.report",),
    ("edgeq.stages",),
    ("edgeq.auto", "edgeq.qat"),  # qat: torch modules simulating the stages' QDQ models
    ("edgeq.quantizer",),
    ("edgeq.cli", "edgeq.__main__"),
    ("edgeq",),  # the package itself: it only re-exports
]

# Sibling imports that are allowed: (importer prefix, imported prefix, reason). Keep it short;
# an entry that no longer matches any import fails test_allowed_entries_are_used.
ALLOWED: list[tuple[str, str, str]] = [
    ("edgeq.__main__", "edgeq.cli", "`python -m edgeq` is the CLI's entry point"),
]

# Modules holding handler strings ("module:function") that another module resolves: the edge
# is the resolver's. The mode table (edgeq.config.MODES) names each mode's handler; only
# edgeq.quantizer imports them (importlib), and it sits above every handler.
RESOLVED_BY: dict[str, str] = {
    "edgeq.config": "edgeq.quantizer",
}

ROOT = "edgeq"
SRC = Path(__file__).resolve().parents[1] / ROOT

# --- the checker -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    how: str  # "", "in a function", "TYPE_CHECKING", "import_module", "_LAZY", "handler string"

    def where(self) -> str:
        return f"line {self.line}" + (f", {self.how}" if self.how else "")


def discover(src: Path, root: str) -> dict[str, Path]:
    """Module name -> file, for every .py file under the package directory ``src``."""
    modules = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([root, *parts])] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest existing module that ``name`` starts with (None for outside the package)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _string_prefix(node: ast.expr) -> str | None:
    """A string literal, or the constant prefix of an f-string cut back to whole dotted parts."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        head = str(node.values[0].value)
        return head.rpartition(".")[0] if "." in head else None
    return None


def module_edges(module: str, path: Path, modules: dict[str, Path], root: str) -> list[Edge]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    edges: list[Edge] = []

    def add(target: str, node: ast.AST, how: str) -> None:
        if target == root or target.startswith(root + "."):
            dst = _resolve(target, modules)
            src = RESOLVED_BY.get(module, module) if how == "handler string" else module
            if dst is not None and dst != src:
                edges.append(Edge(src, dst, node.lineno, f"{how} in {module}" if src != module else how))

    def visit(node: ast.AST, how: str) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, how)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # a submodule if there is one, else the module itself
                sub = f"{target}.{alias.name}"
                add(sub if sub in modules else target, node, how)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and node.args:
                target = _string_prefix(node.args[0])
                if target and target.startswith("."):
                    target = package + target if target != "." else package
                if target:
                    add(target, node, "import_module")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            head, colon, attr = node.value.partition(":")
            if colon and attr.isidentifier() and all(p.isidentifier() for p in head.split(".")):
                add(head, node, "handler string")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets) and isinstance(node.value, ast.Dict):
                for value in node.value.values:
                    if isinstance(value, ast.Constant) and isinstance(value.value, str):
                        add(value.value, value, "_LAZY")

        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, "TYPE_CHECKING")
            for child in node.orelse:
                visit(child, how)
            visit(node.test, how)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not how:
            how = "in a function"
        for child in ast.iter_child_nodes(node):
            visit(child, how)

    visit(tree, "")
    return list(dict.fromkeys(edges))  # `from x import a, b` is one edge


def build_graph(src: Path, root: str) -> tuple[dict[str, Path], list[Edge]]:
    modules = discover(src, root)
    edges = [e for m, p in modules.items() for e in module_edges(m, p, modules, root)]
    return modules, edges


def strongly_connected(nodes: list[str], edges: list[Edge]) -> list[list[str]]:
    """Tarjan's SCCs with more than one module (self-imports are not edges here)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        if e.dst not in succ[e.src]:
            succ[e.src].append(e.dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    for start in nodes:  # iterative, so deep graphs can't hit the recursion limit
        if start in index:
            continue
        work = [(start, iter(succ[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(succ[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    scc = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        scc.append(member)
                        if member == node:
                            break
                    if len(scc) > 1:
                        out.append(sorted(scc))
    return sorted(out)


def shortest_cycle(scc: list[str], edges: list[Edge]) -> list[Edge]:
    """One shortest cycle through the SCC's first module, as the edges (with lines) that make it."""
    members = set(scc)
    first: dict[tuple[str, str], Edge] = {}
    for e in edges:
        if e.src in members and e.dst in members:
            first.setdefault((e.src, e.dst), e)
    start = scc[0]
    prev: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for (a, b), e in first.items():
            if a != node:
                continue
            if b == start:
                path = [e]
                while path[0].src != start:
                    path.insert(0, prev[path[0].src])
                return path
            if b not in prev:
                prev[b] = e
                queue.append(b)
    raise AssertionError(f"no cycle through {start} in {scc}")


def cycle_messages(modules: dict[str, Path], edges: list[Edge]) -> list[str]:
    messages = []
    for scc in strongly_connected(list(modules), edges):
        chain = "; ".join(f"{e.src} imports {e.dst} ({e.where()})" for e in shortest_cycle(scc, edges))
        pairs: dict[tuple[str, str], list[str]] = {}
        for e in edges:
            if e.src in scc and e.dst in scc:
                pairs.setdefault((e.src, e.dst), []).append(e.where())
        inside = [f"{a} -> {b} ({'; '.join(lines)})" for (a, b), lines in sorted(pairs.items())]
        messages.append(f"import cycle among {len(scc)} modules {scc}: {chain}"
                        + ("" if len(inside) <= 2 else "\n    all imports within it:\n      " + "\n      ".join(inside)))
    return messages


def _matches(module: str, prefix: str, root: str) -> bool:
    if prefix == root:
        return module == root
    return module == prefix or module.startswith(prefix + ".")


def assign(modules, layers, root: str) -> tuple[dict[str, tuple[int, str]], list[str]]:
    """Module -> (layer index, entry); plus messages for modules in no entry or in several."""
    where: dict[str, tuple[int, str]] = {}
    problems = []
    for module in modules:
        hits = [(i, entry) for i, layer in enumerate(layers) for entry in layer if _matches(module, entry, root)]
        if len(hits) == 1:
            where[module] = hits[0]
        elif not hits:
            problems.append(f"{module} belongs to no layer: add it (or a prefix of it) to one entry of LAYERS")
        else:
            problems.append(f"{module} matches several LAYERS entries {[e for _, e in hits]}: keep one")
    return where, problems


def layer_messages(edges, where, allowed, root: str) -> tuple[list[str], set[int]]:
    """Upward and sibling imports; and the indexes of the ALLOWED entries that were used."""
    messages, used = [], set()
    for e in edges:
        if e.src not in where or e.dst not in where:
            continue  # reported by assign()
        (ls, es), (ld, ed) = where[e.src], where[e.dst]
        if es == ed or ld < ls:
            continue
        if ld > ls:
            messages.append(
                f"{e.src} imports {e.dst} ({e.where()}), a higher layer ({ed!r} is layer {ld}, {es!r} layer {ls}): "
                "move the shared code down or invert the dependency"
            )
            continue
        hit = [i for i, (a, b, _) in enumerate(allowed) if _matches(e.src, a, root) and _matches(e.dst, b, root)]
        if hit:
            used.update(hit)
        else:
            messages.append(
                f"{e.src} imports {e.dst} ({e.where()}), a sibling in layer {ls} ({es!r} -> {ed!r}): "
                "move the shared code down a layer, or add the pair to ALLOWED with a reason"
            )
    return messages, used


def check(src: Path, root: str, layers, allowed) -> list[str]:
    """Every contract violation of the package at ``src`` (empty when it holds)."""
    modules, edges = build_graph(src, root)
    where, problems = assign(modules, layers, root)
    layer_problems, _ = layer_messages(edges, where, allowed, root)
    return problems + layer_problems + cycle_messages(modules, edges)


@cache
def _edgeq():
    return build_graph(SRC, ROOT)


def _fail(title: str, messages: list[str]) -> None:
    if messages:
        pytest.fail(f"{title} ({len(messages)}):\n  " + "\n  ".join(messages), pytrace=False)


# --- the tests on edgeq ------------------------------------------------------------------------


def test_every_module_is_in_exactly_one_layer():
    modules, _ = _edgeq()
    assert len(modules) > 50, f"found only {len(modules)} modules under {SRC}"
    _, problems = assign(modules, LAYERS, ROOT)
    _fail("modules not placed in LAYERS", problems)


def test_layers_only_import_downward():
    modules, edges = _edgeq()
    where, _ = assign(modules, LAYERS, ROOT)
    messages, _ = layer_messages(edges, where, ALLOWED, ROOT)
    _fail("imports against the layer contract", messages)


def test_no_import_cycles():
    _fail("import cycles", cycle_messages(*_edgeq()))


def test_allowed_entries_are_used():
    modules, edges = _edgeq()
    where, _ = assign(modules, LAYERS, ROOT)
    _, used = layer_messages(edges, where, ALLOWED, ROOT)
    stale = [f"ALLOWED entry {a!r} -> {b!r} matches no import: remove it" for i, (a, b, _) in enumerate(ALLOWED)
             if i not in used]
    _fail("stale ALLOWED entries", stale)


def test_contract_lists_are_well_formed():
    entries = [e for layer in LAYERS for e in layer]
    assert len(entries) == len(set(entries)), "an entry appears twice in LAYERS"
    assert all(e == ROOT or e.startswith(ROOT + ".") for e in entries)
    for a, b, reason in ALLOWED:
        assert reason.strip(), f"ALLOWED {a} -> {b} needs a reason"


# --- the checker can fail: a synthetic package -------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_checker_catches_upward_sibling_and_cycle(tmp_path):
    src = _write(tmp_path, {
        "pkg/__init__.py": '_LAZY = {"run": "pkg.top"}\n',
        "pkg/low.py": "def f():\n    from pkg.mid import helper  # upward, inside a function\n",
        "pkg/mid.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import side\n",
        "pkg/side.py": "import importlib\nH = 'pkg.mid:helper'\n",  # sibling of mid; side -> mid -> side
        "pkg/top.py": "import pkg\n",  # pkg -> pkg.top (_LAZY) -> pkg: a cycle
        "pkg/stray.py": "",
    })
    layers = [("pkg.low",), ("pkg.mid", "pkg.side"), ("pkg.top",), ("pkg",)]
    messages = check(src, "pkg", layers, [])
    text = "\n".join(messages)
    assert "pkg.stray belongs to no layer" in text
    assert "pkg.low imports pkg.mid (line 2, in a function), a higher layer" in text
    assert "pkg.mid imports pkg.side (line 3, TYPE_CHECKING), a sibling in layer 1" in text
    assert "pkg.side imports pkg.mid (line 2, handler string), a sibling in layer 1" in text
    assert "pkg.top imports pkg (line 1), a higher layer" in text
    assert "import cycle among 2 modules ['pkg.mid', 'pkg.side']" in text
    assert "import cycle among 2 modules ['pkg', 'pkg.top']: pkg imports pkg.top (line 1, _LAZY)" in text
    assert len(messages) == 7, text

    allowed = [("pkg.mid", "pkg.side", "test"), ("pkg.side", "pkg.mid", "test")]
    messages = check(src, "pkg", layers, allowed)
    assert not any("sibling" in m for m in messages), messages


def test_checker_resolves_imports(tmp_path):
    src = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a/__init__.py": "X = 1\n",
        "pkg/a/b.py": "from . import c\nfrom .. import d\nfrom ..a import X\n",
        "pkg/a/c.py": "import importlib\nimportlib.import_module(f'pkg.d.{1}')\n",
        "pkg/d.py": "from pkg import a\nfrom pkg import something\nimport pkg.a.b as b\n",
    })
    modules, edges = build_graph(src, "pkg")
    got = {(e.src, e.dst) for e in edges}
    assert got == {
        ("pkg.a.b", "pkg.a.c"), ("pkg.a.b", "pkg.d"), ("pkg.a.b", "pkg.a"),
        ("pkg.a.c", "pkg.d"),
        ("pkg.d", "pkg.a"), ("pkg.d", "pkg"), ("pkg.d", "pkg.a.b"),
    }, got
    layers = [("pkg.d",), ("pkg.a",), ("pkg",)]
    assert check(src, "pkg", layers, []) == [
        "pkg.d imports pkg.a (line 1), a higher layer ('pkg.a' is layer 1, 'pkg.d' layer 0): "
        "move the shared code down or invert the dependency",
        "pkg.d imports pkg (line 2), a higher layer ('pkg' is layer 2, 'pkg.d' layer 0): "
        "move the shared code down or invert the dependency",
        "pkg.d imports pkg.a.b (line 3), a higher layer ('pkg.a' is layer 1, 'pkg.d' layer 0): "
        "move the shared code down or invert the dependency",
        "import cycle among 3 modules ['pkg.a.b', 'pkg.a.c', 'pkg.d']: "
        "pkg.a.b imports pkg.d (line 2); pkg.d imports pkg.a.b (line 3)\n    all imports within it:\n"
        "      pkg.a.b -> pkg.a.c (line 1)\n      pkg.a.b -> pkg.d (line 2)\n"
        "      pkg.a.c -> pkg.d (line 2, import_module)\n      pkg.d -> pkg.a.b (line 3)",
    ]


def test_checker_passes_a_clean_package(tmp_path):
    src = _write(tmp_path, {
        "pkg/__init__.py": '_LAZY = {"run": "pkg.top"}\n',
        "pkg/low.py": "",
        "pkg/top.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import low\n"
                      "def f():\n    from .low import x\n",
    })
    assert check(src, "pkg", [("pkg.low",), ("pkg.top",), ("pkg",)], []) == []
