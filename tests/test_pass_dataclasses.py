"""Every splitc pass is a frozen dataclass whose fields are its options: built from its options, equal when they
are, never changed by running (so one instance can run on many models, as the pipeline lists do)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path

import onnx_ir as ir
import pytest

import splitc

PASS_MODULES = sorted(
    ".".join(p.relative_to(Path(splitc.__file__).parent.parent).with_suffix("").parts)
    for p in Path(splitc.__file__).parent.glob("*/passes/*.py") if p.stem != "__init__"
)


def _passes():
    found = []
    for name in PASS_MODULES:
        module = importlib.import_module(name)
        found += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                  if issubclass(cls, ir.passes.PassBase) and cls.__module__ == name]
    return found


def test_every_pass_module_is_found():
    names = {cls.__name__ for cls in _passes()}
    assert {"FixInputShapesPass", "InferShapesPass", "MaterializeShapesPass", "ReplicablePass", "TensorBytesPass",
            "FlopsPass", "LatencyPass", "PartitionPass", "SplitPass"} <= names


@pytest.mark.parametrize("cls", _passes(), ids=lambda c: c.__name__)
def test_each_pass_is_a_frozen_dataclass(cls):
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, f"{cls.__name__} is not a frozen dataclass"
    p = cls()  # every option has a default
    assert p == cls()
    for f in dataclasses.fields(cls):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(p, f.name, getattr(p, f.name))
