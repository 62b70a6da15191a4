"""Import: an ONNX file becomes an ``onnx_ir`` model with static shapes, sorted, uniquely named."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from splitc.errors import SplitcError
from splitc.runtimes.files import sha256_file  # noqa: F401  (re-exported)


def parse_input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``["x=1x3x224x224", "mask=1x128"]`` or ``["x=1x3x224x224,mask=1x128"]``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs or []:
        for item in filter(None, (s.strip() for s in re.split(r",(?=[^,=]+=)", spec))):
            name, sep, dims = item.rpartition("=")
            if not sep or not name or not re.fullmatch(r"\d+(x\d+)*", dims.strip()):
                raise SplitcError(f"--input-shape '{item}': write it as NAME=DxDxD, e.g. x=1x3x224x224")
            shapes[name.strip()] = tuple(int(d) for d in dims.strip().split("x"))
    return shapes


def load_proto(path: str | Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.exists():
        raise SplitcError(f"{path}: no such file")
    if path.is_dir():
        raise SplitcError(f"{path}: is a directory, not an ONNX model file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError) as e:
        raise SplitcError(f"{path}: not a readable ONNX model ({type(e).__name__}); is the file complete?") from None
    if proto.ir_version <= 0 or not proto.opset_import or not proto.graph.node:
        raise SplitcError(f"{path}: not an ONNX model (no IR version, opset or nodes); is it truncated or another format?")
    try:
        onnx.load_external_data_for_model(proto, str(path.parent))
    except (OSError, onnx.checker.ValidationError) as e:
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise SplitcError(f"{path}: its external weight data could not be read ({detail}); keep the data files beside the model") from None
    return proto


def to_ir(proto: onnx.ModelProto, name: str) -> ir.Model:
    try:
        return ir.from_proto(proto)
    except Exception as e:  # noqa: BLE001  (a malformed graph fails in many ways)
        raise SplitcError(f"{name}: the graph could not be read ({str(e).splitlines()[0][:160]})") from None
