"""The :mod:`models` package: what it imports and what it exports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import models
from models import InvalidInputError, ModelError, UnknownIdError

ROOT = Path(__file__).resolve().parents[3]


def test_import_pulls_in_no_service_clients() -> None:
    """models/ is pure: importing it (every module, River adapter included) loads no service client or River."""
    code = (
        "import json, sys; import models, models.evaluate, models.datasets, models.river_adapter; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'river', 'faust', 'aiokafka', 'redis', 'orjson', 'streams'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [], out.stdout


def test_models_import_only_numpy_and_stdlib() -> None:
    allowed = set(sys.stdlib_module_names) - {"pickle", "shelve", "marshal"} | {"numpy"}
    for path in (ROOT / "models").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed | {"__future__"}, f"{path.name} imports {name}"


def test_public_api() -> None:
    assert set(models.__all__) >= {"BPRMF", "Popularity", "IdMap", "Recommender", "WorkerModel", "ModelError", "event_weight"}
    assert issubclass(InvalidInputError, ModelError) and issubclass(UnknownIdError, KeyError)
    assert (ROOT / "models" / "py.typed").exists()
