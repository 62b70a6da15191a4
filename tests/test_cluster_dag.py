"""Spatial tiles of blocks that are DAGs (issue 14 follow-up): residual skips (MobileNetV2's inverted residuals),
SiLU (Mul(x, Sigmoid(x)), YOLOX), channel Concat/Split/Slice. The planner (splitc.partition.blocks.tile) finds each
tensor's rows as the union of its consumers' rows and prices each layer by the rows it computes; the parts
(splitc.codegen.cluster_tiles) read exactly those input rows and, concatenated, equal the imported model's own
intermediate tensors."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from splitc.codegen.cluster_parts import Source
from splitc.codegen.cluster_tiles import tile_part
from splitc.compiler import annotate, import_model
from splitc.cost.cluster import parse_cluster
from splitc.partition.blocks import Layer, tile
from splitc.partition.passes.cluster import build_chain
from splitc.runtimes.ort import session
from splitc.tools import zoo

try:
    from fixtures_text import model_tensors
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import model_tensors

MODELS = Path("/work/shared/models")
SPEC = parse_cluster({"network": {"kind": "lan", "rate": "1gbit"},
                      "device": [{"name": "pi", "profile": "rpi4", "count": 2, "memory_mb": 1024}]}, "cluster.toml")
SHARES = [(1,), (2, 1), (1, 3, 2), (3, 1, 4, 2)]  # 1..4 tiles, uneven (scaled to the output's rows)


def _chain(tmp_path: Path, model: onnx.ModelProto | Path):
    path = model
    if isinstance(model, onnx.ModelProto):
        path = tmp_path / "m.onnx"
        onnx.save_model(model, str(path))
    m = annotate(import_model(path), SPEC.profiles)
    return m, build_chain(m, SPEC.profiles)


def _pattern(chain) -> str:
    return "".join("S" if b.spatial else "C" if b.channel else "." for b in chain.blocks)


def _rows(h: int, shares) -> list[tuple[int, int]]:
    scaled = [max(1, round(h * s / sum(shares))) for s in shares]
    scaled[-1] = h - sum(scaled[:-1])
    assert min(scaled) >= 1
    edges = [0, *itertools.accumulate(scaled)]
    return list(itertools.pairwise(edges))


def _check_tiles(m: ir.Model, chain, first: int, last: int, x: np.ndarray) -> int:
    """Tiles of blocks [first, last) for every share in SHARES: input rows as the planner's, output as the original's.
    Returns the output's H."""
    proto = ir.to_proto(m)
    src = Source(proto)
    blocks = chain.blocks[first:last]
    names = [n for b in blocks for n in b.nodes]
    x_name, y_name = blocks[0].input, blocks[-1].output
    ref = model_tensors(proto, x, [x_name, y_name])
    h = ref[y_name].shape[2]
    for shares in SHARES:
        outs = []
        for a, b in _rows(h, shares):
            part, (i0, i1) = tile_part(src, names, (a, b), output=y_name)
            assert (i0, i1) == chain.tile(first, last, a, b, 0).in_rows, (shares, a, b)
            (y,) = session(part.SerializeToString(), "disable").run(None, {x_name: ref[x_name][:, :, i0:i1]})
            outs.append(y)
        got, want = np.concatenate(outs, axis=2), ref[y_name]
        assert got.shape == want.shape
        assert float(np.abs(got - want).max()) <= 1e-5 * max(1.0, float(np.abs(want).max())), shares
    return h


def _image(size: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)


# -- the planner's rows and prices over a DAG ------------------------------------------------------------------


def _conv(name, x, y, h, lat=8.0):
    return Layer(name, "Conv", (lat,), (1.0,), 4 * h * h, 4 * h * h, 36, 1, h, h, 3, 1, 1, 1, inputs=(x,), outputs=(y,))


def _local(name, op, ins, outs, h, lat=2.0):
    return Layer(name, op, (lat,), (0.0,), 4 * h * h * len(ins), 4 * h * h * len(outs), 0, 1, h, h,
                 inputs=tuple(ins), outputs=tuple(outs))


