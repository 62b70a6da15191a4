"""The architecture, held by import contracts (pyproject.toml [tool.importlinter]): stages import only earlier
stages, the runtime needs none of the compiler's dependencies, the optimizer never sees the IR."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout


def test_every_stage_package_is_a_layer():
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.split("|")}
    top = {p.name for p in (ROOT / "splitc").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    top |= {p.stem for p in (ROOT / "splitc").glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert {f"splitc.{m}" for m in top} == named, "a new package or module of splitc/ must take its place in the layers"


def test_every_optimizer_module_is_kept_off_the_ir():
    """Each module of splitc/partition outside its passes/ (the IR bridge) is a source of the 'no IR' contract."""
    contract = next(c for c in _contracts() if c["name"].startswith("the optimizer"))
    modules = {f"splitc.partition.{p.stem}" for p in (ROOT / "splitc" / "partition").glob("*.py") if p.stem != "__init__"}
    assert modules == set(contract["source_modules"])
    assert {"onnx", "onnx_ir"} <= set(contract["forbidden_modules"])
