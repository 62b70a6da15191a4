"""Cluster parts (issue 14): single, spatial tile and channel parts cut from the original model by node names,
each numerically equal (fp32) to the original nodes run whole in onnxruntime; the references are the original
model's own intermediate tensors, never a part."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import helper

from splitc.codegen.cluster_channels import channel_part
from splitc.codegen.cluster_parts import Source, single_part
from splitc.codegen.cluster_tiles import Window, tile_part, window_rows
from splitc.errors import SplitcError
from splitc.runtimes.ort import session
from splitc.tools import zoo

try:
    from fixtures_text import model_tensors
except ImportError:  # tests/ imported as a package
    from tests.fixtures_text import model_tensors


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    onnx.checker.check_model(model, full_check=True)
    return session(model.SerializeToString(), "disable").run(None, feeds)


def _stage(model: onnx.ModelProto, first: int, last: int) -> tuple[list[str], str, str]:
    """Nodes [first, last) of a chain model, its input tensor and its output tensor."""
    nodes = list(model.graph.node)
    x = nodes[first - 1].output[0] if first else model.graph.input[0].name
    return [n.name for n in nodes[first:last]], x, nodes[last - 1].output[0]


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max()))
    assert float(np.abs(got - want).max()) <= 1e-5 * scale, float(np.abs(got - want).max())


def _image(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, size, size)).astype(np.float32)


def _shares_to_rows(shares):
    edges = np.concatenate([[0], np.cumsum(shares)]).tolist()
    return list(itertools.pairwise(edges))


def _tiles(model, names, x_name, y_name, shares, x):
    src = Source(model)
    ref = model_tensors(model, x, [x_name, y_name])
    outs, tiles = [], []
    for rows in _shares_to_rows(shares):
        part, (i0, i1) = tile_part(src, names, rows)
        assert [i.name for i in part.graph.input] == [x_name] and [o.name for o in part.graph.output] == [y_name]
        (y,) = _run(part, {x_name: ref[x_name][:, :, i0:i1]})
        assert y.shape[2] == rows[1] - rows[0]
        outs.append(y)
        tiles.append((part, (i0, i1)))
    return np.concatenate(outs, axis=2), ref[y_name], tiles


# -- the rows a window needs ---------------------------------------------------------------------------------


def test_window_rows_follow_the_stride_grid_and_pad_only_at_borders():
    w = Window(k=3, s=2, p0=1, p1=1)  # 12 rows -> 6
    assert window_rows(w, 12, 0, 6) == (r := window_rows(w, 12, 0, 6)) and (r.lo, r.hi, r.pad_top, r.pad_bottom) == (0, 12, 1, 0)
    mid = window_rows(w, 12, 3, 5)  # windows start at 3*2-1 = 5 (odd: not a multiple of the stride) and end at 4*2+1
    assert (mid.lo, mid.hi, mid.pad_top, mid.pad_bottom) == (5, 10, 0, 0)
    top = window_rows(w, 12, 0, 1)  # one output row: the top pad and two real rows
    assert (top.lo, top.hi, top.pad_top, top.pad_bottom) == (0, 2, 1, 0)
    # 11 rows -> 6: the last window reads one padded row at the bottom
    bottom = window_rows(w, 11, 5, 6)
    assert (bottom.lo, bottom.hi, bottom.pad_top, bottom.pad_bottom) == (9, 11, 0, 1)
    d = window_rows(Window(k=3, d=2, p0=2, p1=2), 10, 4, 6)  # dilation 2: halo 2 rows per side
    assert (d.lo, d.hi, d.pad_top, d.pad_bottom) == (2, 8, 0, 0)
    c = window_rows(Window(k=2, s=2, ceil=True), 7, 3, 4)  # ceil mode: the last window overruns the 7 rows
    assert (c.lo, c.hi, c.pad_bottom) == (6, 7, 0)
    with pytest.raises(SplitcError, match="no exact tile"):
        window_rows(Window(k=2, s=2), 7, 3, 4)  # without ceil mode 7 rows make 3 outputs: there is no row 3


# -- spatial tiles -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shares", [(9,), (5, 4), (1, 2, 6), (3, 1, 1, 4), (2, 2, 2, 2, 1), (1,) * 9])
def test_yolo16_tiles_at_odd_size_equal_the_original(shares):
    model = zoo.yolo16(size=37, width=0.25)  # 37 -> 18 -> 9 rows: odd heights, floor pools
    names, x, y = _stage(model, 0, 11)  # conv-bn-leaky, pool, conv-bn-leaky, pool, conv-bn-leaky
    assert [n.op_type for n in model.graph.node[:11]].count("MaxPool") == 2
    got, want, tiles = _tiles(model, names, x, y, shares, _image(37))
    _close(got, want)
    if len(shares) > 1:  # tiles overlap on their input rows (the halo), and together read the whole image
        spans = [r for _, r in tiles]
        assert spans[0][0] == 0 and spans[-1][1] == 37 and all(a[1] > b[0] for a, b in itertools.pairwise(spans))


@pytest.mark.parametrize("shares", [(3, 4), (2, 1, 4), (1, 1, 1, 1, 3)])
def test_vgg16_stride_and_pool_tiles_from_a_mid_stage(shares):
    model = zoo.vgg16(size=61, width=0.125)
    names, x, y = _stage(model, 5, 17)  # on 30 rows: conv, relu, conv, relu, pool (->15), 3 x (conv, relu), pool (->7)
    assert [n.op_type for n in model.graph.node[5:17]].count("MaxPool") == 2
    got, want, _ = _tiles(model, names, x, y, shares, _image(61, 1))
    _close(got, want)


def _strided_model() -> onnx.ModelProto:
    """Stride-2 convs (one SAME_UPPER, one dilated), a ceil-mode max pool and an average pool counting its pads."""
    b = zoo.Builder("strided", seed=3)
    x = b.input("input", [1, 3, 37, 29])
    x = b.relu(b.conv(x, 3, 8, 3, 2))  # 37 -> 19
    w = b.init(b.he((8, 8, 5, 5), 200), "conv_w")
    x = b.op("Conv", [x, w], kernel_shape=[5, 5], strides=[2, 2], auto_pad="SAME_UPPER")  # 19 -> 10
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 0], ceil_mode=1)  # 10 -> 5
    x = b.op("LeakyRelu", [x], alpha=0.1)
    w = b.init(b.he((8, 8, 3, 3), 72), "conv_w")
    x = b.op("Conv", [x, w], kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2])
    x = b.op("AveragePool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1, name="out")
    return b.build([x])


@pytest.mark.parametrize("shares", [(5,), (1, 4), (2, 1, 2), (1, 1, 1, 1, 1)])
def test_stride_two_ceil_mode_dilated_and_counting_pads_tiles(shares):
    model = _strided_model()
    names, x, y = _stage(model, 0, len(model.graph.node))
    x_in = np.random.default_rng(4).standard_normal((1, 3, 37, 29)).astype(np.float32)
    got, want, _ = _tiles(model, names, x, y, shares, x_in)
    _close(got, want)


def test_tiles_pad_only_at_the_border_and_an_interior_pad_would_be_wrong():
    model = zoo.yolo16(size=37, width=0.25)
    names, x, y = _stage(model, 0, 3)  # conv 3x3 pad 1, bn, leaky on 37 rows
    ref = model_tensors(model, _image(37, 2), [x, y])
    src = Source(model)
    for rows, top, bottom in (((0, 10), 1, 0), ((10, 20), 0, 0), ((20, 37), 0, 1)):
        part, (i0, i1) = tile_part(src, names, rows)
        conv = next(n for n in part.graph.node if n.op_type == "Conv")
        pads = helper.get_attribute_value(next(a for a in conv.attribute if a.name == "pads"))
        assert (pads[0], pads[2], pads[1], pads[3]) == (top, bottom, 1, 1)  # W keeps its pads
        (got,) = _run(part, {x: ref[x][:, :, i0:i1]})
        _close(got, ref[y][:, :, rows[0]:rows[1]])
    # the interior tile padded as at the border (the original pads): two rows too many, computed from zero rows
    part, (i0, i1) = tile_part(src, names, (10, 20))
    conv = next(n for n in part.graph.node if n.op_type == "Conv")
    next(a for a in conv.attribute if a.name == "pads").ints[:] = [1, 1, 1, 1]
    part.graph.output[0].type.tensor_type.ClearField("shape")
    (wrong,) = session(part.SerializeToString(), "disable").run(None, {x: ref[x][:, :, i0:i1]})
    assert wrong.shape[2] == 12
    assert not np.allclose(wrong[:, :, 0], ref[y][:, :, 9], atol=1e-3) and not np.allclose(wrong[:, :, 11], ref[y][:, :, 20], atol=1e-3)
    with pytest.raises(AssertionError):
        _close(wrong, ref[y][:, :, 10:20])


def test_tile_input_rows_must_start_on_the_stride_grid():
    """A tile fed its input one row late (not on output 3's window start 5 = 3*2-1) computes other values."""
    b = zoo.Builder("s2", seed=5)
    x = b.input("input", [1, 3, 24, 8])
    model = b.build([b.conv(x, 3, 4, 3, 2)])  # 24 -> 12
    names, x, y = _stage(model, 0, 1)
    ref = model_tensors(model, _image(24)[:, :, :, :8].copy(), [x, y])
    part, (i0, i1) = tile_part(Source(model), names, (3, 7))
    assert (i0, i1) == (5, 14)
    (good,) = _run(part, {x: ref[x][:, :, i0:i1]})
    _close(good, ref[y][:, :, 3:7])
    (late,) = _run(part, {x: ref[x][:, :, i0 + 1:i1 + 1]})
    assert not np.allclose(late, ref[y][:, :, 3:7], atol=1e-3)


def test_residual_block_tiles_crop_the_skip_branch():
    model = zoo.residual_block(size=37, channels=8)
    nodes = list(model.graph.node)
    last = next(i for i, n in enumerate(nodes) if n.op_type == "GlobalAveragePool")
    names, x, y = _stage(model, 0, last)  # stem conv-bn-relu, then the block (two convs + identity Add), relu
    got, want, tiles = _tiles(model, names, x, y, (12, 1, 24), _image(37, 6))
    _close(got, want)
    assert any(n.op_type == "Slice" for n in tiles[1][0].graph.node)  # the skip needs fewer rows than conv 1 computes


def test_non_local_ops_are_refused_by_name():
    model = zoo.vgg16(size=32, width=0.125)
    flat = next(i for i, n in enumerate(model.graph.node) if n.op_type == "Flatten")
    names, _, _ = _stage(model, flat - 3, flat + 1)
    with pytest.raises(SplitcError, match=r"node 'flatten_0' \(Flatten\) is not spatially local") as e:
        tile_part(Source(model), names, (0, 1))
    assert "\n" not in str(e.value)
    names, _, _ = _stage(model, 0, 3)
    with pytest.raises(SplitcError, match=r"rows \[0, 33\) are not inside its 32 rows"):
        tile_part(Source(model), names, (0, 33))


# -- single and channel parts --------------------------------------------------------------------------------


def test_single_part_is_the_original_nodes():
    model = zoo.vgg16(size=40, width=0.125)
    names, x, y = _stage(model, 4, 12)
    part = single_part(Source(model), names)
    assert [i.name for i in part.graph.input] == [x] and [o.name for o in part.graph.output] == [y]
    used = {i for n in part.graph.node for i in n.input}
    assert {t.name for t in part.graph.initializer} == used & {t.name for t in model.graph.initializer}
    ref = model_tensors(model, _image(40), [x, y])
    (got,) = _run(part, {x: ref[x]})
    _close(got, ref[y])


def _channel_check(model, names, x, y, ways, x_in, axis=1):
    src = Source(model)
    ref = model_tensors(model, x_in, [x, y])
    size = ref[y].shape[axis]
    edges = np.linspace(0, size, ways + 1).astype(int)
    edges[1:-1] += np.arange(1, ways) % 2  # uneven shares
    outs = []
    for c0, c1 in itertools.pairwise(edges):
        part = channel_part(src, names, (int(c0), int(c1)))
        w = sum(t.ByteSize() for t in part.graph.initializer)
        assert ways == 1 or w < sum(t.ByteSize() for t in model.graph.initializer)
        outs.append(_run(part, {x: ref[x]})[0])
    _close(np.concatenate(outs, axis=axis), ref[y])


@pytest.mark.parametrize("ways", [1, 2, 3, 4])
def test_channel_split_conv_bn_leaky(ways):
    model = zoo.yolo16(size=37, width=0.25)
    names, x, y = _stage(model, 4, 8)  # conv (no bias), bn, leaky, max pool
    _channel_check(model, names, x, y, ways, _image(37, 7))


@pytest.mark.parametrize("ways", [1, 2, 3, 4])
def test_channel_split_wide_fc(ways):
    model = zoo.fc_wide(size=32, features=64, outputs=10000)
    gemms = [i for i, n in enumerate(model.graph.node) if n.op_type == "Gemm"]
    assert model.graph.output[0].type.tensor_type.shape.dim[1].dim_value >= 10000
    names, x, y = _stage(model, gemms[1], gemms[1] + 1)
    _channel_check(model, names, x, y, ways, _image(32, 8))
    names, x, y = _stage(model, gemms[0], gemms[0] + 2)  # Gemm + Relu
    _channel_check(model, names, x, y, ways, _image(32, 8))


@pytest.mark.parametrize("ways", [2, 3])
def test_channel_split_matmul_with_bias_add(ways):
    b = zoo.Builder("mm", seed=9)
    x = b.input("input", [1, 5, 16])
    y = b.op("Mul", [b.matmul(x, 16, 12), b.init(np.linspace(0.5, 2, 12).astype(np.float32), "scale")])
    model = b.build([b.relu(y, name="out")])
    names, x, y = _stage(model, 0, 4)  # MatMul, Add bias, Mul scale, Relu
    _channel_check(model, names, x, y, ways, np.random.default_rng(1).standard_normal((1, 5, 16)).astype(np.float32), 2)


@pytest.mark.parametrize("ways", [2, 4])
def test_channel_split_gemm_untransposed_with_row_bias(ways):
    b = zoo.Builder("gemm", seed=10)
    x = b.input("input", [3, 16])
    w, bias = b.init(b.he((16, 20), 16)), b.init(np.linspace(-1, 1, 20, dtype=np.float32).reshape(1, 20))
    model = b.build([b.op("Gemm", [x, w, bias], name="out", alpha=0.5, beta=2.0)])
    _channel_check(model, ["out"], "input", "out", ways, np.random.default_rng(2).standard_normal((3, 16)).astype(np.float32))


def test_channel_split_refusals_name_the_node():
    model = zoo.mobilenet_v2(size=32)
    dw = next(i for i, n in enumerate(model.graph.node) if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute))
    names, _, _ = _stage(model, dw, dw + 1)
    with pytest.raises(SplitcError, match=r"grouped Conv, group \d+"):
        channel_part(Source(model), names, (0, 4))
    model = zoo.vgg16(size=32, width=0.125)
    names, _, _ = _stage(model, 0, 4)  # two convs: which one to split?
    with pytest.raises(SplitcError, match="exactly one Conv/Gemm/MatMul"):
        channel_part(Source(model), names, (0, 4))
    with pytest.raises(SplitcError, match=r"channels \[4, 9\) are not inside its 8 output channels"):
        channel_part(Source(model), names[:2], (4, 9))