def test_a_skip_reads_the_union_of_its_consumers_rows_and_layers_are_priced_by_their_rows():
    h = 16  # x -> conv a -> conv b; y = b + x: rows [4, 8) of y need b [4, 8), a [3, 9), x [2, 10) u [4, 8)
    c1, c2 = _conv("c1", "x", "a", h), _conv("c2", "a", "b", h)
    add = _local("add", "Add", ["b", "x"], ["y"], h)
    t = tile([c1, c2, add], 4, 8, 0)
    assert t.in_rows == (2, 10) and t.out_rows == (4, 8)
    assert t.seconds == pytest.approx(c1.scaled_s(0, 6 / h) + c2.scaled_s(0, 4 / h) + add.scaled_s(0, 4 / h))
    assert t.in_bytes == 4 * h * 8 and t.out_bytes == 4 * h * 4
    # while c2 runs, x (8 rows, for the Add), a (6 rows) and b (4 rows) are live
    assert t.peak_bytes == 4 * h * (8 + 6 + 4)
    assert tile([c1, c2, add], 0, 16, 0).in_rows == (0, 16)  # clipped at both borders


def test_a_split_computes_the_union_of_its_outputs_rows():
    h = 12  # Split x -> p, q; r = conv(p); y = Concat(r, q): q needs [4, 8), p [3, 9): the Split computes [3, 9)
    split = _local("split", "Split", ["x"], ["p", "q"], h)
    conv = _conv("c", "p", "r", h)
    cat = _local("cat", "Concat", ["r", "q"], ["y"], h)
    t = tile([split, conv, cat], 4, 8, 0)
    assert t.in_rows == (3, 9)
    assert t.seconds == pytest.approx(split.scaled_s(0, 6 / h) + conv.scaled_s(0, 4 / h) + cat.scaled_s(0, 4 / h))


def test_a_chain_named_or_not_is_tiled_the_same():
    h = 16
    named = [_conv("c1", "x", "a", h), _conv("c2", "a", "b", h), _local("r", "Relu", ["b"], ["y"], h)]
    bare = [Layer(n.name, n.op, n.latency_s, n.overhead_s, n.in_bytes, n.out_bytes, n.weight_bytes, n.out_channels,
                  n.in_h, n.out_h, n.kernel_h, n.stride_h, n.pad_top, n.pad_bottom) for n in named]
    for a, b in [(0, 16), (0, 1), (5, 9), (15, 16)]:
        assert tile(named, a, b, 0) == tile(bare, a, b, 0)


# -- zoo models ------------------------------------------------------------------------------------------------


def test_zoo_residual_block_tiles_its_skip_exactly(tmp_path):
    m, chain = _chain(tmp_path, zoo.residual_block(size=15, channels=8))
    blocks = chain.blocks
    res = next(i for i, b in enumerate(blocks) if any("add" in n.lower() for n in b.nodes))
    assert blocks[res].spatial and len(blocks[res].layers) > 2  # the whole basic block, skip included
    assert [b.spatial for b in blocks[: res + 1]] == [True] * (res + 1)
    assert _check_tiles(m, chain, 0, res + 1, _image(15)) == 15  # stem + residual block, odd H


def test_zoo_mobilenet_v2_every_inverted_residual_is_spatial_and_exact(tmp_path):
    m, chain = _chain(tmp_path, zoo.mobilenet_v2(size=33, classes=10))
    pattern = _pattern(chain)
    assert pattern.rstrip(".C").count(".") == 0 and pattern.count("S") >= 17, pattern  # only the head is not
    residual = [i for i, b in enumerate(chain.blocks) if sum(layer.op == "Add" for layer in b.layers) == 1]
    assert len(residual) == 10 and all(chain.blocks[i].spatial for i in residual)  # 1+2+3+2+2 skips
    # from the image through the first strided inverted residual and its skip: 33 -> 17 -> 9 rows
    _check_tiles(m, chain, 0, residual[0] + 1, _image(33))


