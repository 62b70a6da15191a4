"""A bounded fuzz of the command line with generated bad models, tampered plans and corrupted payloads.

For every attempt: the exit code is 0 (the input was still valid), 2 (a one-line ``splitc: error:``) or, for ``run``,
3 (the check ran and failed); never an internal error or a traceback; no file outside ``-o`` is touched; nothing is
left half-written (no ``-o`` directory after a failed compile, no temporary directories). Payloads: only ``CodecError``.
The counts are printed (``pytest -s``) for the closing note.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from splitc.cli.main import main
from splitc.runtimes.wire import CodecError, decode, encode

N_MODELS = 48
N_PLANS = 48
N_PAYLOADS = 3000


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 2
    return rc, err.getvalue()


def _tree(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under root (outside ``skip``) with its size and mtime: what must not change."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and skip not in p.parents:
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _base_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["y"], name="gap"),
    ]
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _mutate_model(rng: random.Random, base: onnx.ModelProto) -> bytes:
    m = copy.deepcopy(base)
    g = m.graph
    kind = rng.randrange(14)
    if kind == 0:  # truncated file
        data = m.SerializeToString()
        return data[: rng.randrange(1, len(data))]
    if kind == 1:  # random byte edits
        data = bytearray(m.SerializeToString())
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 2:
        del g.input[:]
    elif kind == 3:
        del g.output[:]
    elif kind == 4:  # a cycle: the first node reads the last node's output
        g.node[0].input[0] = g.node[-1].output[0]
    elif kind == 5:
        m.opset_import[0].version = 99
    elif kind == 6:  # dims whose product overflows
        for d in g.input[0].type.tensor_type.shape.dim:
            d.dim_value = 2 ** 40
    elif kind == 7:  # names a plot or a path would trip on
        name = rng.choice(["$x^2$", "a$b", "../../etc", "na/me", "ü-名前", "\\", "a b"])
        old = g.node[1].output[0]
        g.node[1].output[0] = name
        g.node[2].input[0] = name
        assert old
        g.name = rng.choice(["$g$", "graph/with/slash", "x" * 300])
    elif kind == 8:  # a dangling input: the weight is gone
        del g.initializer[rng.randrange(len(g.initializer))]
    elif kind == 9:
        g.node.append(helper.make_node("Relu", ["c2"], ["y"], name="dup"))  # two producers of y
    elif kind == 10:
        g.input[0].type.tensor_type.shape.dim[rng.randrange(4)].dim_value = -rng.randrange(1, 5)
    elif kind == 11:
        g.node[rng.randrange(len(g.node))].op_type = rng.choice(["NoSuchOp", "", "Conv"])
    elif kind == 12:  # a symbolic dim nobody fixes
        d = g.input[0].type.tensor_type.shape.dim[rng.randrange(4)]
        d.ClearField("dim_value")
        d.dim_param = "N"
    else:  # external data out of range
        t = g.initializer[0]
        t.ClearField("raw_data")
        del t.float_data[:]
        t.data_location = TensorProto.EXTERNAL
        for k, v in {"location": rng.choice(["w.bin", "../w.bin", "/etc/passwd"]), "offset": str(rng.choice([0, 10 ** 12])),
                     "length": str(rng.choice([4, 10 ** 12]))}.items():
            e = t.external_data.add()
            e.key, e.value = k, v
    return m.SerializeToString()


def _unclean(rc: int, err: str, allowed: set[int]) -> str | None:
    """Why this outcome is not a clean one, or None."""
    if rc not in allowed:
        return f"exit {rc}: {err.strip().splitlines()[-1] if err.strip() else ''}"
    if "Traceback" in err or "internal error" in err:
        return err[-300:]
    if rc == 2:
        errors = [line for line in err.splitlines() if not line.startswith("splitc: warning")]
        if not (len(errors) == 1 and errors[0].startswith("splitc: error: ")):
            return f"not one line: {err!r}"
    return None


def test_fuzz_compile_with_bad_models(tmp_path):
    rng = random.Random(1234)
    base = _base_model()
    counts = {"attempts": 0, "compiled": 0, "clean errors": 0}
    bad: list[str] = []
    for i in range(N_MODELS):
        work = tmp_path / f"m{i}"
        work.mkdir()
        (work / "w.bin").write_bytes(b"\0" * 64)
        (work / "model.onnx").write_bytes(_mutate_model(rng, base))
        out = work / "out"
        before = _tree(tmp_path, out)
        argv = ["compile", str(work / "model.onnx"), "-o", str(out), "--link", "up=100Mbps,down=300Mbps,rtt=5ms"]
        if rng.random() < 0.8:
            argv.append("--no-report")
        rc, err = _run(argv)
        counts["attempts"] += 1
        why = _unclean(rc, err, {0, 2})
        if why:
            bad.append(f"model {i}: {why}")
            continue
        assert _tree(tmp_path, out) == before, f"model {i}: a file outside -o changed"
        leftovers = [p.name for p in work.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
        assert not leftovers, f"model {i}: half-written {leftovers}"
        if rc == 0:
            counts["compiled"] += 1
            assert json.loads((out / "plan.json").read_text())["schema"] == "splitc.plan/1"
        else:
            counts["clean errors"] += 1
            assert not out.exists(), f"model {i}: failed compile left {out}"
    print(f"\nfuzz compile: {counts}, unclean: {len(bad)}")
    assert not bad, "\n".join(bad)
    assert counts["clean errors"] >= N_MODELS // 3  # the mutations really are bad, mostly


def _mutate_json(rng: random.Random, node, depth: int = 0):
    """One random edit somewhere in a JSON document: delete, retype, blow up a number, or point a path outside."""
    if isinstance(node, dict) and node and (depth == 0 or rng.random() < 0.7):
        key = rng.choice(sorted(node))
        if rng.random() < 0.5 and isinstance(node[key], (dict, list)) and node[key]:
            _mutate_json(rng, node[key], depth + 1)
            return
        choice = rng.randrange(7)
        if choice == 0:
            del node[key]
        elif choice == 1:
            node[key] = rng.choice([None, "x", -1, 1e308, 10 ** 15, [], {}, True, float("nan")])
        elif choice == 2:
            node[key] = rng.choice(["../evil.onnx", "/etc/passwd", "plans/../../x", "head.onnx/.."])
        elif choice == 3:
            node[key] = [10 ** 6] * 4
        elif choice == 4:
            node[key] = [[[[[[[[[[]]]]]]]]]] * 3
        elif choice == 5:
            node[key] = {"name": "x"}
        else:
            node[key] = str(node[key])[::-1]
    elif isinstance(node, list) and node:
        i = rng.randrange(len(node))
        if isinstance(node[i], (dict, list)) and node[i]:
            _mutate_json(rng, node[i], depth + 1)
        else:
            node[i] = rng.choice([None, "../x", -5, 2 ** 62, {"a": 1}])


def test_fuzz_run_with_tampered_plans(tmp_path):
    model = tmp_path / "model.onnx"
    onnx.save(_base_model(), model)
    good = tmp_path / "good"
    rc, err = _run(["compile", str(model), "-o", str(good), "--link", "up=100Mbps,down=300Mbps,rtt=5ms", "--no-report"])
    assert rc == 0, err
    (tmp_path / "evil.onnx").write_bytes(model.read_bytes())
    plan = json.loads((good / "plan.json").read_text())
    rng = random.Random(99)
    counts = {"attempts": 0, "ran": 0, "clean errors": 0}
    bad: list[str] = []
    for i in range(N_PLANS):
        out = tmp_path / f"p{i}"
        shutil.copytree(good, out)
        tampered = copy.deepcopy(plan)
        for _ in range(rng.randrange(1, 4)):
            _mutate_json(rng, tampered)
        (out / "plan.json").write_text(json.dumps(tampered))
        before = _tree(tmp_path, out)
        rc, err = _run(["run", str(out), "--model", str(model), "--samples", "1"])
        counts["attempts"] += 1
        why = _unclean(rc, err, {0, 2, 3})
        if why:
            bad.append(f"plan {i}: {why}")
            continue
        assert _tree(tmp_path, out) == before, f"plan {i}: a file outside the plan folder changed"
        counts["ran" if rc in (0, 3) else "clean errors"] += 1
    print(f"\nfuzz run: {counts}, unclean: {len(bad)}")
    assert not bad, "\n".join(bad)
    assert counts["clean errors"] >= N_PLANS // 4


def test_fuzz_payloads_only_codec_errors():
    rng = np.random.default_rng(7)
    tensors = {"a": rng.integers(0, 255, (1, 8, 6, 6), dtype=np.uint8), "b": rng.standard_normal((1, 4)).astype(np.float32)}
    expected = {k: (v.dtype.name, v.shape) for k, v in tensors.items()}
    good = encode(tensors, plan="f" * 16)
    counts = {"attempts": 0, "rejected": 0, "decoded": 0}
    r = random.Random(3)
    for i in range(N_PAYLOADS):
        data = bytearray(good)
        kind = i % 4
        if kind == 0:
            data[r.randrange(len(data))] ^= 1 << r.randrange(8)
        elif kind == 1:
            data = data[: r.randrange(len(data))]
        elif kind == 2:
            for _ in range(r.randrange(1, 8)):
                data[r.randrange(len(data))] = r.randrange(256)
        else:
            pos = r.randrange(len(data))
            data[pos:pos] = bytes(r.randrange(256) for _ in range(r.randrange(1, 16)))
        counts["attempts"] += 1
        try:
            decode(bytes(data), expected, plan="f" * 16)
            counts["decoded"] += 1
        except CodecError:
            counts["rejected"] += 1
    print(f"\nfuzz payloads: {counts}")
    assert counts["rejected"] == N_PAYLOADS  # the wire's crc32 catches every flip, edit, cut and insertion (seeded)


@pytest.mark.parametrize("payload", [b"", b"\0" * 3, b"SPLT" + b"[" * 2000, b"{" * 5000])
def test_degenerate_payloads_are_codec_errors(payload):
    with pytest.raises(CodecError):
        decode(payload, {"a": ("uint8", (1,))})