# -- the cluster models --------------------------------------------------------------------------------------


def test_cluster_models_have_their_layout():
    v = zoo.vgg16(size=32)  # conv weights are size-independent: 14.71 M (torchvision vgg16 features)
    convs = [t for t in v.graph.initializer if t.name.startswith("conv_w")]
    assert len(convs) == 13 and sum(int(np.prod(t.dims)) for t in convs) == 14_710_464
    assert [n.op_type for n in v.graph.node].count("Gemm") == 3 and [n.op_type for n in v.graph.node].count("MaxPool") == 5
    y = zoo.yolo16(size=64)
    ops = [n.op_type for n in y.graph.node]
    assert ops.count("Conv") == 12 and ops.count("MaxPool") == 4 and ops.count("LeakyRelu") == 12
    assert [d.dim_value for d in y.graph.output[0].type.tensor_type.shape.dim] == [1, 256, 4, 4]
    f = zoo.fc_wide()
    last = [t for t in f.graph.initializer if t.name.startswith("fc_w")][-1]
    assert list(last.dims) == [10000, 1024]
    assert zoo.yolo16(size=64, seed=1).graph.initializer[0].raw_data != y.graph.initializer[0].raw_data
    assert set(zoo.CLUSTER_MODELS) == {"vgg16", "yolo16", "fc_wide"} and not set(zoo.CLUSTER_MODELS) & set(zoo.MODELS)
