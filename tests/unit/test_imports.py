"""Every module of streams/ and models/ imports on its own, in a fresh interpreter: no import cycle,
no module that works only once another one is imported; imports between streams' packages point
one way (README, Architecture); and every package ships."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import models
import streams

ROOT = Path(__file__).resolve().parents[2]


def _walk() -> dict[str, bool]:
    """Module name -> is a package, for streams, models and everything under them."""
    found = {}
    for package in (streams, models):
        found[package.__name__] = True
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            found[info.name] = info.ispkg
    return dict(sorted(found.items()))


MODULES = _walk()


@pytest.mark.parametrize("module", list(MODULES))
def test_every_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_walk_sees_the_packages() -> None:
    assert {"streams.worker.wiring", "streams.state.codecs", "streams.io.redis", "streams.tools.bench.scale",
            "models.bpr"} <= set(MODULES)


def test_every_package_is_in_the_distribution() -> None:
    """pyproject lists the packages explicitly: a new package must be added there, or the wheel lacks it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert sorted(config["packages"]) == sorted(name for name, is_package in MODULES.items() if is_package)


#: Packages of streams (and its top-level modules) and what they must never import.
LAYERS = {
    "streams.worker": ("streams.tools",),
    "streams.state": ("streams.worker", "streams.tools"),
    "streams.io": ("streams.state", "streams.worker", "streams.tools"),
    "streams.settings": ("streams.io", "streams.state", "streams.worker", "streams.tools"),
    "streams.events": ("streams.io", "streams.state", "streams.worker", "streams.tools"),
    "streams.errors": ("streams.io", "streams.state", "streams.worker", "streams.tools"),
    "streams.client": ("streams.state", "streams.worker", "streams.tools"),
}


def _imports(module: str) -> set[str]:
    """The modules ``module``'s source imports (also under ``if TYPE_CHECKING:`` and inside functions)."""
    path = ROOT / (module.replace(".", "/") + ("/__init__.py" if MODULES[module] else ".py"))
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
    return names


def test_imports_between_the_packages_point_one_way() -> None:
    wrong = []
    for module in MODULES:
        for layer, forbidden in LAYERS.items():
            if module == layer or module.startswith(layer + "."):
                wrong += [f"{module} imports {name}" for name in sorted(_imports(module))
                          if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert wrong == []
