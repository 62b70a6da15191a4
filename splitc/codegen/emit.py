"""Write a compiled plan: the ONNX parts (checked), the sweep's variants, TVM libraries, plan.json and any extra
files, into a temporary directory that replaces the output directory only when whole."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import onnx
import onnx_ir as ir

from splitc.codegen import output
from splitc.codegen.passes.split import SplitResult
from splitc.errors import SplitcError


def artifact_names(split: SplitResult, targets) -> dict[int, str]:
    """Stage index -> file: head.onnx / tail.onnx for a two-tier plan, stage<i>_<target>.onnx otherwise."""
    tiers = [s.tier for s in split.stages]
    simple = len(targets) == 2 and tiers in ([0], [0, 1])
    return {s.index: (("head" if s.tier == 0 else "tail") + ".onnx" if simple else f"stage{s.index}_{targets[s.tier].name}.onnx")
            for s in split.stages if s.model is not None}


def _save_parts(directory: Path, split: SplitResult, artifacts: dict[int, str]) -> None:
    for index, part in split.parts.items():
        path = directory / artifacts[index]
        proto = ir.to_proto(part)
        onnx.save_model(proto, str(path))
        try:
            onnx.checker.check_model(str(path))
        except onnx.checker.ValidationError as e:
            raise SplitcError(f"internal error: emitted {path.name} fails onnx.checker: {str(e).splitlines()[0]}") from None


def plan_text(plan: dict) -> str:
    """plan.json's text: indented for people, compact once the plan lists more than 2,000 nodes (the indenting
    encoder is pure Python: 14 s of a 100k-node compile; the compact one is C)."""
    return json.dumps(plan, indent=1 if len(plan.get("nodes", ())) <= 2000 else None) + "\n"


def write_atomically(out: Path, split: SplitResult, artifacts, targets, plan: dict, force: bool, tvm_targets=None,
                      extra: Callable[[Path], None] | None = None, variants=(), keep=()) -> None:
    """Write everything into a temporary directory beside ``out``, then install it (splitc.codegen.output): ``force``
    replaces only a directory splitc wrote that holds none of ``keep`` (the input model) nor the current directory."""
    out = output.check_replaceable(out, force, keep)  # refuse before writing anything
    with output.staged(out, force, keep) as tmp:
        _save_parts(tmp, split, artifacts)
        for directory, v_split, v_artifacts, v_plan, _interval in variants:
            (tmp / directory).mkdir(parents=True)
            _save_parts(tmp / directory, v_split, v_artifacts)
            if tvm_targets:
                from splitc.codegen.tvm import compile_parts  # noqa: PLC0415

                v_plan["tvm_artifacts"] = compile_parts(tmp / directory, v_plan, tvm_targets)
            (tmp / directory / "plan.json").write_text(plan_text(v_plan))
        if tvm_targets:  # TVM libraries from the parts just saved, into the same temp dir: still all or nothing
            from splitc.codegen.tvm import compile_parts  # noqa: PLC0415

            plan["tvm_artifacts"] = compile_parts(tmp, plan, tvm_targets)
        (tmp / "plan.json").write_text(plan_text(plan))
        if extra is not None:
            extra(tmp)
