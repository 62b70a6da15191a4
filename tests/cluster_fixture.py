"""A small conv model, its cluster parts made by hand with onnx.helper and a plan.json "cluster" section following
/tmp/cluster_design.md, for the cluster runtime tests (tests/test_cluster_runtime.py, tests/test_cluster_ray.py).

Model: x[1,3,8,8] -> Conv3x3(pad 1)+Relu -> Conv3x3(pad 1)+Relu -> GlobalAveragePool -> Flatten -> Gemm(N=6) -> y.
Plans (group "pi", devices pi/0..pi/2):
- 3 devices: spatial tiles of the two convs on pi/1 (out rows 0..3, in rows 0..5) and pi/2 (out rows 4..7, in rows
  2..7), the pooling single on pi/0, the Gemm split by output channels on pi/1 (4) and pi/2 (2), merged on axis -1;
- 2 devices: the whole model data-parallel on pi/0, pi/1, shares 2:1;
- 1 device: the whole model on pi/0.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(7)
W1 = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
B1 = RNG.standard_normal(4).astype(np.float32)
W2 = RNG.standard_normal((5, 4, 3, 3)).astype(np.float32)
B2 = RNG.standard_normal(5).astype(np.float32)
WG = RNG.standard_normal((5, 6)).astype(np.float32)
BG = RNG.standard_normal(6).astype(np.float32)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "part", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _convs(top: int, bottom: int):
    return [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[top, 1, bottom, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[top, 1, bottom, 1]),
            helper.make_node("Relu", ["c2"], ["t2"])]


def _head():
    return [helper.make_node("GlobalAveragePool", ["t2"], ["g"]), helper.make_node("Flatten", ["g"], ["f"])]


def original() -> onnx.ModelProto:
    nodes = _convs(1, 1) + _head() + [helper.make_node("Gemm", ["f", "wg", "bg"], ["y"])]
    return _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 6])], {"w1": W1, "b1": B1, "w2": W2, "b2": B2, "wg": WG, "bg": BG})


def parts() -> dict[str, onnx.ModelProto]:
    conv = {"w1": W1, "b1": B1, "w2": W2, "b2": B2}
    return {
        "parts/tile0.onnx": _model(_convs(1, 0), [_vi("x", [1, 3, 6, 8])], [_vi("t2", [1, 5, 4, 8])], conv),
        "parts/tile1.onnx": _model(_convs(0, 1), [_vi("x", [1, 3, 6, 8])], [_vi("t2", [1, 5, 4, 8])], conv),
        "parts/pool.onnx": _model(_head(), [_vi("t2", [1, 5, 8, 8])], [_vi("f", [1, 5])], {}),
        "parts/fc0.onnx": _model([helper.make_node("Gemm", ["f", "wg", "bg"], ["y"])], [_vi("f", [1, 5])], [_vi("y", [1, 4])],
                                 {"wg": WG[:, :4].copy(), "bg": BG[:4].copy()}),
        "parts/fc1.onnx": _model([helper.make_node("Gemm", ["f", "wg", "bg"], ["y"])], [_vi("f", [1, 5])], [_vi("y", [1, 2])],
                                 {"wg": WG[:, 4:].copy(), "bg": BG[4:].copy()}),
        "parts/whole.onnx": original(),
    }


def _part(slot, file, inputs, outputs, **rows):
    return {"slot": slot, "file": file, "inputs": inputs, "outputs": outputs, **rows}


def section() -> dict:
    three = [
        {"strategy": "spatial", "blocks": [0, 2], "slots": ["pi/1", "pi/2"], "shares": [4, 4], "inputs": ["x"], "outputs": ["t2"],
         "parts": [_part("pi/1", "parts/tile0.onnx", ["x"], ["t2"], input_rows=[0, 6], output_rows=[0, 4]),
                   _part("pi/2", "parts/tile1.onnx", ["x"], ["t2"], input_rows=[2, 8], output_rows=[4, 8])],
         "merge": {"axis": 2}},
        {"strategy": "single", "blocks": [2, 3], "slots": ["pi/0"], "shares": [1], "inputs": ["t2"], "outputs": ["f"],
         "parts": [_part("pi/0", "parts/pool.onnx", ["t2"], ["f"])], "merge": None},
        {"strategy": "channel", "blocks": [3, 4], "slots": ["pi/1", "pi/2"], "shares": [4, 2], "inputs": ["f"], "outputs": ["y"],
         "parts": [_part("pi/1", "parts/fc0.onnx", ["f"], ["y"], channels=[0, 4]), _part("pi/2", "parts/fc1.onnx", ["f"], ["y"], channels=[4, 6])],
         "merge": {"axis": -1}},
    ]
    two = [{"strategy": "data", "blocks": [0, 4], "slots": ["pi/0", "pi/1"], "shares": [2, 1], "inputs": ["x"], "outputs": ["y"],
            "parts": [_part("pi/0", "parts/whole.onnx", ["x"], ["y"]), _part("pi/1", "parts/whole.onnx", ["x"], ["y"])], "merge": None}]
    one = [{"strategy": "single", "blocks": [0, 4], "slots": ["pi/0"], "shares": [1], "inputs": ["x"], "outputs": ["y"],
            "parts": [_part("pi/0", "parts/whole.onnx", ["x"], ["y"])], "merge": None}]
    plan = lambda devices, stages: {"devices": devices, "objective": "latency", "predicted": {"latency_s": 0.01, "fps": 100.0}, "stages": stages}
    tensors = {"x": {"dtype": "float32", "shape": [1, 3, 8, 8]}, "t2": {"dtype": "float32", "shape": [1, 5, 8, 8]},
               "y": {"dtype": "float32", "shape": [1, 6]}}
    return {"hub": "pi/0", "tensors": tensors, "devices": [{"slot": f"pi/{k}", "group": "pi", "profile": "rpi4", "memory_bytes": 1 << 30} for k in range(3)],
            "plans": [plan(["pi/0", "pi/1", "pi/2"], three), plan(["pi/0", "pi/1"], two), plan(["pi/0"], one)]}


def write(out: Path, cluster: dict | None = None) -> Path:
    """``out``/plan.json + parts, each part's sha256 filled in where the section has none; returns ``out``."""
    digests = {}
    for name, model in parts().items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, out / name)
        digests[name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    cluster = cluster or section()
    for p in (p for plan in cluster["plans"] for stage in plan["stages"] for p in stage["parts"]):
        p.setdefault("sha256", digests.get(p["file"], "0" * 64))
    plan = {"model": {"outputs": [{"name": "y"}]}, "cluster": cluster}
    (out / "plan.json").write_text(json.dumps(plan))
    return out


def reference(frames: list[dict]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(original().SerializeToString(), providers=["CPUExecutionProvider"])
    return [sess.run(["y"], f)[0] for f in frames]


def frames(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]
