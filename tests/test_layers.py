"""bobjax's parts import each other one way (DESIGN.md, "Layers, one way up"): every import between them, at module
level or inside a function, points at a part in a lower layer, or at one listed earlier in the same layer (the
stages in pipeline order: a stage reads the artifacts of the stages before it). An import that points up breaks this
test before it closes a cycle that only shows when the code is read as a whole.

A part is a subpackage of ``bobjax`` or a top-level module; ``bobjax.toyworld.prior`` (the trainer of the toy world's
Stable Diffusion prior) is a part of its own, above the training loop it uses, while the toy world itself is a data
source."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "bobjax"

# Bottom to top. Within a layer a part may import only the parts listed before it.
LAYERS = (
    ("errors", "assets", "grid", "prompt_templates"),
    ("cluster", "accelerator", "artifacts", "run_folder", "parallel", "targets", "config_lib", "meshes"),
    ("models", "toyworld", "data"),
    ("training", "fit", "identity", "quality", "toyworld.prior"),
    ("caption", "finetune", "generate", "filter", "classify"),
    ("pretrained", "share", "sweep", "compare"),
    ("report",),
    ("main", "aot"),
)
RANK = {part: (layer, order) for layer, parts in enumerate(LAYERS) for order, part in enumerate(parts)}


def part_of(module: str) -> str | None:
    """The part a dotted module name belongs to; None outside bobjax (or for the package itself)."""
    names = module.split(".")
    if names[0] != "bobjax" or len(names) < 2:
        return None
    if names[1:3] == ["toyworld", "prior"]:
        return "toyworld.prior"
    return names[1]


def _module_name(path: pathlib.Path) -> str:
    names = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(names[:-1] if names[-1] == "__init__" else names)


def _imported(node, package: str) -> list[str]:
    """The dotted names an import statement reaches (``from bobjax import x`` reaches ``bobjax.x``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
        module = f"{base}.{node.module}" if node.module else base
    else:
        module = node.module
    return [f"{module}.{alias.name}" for alias in node.names] + [module]


def import_edges() -> dict[tuple[str, str], list[str]]:
    """(importing part, imported part) -> the files that make the edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        source = part_of(module)
        if source is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in {part_of(name) for name in _imported(node, package)} - {None, source}:
                files = edges.setdefault((source, target), [])
                if str(path.relative_to(ROOT.parent)) not in files:
                    files.append(str(path.relative_to(ROOT.parent)))
    return edges


def cycles(edges) -> list[list[str]]:
    """The strongly connected components of more than one part (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_part_has_a_layer():
    parts = {part_of(_module_name(p)) for p in ROOT.rglob("*.py")} - {None}
    assert parts - set(RANK) == set(), "give each new part of bobjax a layer in LAYERS (and in DESIGN.md)"


def test_the_parts_import_each_other_without_a_cycle():
    assert cycles(import_edges()) == []


def test_every_import_points_down_the_layers():
    upward = [f"{a} -> {b} ({', '.join(files)})" for (a, b), files in sorted(import_edges().items())
              if RANK[b] >= RANK[a]]
    assert upward == []


@pytest.mark.parametrize("edges, expected", [
    ({("a", "b"), ("b", "c")}, []),
    ({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}, [["a", "b", "c"]]),
])
def test_the_cycle_finder_finds_a_cycle(edges, expected):
    assert cycles(edges) == expected


def test_imports_inside_functions_and_relative_imports_count(tmp_path):
    tree = ast.parse("def f():\n    from bobjax.generate import plan\nfrom . import stage\n")
    names = [name for node in ast.walk(tree) for name in _imported(node, "bobjax.toyworld")]
    assert {part_of(n) for n in names} >= {"generate", "toyworld"}


if __name__ == "__main__":  # Prints the graph: python tests/test_layers.py
    found = import_edges()
    for source in sorted({a for a, _ in found}):
        print(source, "->", " ".join(sorted(b for a, b in found if a == source)))
    print("cycles:", cycles(found))
    for (a, b), files in sorted(found.items()):
        if RANK.get(b, (99,)) >= RANK.get(a, (99,)):
            print(f"up: {a} -> {b}: {', '.join(files)}")
