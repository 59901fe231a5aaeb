"""The walls of DESIGN.md §3, checked on the source and on a fresh interpreter.

The packages of serve_app form layers; a module may import its own layer's packages and
the layers below, never one above, and the package graph has no cycle:

    api  →  service  →  models · jobs · storage · security · prompts · observability
         →  config · protocol · families · errors · environment · images · db ·
            migrations

graph.py and the `ray_adapter.py` modules wire everything to Ray and sit on top.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVE_APP = REPO / "serve_app"
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"api"}),
    frozenset({"service"}),
    frozenset({"models", "jobs", "storage", "security", "prompts", "observability"}),
    frozenset(
        {"config", "protocol", "families", "errors", "environment", "images", "db", "migrations"}
    ),
)
WIRING = frozenset({"graph", "ray_adapter"})
WEB_FRAMEWORKS = ("fastapi", "starlette")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from serve_app import environment` imports the module serve_app.environment.
            names.add(node.module)
            if node.module == "serve_app":
                names.update(f"serve_app.{alias.name}" for alias in node.names)
    return names


def package_of(module: str) -> str | None:
    """`serve_app.service.images` → `service`; None for the package root itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "serve_app" and len(parts) > 1 else None


def layer_of(package: str) -> int:
    for index, layer in enumerate(LAYERS):
        if package in layer:
            return index
    raise AssertionError(f"serve_app/{package} is in no layer of test_walls.LAYERS")


def package_edges(root: Path = SERVE_APP) -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) → the files that make the edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] == "__init__.py" or relative.stem in WIRING:
            continue
        source = relative.parts[0].removesuffix(".py")
        for module in imported_modules(path):
            target = package_of(module)
            if target is not None and target != source and target not in WIRING:
                edges.setdefault((source, target), []).append(str(relative))
    return edges


def upward_edges(edges: dict[tuple[str, str], list[str]]) -> list[str]:
    return sorted(
        f"{source} → {target} ({', '.join(files)})"
        for (source, target), files in edges.items()
        if layer_of(target) < layer_of(source)
    )


def cycles(edges: dict[tuple[str, str], list[str]]) -> list[str]:
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    found = []

    def visit(node: str, path: list[str]) -> None:
        for following in sorted(graph.get(node, ())):
            if following in path:
                found.append(" → ".join([*path[path.index(following) :], following]))
            else:
                visit(following, [*path, following])

    for start in sorted(graph):
        visit(start, [start])
    return found


def test_every_package_has_a_layer():
    packages = {path.stem for path in SERVE_APP.glob("*.py")} | {
        path.name for path in SERVE_APP.iterdir() if (path / "__init__.py").exists()
    }
    for package in packages - WIRING - {"__init__"}:
        layer_of(package)


def test_imports_run_one_way():
    edges = package_edges()
    assert upward_edges(edges) == []
    assert cycles(edges) == []


def test_a_back_edge_is_caught(tmp_path):
    """The check itself can fail: a copy of the tree with one back edge added."""
    copy = tmp_path / "serve_app"
    for path in SERVE_APP.rglob("*.py"):
        target = copy / path.relative_to(SERVE_APP)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    with (copy / "jobs" / "store.py").open("a") as store:
        store.write("\nfrom serve_app.service.images import ImageService  # noqa\n")
    edges = package_edges(copy)
    assert upward_edges(edges) == ["jobs → service (jobs/store.py)"]
    assert "jobs → service → jobs" in cycles(edges)


@pytest.mark.parametrize(
    "package", sorted(LAYERS[1] | LAYERS[2] | LAYERS[3]), ids=lambda package: package
)
def test_nothing_below_api_imports_a_web_framework(package):
    paths = (
        list((SERVE_APP / package).rglob("*.py"))
        if (SERVE_APP / package).is_dir()
        else [SERVE_APP / f"{package}.py"]
    )
    offenders = [
        str(path.relative_to(REPO))
        for path in paths
        if any(name.split(".")[0] in WEB_FRAMEWORKS for name in imported_modules(path))
    ]
    assert offenders == []


def ray_allowed(path: Path) -> bool:
    """graph.py wires the deployments; `ray_adapter.py` files adapt one concern to Ray."""
    return path.stem in WIRING


def test_serve_app_does_not_import_ray_outside_graph_and_adapters():
    offenders = [
        str(path.relative_to(REPO))
        for path in SERVE_APP.rglob("*.py")
        if not ray_allowed(path)
        and any(name == "ray" or name.startswith("ray.") for name in imported_modules(path))
    ]
    assert offenders == []


def test_deployments_do_not_import_each_other():
    for path in (REPO / "deployments").glob("*.py"):
        assert not any(name.startswith("deployments") for name in imported_modules(path)), path


def test_gateway_never_loads_torch_diffusers_or_transformers():
    code = (
        "import sys, deployments.gateway\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_error_codes_are_written_once():
    """Every `code=` the service answers with names an ErrorCode member, not a string."""
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in SERVE_APP.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"""\bcode=["']|"code": ["']""", line)
    ]
    assert offenders == []


def test_environment_variables_are_read_in_one_module():
    offenders = [
        str(path.relative_to(REPO))
        for path in SERVE_APP.rglob("*.py")
        if path != SERVE_APP / "environment.py"
        and re.search(r"\bos\.(environ|getenv)\b", path.read_text())
    ]
    assert offenders == []
