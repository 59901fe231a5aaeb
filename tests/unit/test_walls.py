"""The walls of DESIGN.md §3, checked on the source and on a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def ray_allowed(path: Path) -> bool:
    """graph.py wires the deployments; `ray_adapter.py` files adapt one concern to Ray."""
    return path.name == "graph.py" or path.stem == "ray_adapter"


def test_serve_app_does_not_import_ray_outside_graph_and_adapters():
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "serve_app").rglob("*.py")
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
