"""The package layout's one-way dependencies, and the public API."""

import ast
import subprocess
import sys
from pathlib import Path

import revmux

PACKAGE = Path(revmux.__file__).parent
# subpackage -> the revmux subpackages it may import
ALLOWED = {"tuner": set(), "train": {"tuner"}}


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


def test_public_api():
    assert {"RevMuxConfig", "RevMuxModel", "get_revmux_model"} <= set(revmux.__all__)
    from peft import PeftType
    from revmux.inference import MuxClassifier  # noqa: F401

    assert PeftType.REVMUX == "REVMUX"


def test_importing_the_tuner_alone_registers_revmux():
    code = ("import peft, revmux.tuner as t; from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING as m; "
            "assert m[peft.PeftType.REVMUX] is t.RevMuxModel; import revmux; import revmux.tuner")
    subprocess.run([sys.executable, "-c", code], check=True)
