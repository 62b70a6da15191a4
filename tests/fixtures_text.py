"""Tiny ONNX-text models and helpers shared by test_passes / test_split / test_optimizer.

Every model is written in the ONNX textual syntax (``onnx.parser``); weights are added as
seeded random initializers so the numeric comparisons are reproducible.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper as nh
import onnxruntime as ort

from splitc.partition.problem import fixed

# A Conv -> Relu -> Conv -> Relu -> Flatten -> Gemm classifier. Node names are fixed so the
# golden expectations can name them; {ir} and {opset} are filled in by ``chain_model``.
CHAIN = """
<ir_version: {ir}, opset_import: ["" : {opset}]>
chain (float[1,3,8,8] x) => (float[1,10] y) {{
  [conv1] c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  [relu1] r1 = Relu (c1)
  [conv2] c2 = Conv <pads=[1,1,1,1]> (r1, w2, b2)
  [relu2] r2 = Relu (c2)
  [flat] f = Flatten (r2)
  [fc] y = Gemm <transB=1> (f, wg, bg)
}}
"""
CHAIN_WEIGHTS = {"w1": (4, 3, 3, 3), "b1": (4,), "w2": (4, 4, 3, 3), "b2": (4,), "wg": (10, 256), "bg": (10,)}
CHAIN_NODES = ("conv1", "relu1", "conv2", "relu2", "flat", "fc")

# r1 is read by two server-side nodes (conv2 and the residual Add).
RESIDUAL = """
<ir_version: 8, opset_import: ["" : 17]>
residual (float[1,4,6,6] x) => (float[1,4,6,6] y) {
  [conv1] c1 = Conv <pads=[1,1,1,1]> (x, w1)
  [relu1] r1 = Relu (c1)
  [conv2] c2 = Conv <pads=[1,1,1,1]> (r1, w2)
  [add] s = Add (c2, r1)
  [relu2] y = Relu (s)
}
"""
RESIDUAL_WEIGHTS = {"w1": (4, 4, 3, 3), "w2": (4, 4, 3, 3)}

# An If whose branches read a and b from the outer scope (not as node inputs).
IF_MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
branchy (float[1,4] x, bool c) => (float[1,4] y) {
  [relu] a = Relu (x)
  [sig] b = Sigmoid (a)
  [cond] z = If (c) <
    then_branch = then_g () => (float[1,4] t) { [then_add] t = Add (a, b) },
    else_branch = else_g () => (float[1,4] e) { [else_mul] e = Mul (a, b) }
  >
  [tanh] y = Tanh (z)
}
"""


def weights(shapes: dict[str, tuple[int, ...]], seed: int = 0, scale: float = 0.3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (scale * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}


def model_proto(text: str, initializers: dict[str, np.ndarray] | None = None, check: bool = True) -> onnx.ModelProto:
    """Parse ONNX text and attach initializers (also listed as inputs when ir_version < 4)."""
    proto = onnx.parser.parse_model(text)
    for name, array in (initializers or {}).items():
        proto.graph.initializer.append(nh.from_array(np.asarray(array), name))
        if proto.ir_version < 4:
            elem = onnx.helper.np_dtype_to_tensor_dtype(np.asarray(array).dtype)
            proto.graph.input.append(onnx.helper.make_tensor_value_info(name, elem, np.shape(array)))
    if check:
        onnx.checker.check_model(proto, full_check=True)
    return proto


def chain_model(ir: int = 8, opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    return model_proto(CHAIN.format(ir=ir, opset=opset), weights(CHAIN_WEIGHTS, seed))


def save(proto: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(proto, str(path))
    return path


def run_reference(model: onnx.ModelProto | Path | str, feeds: dict[str, np.ndarray], optimization: str = "all") -> dict:
    """The original model in onnxruntime (CPU), at the runtime's optimization levels ("disable" ... "all")."""
    from splitc.runtimes.ort import OPT_LEVELS

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.graph_optimization_level = OPT_LEVELS[optimization]
    options.log_severity_level = 3
    sess = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def server_from(first_server_node: str):
    """Everything from ``first_server_node`` on (in cost-graph order) runs on the server."""

    def assign(cg):
        names = [n.name for n in cg.nodes]
        k = names.index(first_server_node)
        return [0] * k + [1] * (len(names) - k)

    return fixed(assign)


def all_on(tier: int):
    return fixed(lambda cg: [tier] * len(cg.nodes))


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str, code: int | None = None) -> str:
    """The run failed (with exit ``code`` when given) on exactly one ``splitc: error`` line holding every needle."""
    assert proc.returncode != 0 if code is None else proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("splitc: error")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def model_tensors(model: onnx.ModelProto, x: np.ndarray, tensors) -> dict[str, np.ndarray]:
    """The original one-input model run once on ``x`` (onnxruntime, no graph optimization) with ``tensors`` exposed
    as outputs: the references a part of it is checked against."""
    from splitc.runtimes.ort import session

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(m).graph.value_info}
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(inferred[t] for t in tensors if t not in have and t != m.graph.input[0].name)
    names = [o.name for o in m.graph.output]
    got = dict(zip(names, session(m.SerializeToString(), "disable").run(None, {m.graph.input[0].name: x})))
    got[m.graph.input[0].name] = x
    return {t: got[t] for t in tensors}
