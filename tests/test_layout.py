"""The package layout's one-way dependencies, and the public API."""

import ast
import subprocess
import sys
from pathlib import Path

import revmux

PACKAGE = Path(revmux.__file__).parent
# subpackage -> the revmux subpackages it may import
ALLOWED = {"tuner": set(), "train": {"tuner"}}
# subpackage -> the application layers above it, which it must not import (not even inside a function)
FORBIDDEN = {"serve": {"workflow", "bench", "cli", "demo", "checks"}, "bench": {"workflow", "cli", "demo", "serve"}}


def _revmux_imports(path: Path) -> set[str]:
    """The first component after ``revmux.`` of every revmux import in a file (relative imports stay inside)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "revmux":
                found.add(parts[1] if len(parts) > 1 else "<top>")
    return found


def test_subpackages_depend_one_way():
    for sub, allowed in ALLOWED.items():
        for path in (PACKAGE / sub).glob("*.py"):
            imported = _revmux_imports(path) - {sub}
            assert imported <= allowed, f"{path.relative_to(PACKAGE)} imports revmux.{sorted(imported - allowed)}"


def test_serving_and_the_benchmark_sit_below_the_workflow():
    for sub, forbidden in FORBIDDEN.items():
        for path in (PACKAGE / sub).glob("*.py"):
            imported = _revmux_imports(path) & forbidden
            assert not imported, f"{path.relative_to(PACKAGE)} imports revmux.{sorted(imported)}"
    assert not _revmux_imports(PACKAGE / "loading.py") & {"workflow", "bench", "serve"}


def test_public_api():
    assert {"RevMuxConfig", "RevMuxModel", "get_revmux_model"} <= set(revmux.__all__)
    from peft import PeftType
    from revmux.inference import MuxClassifier as old_path
    from revmux.serve.inference import MuxClassifier

    assert old_path is MuxClassifier  # the import path from before revmux.serve

    assert PeftType.REVMUX == "REVMUX"


def test_importing_the_tuner_alone_registers_revmux():
    code = ("import peft, revmux.tuner as t; from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING as m; "
            "assert m[peft.PeftType.REVMUX] is t.RevMuxModel; import revmux; import revmux.tuner")
    subprocess.run([sys.executable, "-c", code], check=True)