def _split_model(h: int, h_axis: bool) -> onnx.ModelProto:
    """x -> Conv 3x3 -> Split (channels) -> [Conv 3x3/2 + Relu | MaxPool 1x2/2 + Slice channels 0:2] -> Concat -> Conv
    -> SiLU -> y: the two Split outputs are read with different halos."""
    rng = np.random.default_rng(1)
    init = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
            [("w1", (8, 3, 3, 3)), ("w2", (4, 4, 3, 3)), ("w3", (6, 6, 1, 1))]]
    init += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             [("sizes", [4, 4]), ("st", [0]), ("en", [h if h_axis else 2]), ("ax", [2 if h_axis else 1])]]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], "c1", pads=[1, 1, 1, 1]),
             helper.make_node("Split", ["a", "sizes"], ["p", "q"], "split", axis=1),
             helper.make_node("Conv", ["p", "w2"], ["r0"], "c2", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["r0"], ["r"], "relu"),
             helper.make_node("MaxPool", ["q"], ["q2"], "pool", kernel_shape=[1, 2], strides=[2, 2], pads=[0, 0, 0, 1]),
             helper.make_node("Slice", ["q2", "st", "en", "ax"], ["s"], "slice"),
             helper.make_node("Concat", ["r", "s"], ["cat"], "cat", axis=1),
             helper.make_node("Conv", ["cat", "w3"], ["d"], "c3"),
             helper.make_node("Sigmoid", ["d"], ["g"], "sig"),
             helper.make_node("Mul", ["d", "g"], ["y"], "silu")]
    out_h, c = (h + 1) // 2, 4 + 2 * (not h_axis) + 4 * h_axis
    init[2] = numpy_helper.from_array(rng.standard_normal((6, c, 1, 1)).astype(np.float32), "w3")
    graph = helper.make_graph(nodes, "split_dag", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, h, h])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, out_h, out_h])], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_channel_split_slice_concat_and_silu_tile_exactly(tmp_path):
    m, chain = _chain(tmp_path, _split_model(13, h_axis=False))
    assert _pattern(chain) == "SSSS", [b.nodes for b in chain.blocks]  # c1 | split..cat | c3 | SiLU
    assert {layer.op for layer in chain.blocks[1].layers} == {"Split", "Conv", "Relu", "MaxPool", "Slice", "Concat"}
    assert _check_tiles(m, chain, 0, len(chain.blocks), _image(13)) == 7


def test_a_slice_along_h_is_not_spatial(tmp_path):
    _, chain = _chain(tmp_path, _split_model(13, h_axis=True))
    assert _pattern(chain) == "S.SS"  # the same model, its Slice on H (keeping every row): not H-local


# -- the real trained models -----------------------------------------------------------------------------------

real = pytest.mark.skipif(not MODELS.is_dir(), reason="/work/shared/models (the real trained models) is absent")


@real
def test_real_mobilenet_v2_every_block_but_the_head_is_spatial(tmp_path):
    m, chain = _chain(tmp_path, MODELS / "mobilenet_v2_trained_imagenet.onnx")
    # before DAG blocks: SSSSSS.SSS..SSS...SSS..SSS..SSSS..C (each inverted residual with a skip was '.')
    assert _pattern(chain) == "S" * 32 + "..C"
    residual = [i for i, b in enumerate(chain.blocks) if any(layer.op == "Add" for layer in b.layers)]
    assert residual == [6, 10, 11, 15, 16, 17, 21, 22, 26, 27]
    _check_tiles(m, chain, 6, 7, _image(224))  # a residual block (28 rows)


@real
def test_real_yolox_nano_silu_and_csp_blocks_are_spatial(tmp_path):
    m, chain = _chain(tmp_path, MODELS / "yolox_nano_coco.onnx")
    # before: .S.S.S..S.S.S..S... (every SiLU block, and the CSP blocks, were '.')
    assert _pattern(chain) == "." + "S" * 16 + ".."
    ops = [sorted({layer.op for layer in b.layers}) for b in chain.blocks]
    assert ops[2] == ["Mul", "Sigmoid"] and {"Concat", "Add"} <= set(ops[7])
    x = np.random.default_rng(0).standard_normal((1, 3, 416, 416)).astype(np.float32)
    _check_tiles(m, chain, 1, 3, x)  # a conv and its SiLU
    _check_tiles(m, chain, 7, 8, x)  # a CSP block: SiLUs, a residual Add, a channel Concat
