"""The architecture, checked from the source (ast over the package files, nothing imported):
which rooms may import what, and that no two modules import each other round a cycle.

An import under `if TYPE_CHECKING:` never runs and is not counted. An import inside a function
runs when the function does: the checks count it like any other (a lazy import is how a heavy
dependency is kept off a fast path, never a way round a cycle), so the cycle check and the
no-torch and no-textual rules hold for what can run at all, not only for what runs on import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "bitsandbytes")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_files(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((REPO / package).rglob("*.py"))}


def _under_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, *, module_level: bool) -> set[str]:
    """The modules `path` imports (`from a import b` names a.b when that is a module; relative
    imports resolved); with module_level, only what runs when the module is imported."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _under_type_checking(child):
                continue
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                if not module_level:
                    visit(child, False)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                found.add(base)
                found.update(f"{base}.{a.name}" for a in child.names)
            visit(child, top)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return found


def graph(package: str, *, module_level: bool = True) -> dict[str, set[str]]:
    files = package_files(package)
    return {m: imports(p, module_level=module_level) & files.keys() - {m} for m, p in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def test_the_checks_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    source = REPO / "entrenar_tui" / "screens" / "monitor.py"
    assert "entrenar_tui.widgets.log_pane" in imports(source, module_level=True)


@pytest.mark.parametrize("package", ["entrenar_tui", "trainer"])
def test_no_import_cycle(package):
    assert cycles(graph(package, module_level=False)) == []


def test_screens_and_widgets_never_import_the_app():
    """Attributes down, messages up: a screen gets shared services from `self.app` (clock,
    controller, poll settings) but never imports the app module."""
    bad = {
        m: sorted(i for i in deps if i == "entrenar_tui.app")
        for m, p in package_files("entrenar_tui").items()
        if m.startswith(("entrenar_tui.screens", "entrenar_tui.widgets"))
        for deps in [imports(p, module_level=False) | _type_checking_imports(p)]
    }
    assert {m: v for m, v in bad.items() if v} == {}


def _type_checking_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        n.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _under_type_checking(node)
        for n in ast.walk(node)
        if isinstance(n, ast.ImportFrom)
    }


def test_nothing_reaches_into_an_app_owned_model():
    """Each run screen owns its RunModel; the app holds none."""
    hits = [
        f"{p.relative_to(REPO)}:{i}"
        for p in package_files("entrenar_tui").values()
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if "app.model" in line
    ]
    assert hits == []


def test_the_monitor_never_imports_torch():
    """Not at import, and not lazily either: nothing the monitor (entrenar_tui, trainer.monitor)
    can run pulls in torch, transformers, peft or bitsandbytes."""
    edges = {**graph("entrenar_tui", module_level=False), **graph("trainer", module_level=False)}
    every = {
        m: imports(p, module_level=False)
        for package in ("entrenar_tui", "trainer")
        for m, p in package_files(package).items()
    }
    start = [m for m in edges if m.startswith(("entrenar_tui", "trainer.monitor"))]
    seen, todo = set(start), list(start)
    while todo:
        m = todo.pop()
        for dep in edges.get(m, ()):
            parts = dep.split(".")
            for d in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
                if d in edges and d not in seen:
                    seen.add(d)
                    todo.append(d)
    heavy = {m: sorted(i for i in every[m] if i.split(".")[0] in HEAVY) for m in seen}
    assert {m: v for m, v in heavy.items() if v} == {}


@pytest.mark.parametrize("room", ["model", "charts", "output"])
def test_the_rooms_below_the_screens_never_import_textual(room):
    """Run state, charts and text output are plain Python (testable, and usable by `--once`,
    export and the browser view without a terminal UI): no textual, nor anything that imports
    it, however deep (lazy imports included). watch/ posts Textual Messages, so it may."""
    edges = graph("entrenar_tui", module_level=False)
    start = [m for m in edges if m.startswith(f"entrenar_tui.{room}")]
    seen, todo = set(start), list(start)
    while todo:
        for dep in edges[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    files = package_files("entrenar_tui")
    textual = {
        m: sorted(i for i in imports(files[m], module_level=False) if i.split(".")[0] == "textual")
        for m in seen
    }
    assert {m: v for m, v in textual.items() if v} == {}
    assert start, f"no modules under entrenar_tui/{room}"


MAX_RECIPE_LINES = 550


def class_lengths(source: str) -> dict[str, int]:
    """Lines of every class (its signature, docstring and body), by name."""
    return {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef)
    }


