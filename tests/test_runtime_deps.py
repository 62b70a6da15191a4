"""The runtime installs on a device without the compiler: it must not import onnx, onnx_ir, pulp, networkx, tvm or rich."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
from onnx import helper, numpy_helper

from splitc.compiler import CompileOptions, compile_model

BLOCKER = textwrap.dedent(
    """
    import sys
    BLOCKED = {"onnx", "onnx_ir", "pulp", "networkx", "tvm", "rich", "highspy", "google.protobuf"}
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name in BLOCKED or name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked: {name}")
    sys.meta_path.insert(0, Block())
    """
)


def test_runtime_runs_without_compiler_dependencies(tmp_path):
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 8])], [w],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    out = tmp_path / "out"
    compile_model(path, out, CompileOptions(link="up=10Gbps,down=10Gbps,rtt=0.01ms", boundary="fp32"))
    script = BLOCKER + textwrap.dedent(
        f"""
        import json
        from splitc.runtimes import SplitModel
        from splitc.runtimes.ort import synthetic_inputs
        m = SplitModel({str(out)!r})
        res = m.run(synthetic_inputs(m.inputs))
        from splitc.cli.main import main
        code = main(["run", {str(out)!r}, "--json"])
        assert code == 0, code
        print(json.dumps({{"shape": list(res.outputs["y"].shape), "loaded": sorted(k for k in __import__("sys").modules if k.split(".")[0] in ("onnx", "onnx_ir", "pulp", "networkx", "rich"))}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last == {"shape": [4, 8], "loaded": []}
