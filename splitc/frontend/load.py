"""Import: an ONNX file becomes an ``onnx_ir`` model with static shapes, sorted, uniquely named."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from splitc.errors import SplitcError
from splitc.frontend.check import check_graph
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
    _decode_strings(proto)
    load_external_data(proto, path)
    return proto


def _decode_strings(message) -> None:
    """ONNX strings are UTF-8, but protobuf hands invalid ones over as bytes: make them text, bytes the decoder cannot
    read written as \\xNN (the same bytes become the same name everywhere, so the graph stays connected)."""
    for fd, value in message.ListFields():
        repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
        if fd.type == fd.TYPE_MESSAGE:
            for item in value if repeated else [value]:
                _decode_strings(item)
        elif fd.type == fd.TYPE_STRING:
            if repeated and any(isinstance(v, bytes) for v in value):
                text = [v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v for v in value]
                del value[:]
                value.extend(text)
            elif not repeated and isinstance(value, bytes):
                setattr(message, fd.name, value.decode("utf-8", "backslashreplace"))


def _tensors(graph: onnx.GraphProto):
    """Every TensorProto a graph holds: initializers, sparse initializers, attributes, subgraphs'."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


def load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Read every tensor's external data into the model, whatever the onnx version: only regular files inside the
    model's folder (resolved: no symlink leading out), never a hard link (it could be any file on the disk), and
    only the bytes [offset, offset + length) that the file holds."""
    folder = path.parent.resolve()
    for tensor in _tensors(proto.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        where = f"{path}: tensor '{tensor.name}'"
        location = info.get("location", "")
        try:
            offset, length = int(info.get("offset") or 0), (int(info["length"]) if info.get("length") else None)
        except ValueError:
            raise SplitcError(f"{where}: its external data offset/length are not integers") from None
        if offset < 0 or (length is not None and length < 0):
            raise SplitcError(f"{where}: its external data offset/length must not be negative")
        if not location or "\0" in location:
            raise SplitcError(f"{where}: its external data has no usable file name ({location!r})")
        file = (folder / location).resolve()
        if Path(location).is_absolute() or not file.is_relative_to(folder):
            raise SplitcError(f"{where}: its external data '{location}' is outside the model's folder {folder}"
                              " (absolute, '..' or a symlink leading out); keep the data files beside the model")
        try:
            fd = os.open(file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))  # a FIFO: no wait
        except OSError as e:
            raise SplitcError(f"{where}: its external weight data '{location}' could not be read ({e.strerror});"
                              " keep the data files beside the model") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise SplitcError(f"{where}: its external data '{location}' is not a regular file")
        with os.fdopen(fd, "rb") as f:
            if st.st_nlink != 1:
                raise SplitcError(f"{where}: its external data '{location}' is a hard link ({st.st_nlink} names);"
                                  " copy the data into a file of its own")
            end = st.st_size if length is None else offset + length
            if offset > st.st_size or end > st.st_size:
                raise SplitcError(f"{where}: its external data [{offset}, {end}) lies beyond the end of '{location}'"
                                  f" ({st.st_size} bytes); the file is truncated or the model does not belong to it")
            f.seek(offset)
            tensor.raw_data = f.read(end - offset)
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


def to_ir(proto: onnx.ModelProto, name: str) -> ir.Model:
    check_graph(proto, name)
    try:
        return ir.from_proto(proto)
    except Exception as e:  # noqa: BLE001  (a malformed graph fails in many ways)
        raise SplitcError(f"{name}: the graph could not be read ({str(e).splitlines()[0][:160]})") from None