def test_the_recipe_class_keeps_only_what_it_coordinates():
    """The recipe says when; the documents (trainer/run_recorder.py), the step clock
    (trainer/step_clock.py) and a resume's checkpoint (trainer/resume_point.py) live outside it.
    A recipe past the cap has grown another responsibility back."""
    assert class_lengths("class C:\n    x = 1\n\n    def f(self):\n        pass\n") == {"C": 5}
    lengths = class_lengths((REPO / "trainer" / "train.py").read_text(encoding="utf-8"))
    assert 0 < lengths["FineTuneRecipe"] <= MAX_RECIPE_LINES


def room_of(module: str) -> str:
    """The room a module lives in: its top package's sub-package (`entrenar_tui.model.run` →
    `entrenar_tui.model`), or the module itself when it sits directly in the top package
    (`entrenar_tui.formatting`, `trainer.train`): those are rooms of one module."""
    return ".".join(module.split(".")[:2])


def collapsed(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph with every module collapsed to its room."""
    rooms: dict[str, set[str]] = {}
    for module, deps in edges.items():
        room = room_of(module)
        rooms.setdefault(room, set()).update(room_of(d) for d in deps if room_of(d) != room)
    return rooms


def test_the_room_check_can_fail():
    edges = {
        "p.a.x": {"p.b.y"},
        "p.b.y": set(),
        "p.b.z": {"p.a.w"},
        "p.a.w": set(),
        "p.c": {"p.a.x"},
    }
    assert cycles(edges) == []  # no module cycle...
    assert cycles(collapsed(edges)) == [["p.a", "p.b"]]  # ...but two rooms import each other


@pytest.mark.parametrize("package", ["entrenar_tui", "trainer"])
def test_no_cycle_between_rooms(package):
    """Two rooms never import each other, round any path: a module cycle is forbidden above, and
    so is one that only shows once modules are collapsed to their package (model ↔ output,
    model ↔ charts, sweep ↔ run_dir were such). Shared helpers live where every room may use
    them (entrenar_tui/formatting.py, entrenar_tui/smoothing.py, trainer/sweep_tag.py)."""
    rooms = collapsed(graph(package, module_level=False))
    assert len(rooms) > 5, rooms  # the graph was built at all
    assert cycles(rooms) == []


RUN_SCREEN_MAX_LINES = 300


def class_lines(path: Path, name: str) -> int:
    """How many lines the class `name` of `path` spans, from its `class` line to its last (its
    docstring, comments and blank lines included), by ast."""
    (node,) = [
        n
        for n in ast.parse(path.read_text(encoding="utf-8")).body
        if getattr(n, "name", "") == name
    ]
    return node.end_lineno - node.lineno + 1


def test_the_run_screen_only_coordinates(tmp_path):
    """MonitorScreen composes and routes; what it used to do itself lives with what it concerns:
    chart controls (charts/controls.py), the charts and their cache (widgets/run_charts.py), the
    header's fitting (widgets/run_header.py), x/r/s (screens/steering.py), the palette
    (help.palette_commands), the alerts (model/run_alerts.py, told through messages)."""
    sample = tmp_path / "sample.py"
    sample.write_text('class A:\n    """Doc."""\n\n    x = 1\n\n\ndef f():\n    pass\n')
    assert class_lines(sample, "A") == 4  # the check counts what it should
    source = REPO / "entrenar_tui" / "screens" / "monitor.py"
    assert 100 < class_lines(source, "MonitorScreen") <= RUN_SCREEN_MAX_LINES
