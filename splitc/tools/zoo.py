"""Generated model architectures with seeded random weights, for tests, examples and calibration.

Every builder returns an ``onnx.ModelProto`` that passes ``onnx.checker``: opset 17 and IR version 8
unless its ``opset`` / ``ir_version`` say otherwise (below IR 4 initializers are listed as inputs too;
the checker rejects an opset that lacks one of the model's ops, e.g. LayerNormalization before 17).

Weights are He-initialised from a seeded numpy generator, batch norms are near-identity and the
last batch norm of each residual branch is damped, so activations stay of order one through deep
stacks (the int8 boundary quantizes sensibly, outputs are not NaN).

``resnet18`` and ``mobilenet_v2`` are the real architectures (torchvision layouts, 224x224,
1000 classes); ``bottlenet`` is the demo model whose best plan over 4G is a real split.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "CLUSTER_MODELS",
    "MODELS",
    "Builder",
    "bottlenet",
    "chain",
    "detector_heads",
    "fc_wide",
    "inception",
    "mobilenet_v2",
    "residual_block",
    "resnet18",
    "transformer_block",
    "vgg16",
    "yolo16",
]


class Builder:
    """Accumulates nodes and initializers; names every value ``<prefix><n>``."""

    def __init__(self, name: str, seed: int = 0):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self._count: dict[str, int] = {}
        self._consts: dict[tuple, str] = {}

    def fresh(self, prefix: str) -> str:
        n = self._count.get(prefix, 0)
        self._count[prefix] = n + 1
        return f"{prefix}{n}"

    # -- graph pieces -------------------------------------------------------------------------
    def input(self, name: str, shape, dtype=TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, list(shape)))
        return name

    def init(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, values, dtype=np.int64) -> str:
        """A shared small constant initializer (shapes, axes, clip bounds)."""
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(array, "c")
        return self._consts[key]

    def he(self, shape, fan_in: int, gain: float = 2.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * math.sqrt(gain / fan_in)).astype(np.float32)

    def op(self, op_type: str, inputs, outputs: int = 1, name: str | None = None, **attrs):
        base = name or self.fresh(op_type.lower() + "_")
        outs = [base] if outputs == 1 else [f"{base}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=base, **attrs))
        return outs[0] if outputs == 1 else outs

    # -- layers -------------------------------------------------------------------------------
    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1,
             bias: bool = True, pad: int | None = None, gain: float = 2.0) -> str:
        pad = k // 2 if pad is None else pad
        fan_in = (cin // group) * k * k
        inputs = [x, self.init(self.he((cout, cin // group, k, k), fan_in, gain), "conv_w")]
        if bias:
            inputs.append(self.init((0.01 * self.rng.standard_normal(cout)).astype(np.float32), "conv_b"))
        return self.op("Conv", inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=group)

    def bn(self, x: str, c: int, gamma: float = 1.0) -> str:
        r = self.rng
        scale = (gamma * (1.0 + 0.1 * r.standard_normal(c))).astype(np.float32)
        shift = (0.05 * r.standard_normal(c)).astype(np.float32)
        mean = (0.05 * r.standard_normal(c)).astype(np.float32)
        var = (1.0 + 0.1 * r.random(c)).astype(np.float32)
        ins = [x] + [self.init(a, "bn_") for a in (scale, shift, mean, var)]
        return self.op("BatchNormalization", ins, epsilon=1e-5)

    def relu(self, x: str, name: str | None = None) -> str:
        return self.op("Relu", [x], name=name)

    def relu6(self, x: str, name: str | None = None) -> str:
        return self.op("Clip", [x, self.const(0.0, np.float32), self.const(6.0, np.float32)], name=name)

    def conv_bn(self, x, cin, cout, k=3, stride=1, group=1, act: str | None = "relu", gamma: float = 1.0,
                name: str | None = None) -> str:
        """Conv (no bias) -> BatchNormalization -> Relu / ReLU6 (Clip); ``name`` names the activation."""
        y = self.bn(self.conv(x, cin, cout, k, stride, group, bias=False), cout, gamma)
        if act is None:
            assert name is None, "only an activation's output can be named"
            return y
        return {"relu": self.relu, "relu6": self.relu6}[act](y, name)

    def conv_relu(self, x, cin, cout, k=3, stride=1) -> str:
        return self.relu(self.conv(x, cin, cout, k, stride))

    def maxpool(self, x: str, k: int = 3, stride: int = 2, pad: int = 1) -> str:
        return self.op("MaxPool", [x], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)

    def gemm(self, x: str, fin: int, fout: int, name: str | None = None) -> str:
        w = self.init(self.he((fout, fin), fin, gain=1.0), "fc_w")
        b = self.init(np.zeros(fout, np.float32), "fc_b")
        return self.op("Gemm", [x, w, b], name=name, transB=1)

    def matmul(self, x: str, fin: int, fout: int, bias: bool = True) -> str:
        y = self.op("MatMul", [x, self.init(self.he((fin, fout), fin, gain=1.0), "mm_w")])
        if bias:
            y = self.op("Add", [y, self.init((0.01 * self.rng.standard_normal(fout)).astype(np.float32), "mm_b")])
        return y

    def classifier(self, x: str, c: int, classes: int, name: str = "logits") -> str:
        """GlobalAveragePool -> Flatten -> Gemm to ``classes`` logits."""
        flat = self.op("Flatten", [self.op("GlobalAveragePool", [x])], axis=1)
        return self.gemm(flat, c, classes, name=name)

    # -- the model ----------------------------------------------------------------------------
    def build(self, outputs: list[str], opset: int = 17, ir_version: int = 8, doc: str = "") -> onnx.ModelProto:
        for op_type in sorted({n.op_type for n in self.nodes}):
            try:
                onnx.defs.get_schema(op_type, opset)
            except onnx.defs.SchemaError:
                raise ValueError(f"{self.name}: {op_type} does not exist at opset {opset}") from None
            if op_type == "Clip" and opset < 11:
                raise ValueError(f"{self.name}: Clip with min/max inputs (ReLU6) needs opset >= 11, not {opset}")
        inputs = list(self.inputs)
        if ir_version < 4:  # before IR 4 every initializer must also be a graph input
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self.initializers]
        graph = helper.make_graph(
            self.nodes, self.name, inputs,
            [helper.make_empty_tensor_value_info(o) for o in outputs],
            initializer=self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="splitc.zoo")
        model.ir_version = ir_version
        model.doc_string = doc
        # fill in the output types and shapes (and check the graph) with ONNX shape inference
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        del model.graph.output[:]
        model.graph.output.extend(inferred.graph.output)
        onnx.checker.check_model(model, full_check=True)
        return model


# -- architectures ---------------------------------------------------------------------------------


def chain(size: int = 32, classes: int = 10, seed: int = 0, opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """A small plain conv chain classifier: 3 conv+relu (two stride 2), pool, Gemm."""
    b = Builder("chain", seed)
    x = b.input("input", [1, 3, size, size])
    x = b.conv_relu(x, 3, 16, 3, 1)
    x = b.conv_relu(x, 16, 32, 3, 2)
    x = b.conv_relu(x, 32, 64, 3, 2)
    return b.build([b.classifier(x, 64, classes)], doc="conv chain classifier", opset=opset, ir_version=ir_version)


def _basic_block(b: Builder, x: str, cin: int, cout: int, stride: int) -> str:
    """ResNet basic block: conv-bn-relu, conv-bn, + skip (identity or 1x1 conv-bn), relu."""
    y = b.conv_bn(x, cin, cout, 3, stride)
    y = b.conv_bn(y, cout, cout, 3, 1, act=None, gamma=0.4)
    skip = x if stride == 1 and cin == cout else b.conv_bn(x, cin, cout, 1, stride, act=None)
    return b.relu(b.op("Add", [y, skip]))


def residual_block(size: int = 56, channels: int = 64, classes: int = 10, seed: int = 0,
                   opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """A stem conv, one ResNet basic block with an identity skip, and a classifier head."""
    b = Builder("residual_block", seed)
    x = b.input("input", [1, 3, size, size])
    x = b.conv_bn(x, 3, channels, 3, 1)
    x = _basic_block(b, x, channels, channels, 1)
    doc = "ResNet basic block with identity skip"
    return b.build([b.classifier(x, channels, classes)], doc=doc, opset=opset, ir_version=ir_version)


def _inception_module(b: Builder, x: str, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int,
                      cp: int) -> tuple[str, int]:
    b1 = b.conv_relu(x, cin, c1, 1)
    b2 = b.conv_relu(b.conv_relu(x, cin, c3r, 1), c3r, c3, 3)
    b3 = b.conv_relu(b.conv_relu(b.conv_relu(x, cin, c5r, 1), c5r, c5, 3), c5, c5, 3)
    b4 = b.conv_relu(b.maxpool(x, 3, 1, 1), cin, cp, 1)
    return b.op("Concat", [b1, b2, b3, b4], axis=1), c1 + c3 + c5 + cp


def inception(size: int = 64, classes: int = 10, seed: int = 0,
              opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """A stem and two Inception modules (1x1, 3x3, double 3x3 and pool branches, concatenated)."""
    b = Builder("inception", seed)
    x = b.input("input", [1, 3, size, size])
    x = b.maxpool(b.conv_relu(x, 3, 32, 3, 2))
    x, c = _inception_module(b, x, 32, 16, 16, 32, 8, 16, 16)
    x, c = _inception_module(b, x, c, 32, 32, 48, 16, 24, 24)
    doc = "Inception-style parallel branches"
    return b.build([b.classifier(x, c, classes)], doc=doc, opset=opset, ir_version=ir_version)


def detector_heads(size: int = 128, classes: int = 8, anchors: int = 3, seed: int = 0,
                   opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """A conv backbone with SSD-style heads on two scales: ``scores`` (softmax) and ``boxes``."""
    b = Builder("detector_heads", seed)
    x = b.input("input", [1, 3, size, size])
    x = b.conv_bn(x, 3, 16, 3, 2)
    x = b.conv_bn(x, 16, 32, 3, 2)
    f1 = b.conv_bn(x, 32, 64, 3, 2)  # size/8
    f2 = b.conv_bn(f1, 64, 96, 3, 2)  # size/16
    scores, boxes = [], []
    for f, c, s in ((f1, 64, size // 8), (f2, 96, size // 16)):
        n = s * s * anchors
        for per, out in ((classes, scores), (4, boxes)):
            h = b.conv(f, c, anchors * per, 3, gain=1.0)
            h = b.op("Transpose", [h], perm=[0, 2, 3, 1])
            out.append(b.op("Reshape", [h, b.const([1, n, per])]))
    logits = b.op("Concat", scores, axis=1)
    sc = b.op("Softmax", [logits], name="scores", axis=-1)
    bx = b.op("Concat", boxes, name="boxes", axis=1)
    return b.build([sc, bx], doc="detector with score and box heads", opset=opset, ir_version=ir_version)


def transformer_block(seq: int | str = "seq", dim: int = 64, heads: int = 4, batch: int | str = "batch",
                      seed: int = 0, opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """A pre-LN transformer encoder block on ``x [batch, seq, dim]``.

    The head split is computed from the input's runtime shape (Shape -> Gather -> Concat ->
    Reshape), as exporters emit it, so symbolic ``batch``/``seq`` dims need ``--input-shape``.
    """
    return transformer(1, seq, dim, heads, batch, seed, opset, ir_version, name="transformer_block")


def transformer(layers: int = 12, seq: int | str = "seq", dim: int = 64, heads: int = 4, batch: int | str = "batch",
                seed: int = 0, opset: int = 17, ir_version: int = 8, name: str = "transformer") -> onnx.ModelProto:
    """``layers`` pre-LN encoder blocks; each recomputes its head split from the runtime shape, as exporters do."""
    assert dim % heads == 0
    hd = dim // heads
    b = Builder(name, seed)
    x = b.input("x", [batch, seq, dim])

    def layer_norm(v):
        g = b.init((1.0 + 0.1 * b.rng.standard_normal(dim)).astype(np.float32), "ln_g")
        beta = b.init((0.05 * b.rng.standard_normal(dim)).astype(np.float32), "ln_b")
        return b.op("LayerNormalization", [v, g, beta], axis=-1, epsilon=1e-5)

    for layer in range(layers):
        shape = b.op("Shape", [x])
        n_b = b.op("Gather", [shape, b.const([0])], axis=0)
        n_s = b.op("Gather", [shape, b.const([1])], axis=0)
        split_shape = b.op("Concat", [n_b, n_s, b.const([heads]), b.const([hd])], axis=0)
        merge_shape = b.op("Concat", [n_b, n_s, b.const([dim])], axis=0)

        def heads_of(v, perm):
            return b.op("Transpose", [b.op("Reshape", [v, split_shape])], perm=perm)

        h = layer_norm(x)
        q = heads_of(b.matmul(h, dim, dim), [0, 2, 1, 3])  # [B, H, S, hd]
        k = heads_of(b.matmul(h, dim, dim), [0, 2, 3, 1])  # [B, H, hd, S]
        v = heads_of(b.matmul(h, dim, dim), [0, 2, 1, 3])
        att = b.op("Mul", [b.op("MatMul", [q, k]), b.const(1.0 / math.sqrt(hd), np.float32)])
        att = b.op("Softmax", [att], axis=-1)
        ctx = b.op("Transpose", [b.op("MatMul", [att, v])], perm=[0, 2, 1, 3])
        ctx = b.op("Reshape", [ctx, merge_shape])
        x = b.op("Add", [x, b.matmul(ctx, dim, dim)])
        h = layer_norm(x)
        h = b.matmul(b.relu(b.matmul(h, dim, 4 * dim)), 4 * dim, dim)
        x = b.op("Add", [x, h], name="y" if layer == layers - 1 else None)
    return b.build([x], doc=f"transformer encoder, {layers} block(s), with shape arithmetic", opset=opset, ir_version=ir_version)


def resnet18(size: int = 224, classes: int = 1000, seed: int = 0,
             opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """ResNet-18 (He et al. 2016; torchvision layout): 1.8 GMACs at 224x224, 11.7 M parameters."""
    b = Builder("resnet18", seed)
    x = b.input("input", [1, 3, size, size])
    x = b.maxpool(b.conv_bn(x, 3, 64, 7, 2))
    cin = 64
    for i, cout in enumerate((64, 128, 256, 512)):
        for j in range(2):
            x = _basic_block(b, x, cin, cout, 2 if i > 0 and j == 0 else 1)
            cin = cout
    return b.build([b.classifier(x, 512, classes)], doc="ResNet-18", opset=opset, ir_version=ir_version)


def mobilenet_v2(size: int = 224, classes: int = 1000, seed: int = 0,
                 opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """MobileNetV2 1.0 (Sandler et al. 2018; torchvision layout): 0.3 GMACs at 224x224, 3.5 M parameters."""
    b = Builder("mobilenet_v2", seed)
    x = b.input("input", [1, 3, size, size])
    x = b.conv_bn(x, 3, 32, 3, 2, act="relu6")
    cin = 32
    # (expansion t, channels c, repeats n, first stride s), as in the paper's Table 2
    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    for t, c, n, s in settings:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = x if t == 1 else b.conv_bn(x, cin, hidden, 1, act="relu6")
            y = b.conv_bn(y, hidden, hidden, 3, stride, group=hidden, act="relu6")
            y = b.conv_bn(y, hidden, c, 1, act=None, gamma=0.5 if stride == 1 and cin == c else 1.0)
            x = b.op("Add", [x, y]) if stride == 1 and cin == c else y
            cin = c
    x = b.conv_bn(x, cin, 1280, 1, act="relu6")
    return b.build([b.classifier(x, 1280, classes)], doc="MobileNetV2 1.0", opset=opset, ir_version=ir_version)


def bottlenet(size: int = 224, classes: int = 1000, bottleneck: int = 12, width: int = 256, depth: int = 6,
              seed: int = 0, opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """The demo camera classifier: splitting it pays off over 4G.

    A cheap stem of three stride-2 convs squeezes the 224x224 RGB frame (602 KB as fp32) into
    a ``bottleneck``-channel 28x28 map (12 channels: 9.4 KB as int8), then a heavy backbone of
    ``depth`` 3x3 convs at ``width`` channels on 28x28 (~0.9 GFLOP each) does the real work.
    On a Raspberry Pi 4 the backbone is slow; sending the frame itself over 4G is slower still;
    sending the bottleneck is cheap. So the best plan runs the stem on the device and cuts there.
    """
    b = Builder("bottlenet", seed)
    x = b.input("image", [1, 3, size, size])
    x = b.conv_bn(x, 3, 16, 3, 2)  # 112x112
    x = b.conv_bn(x, 16, 32, 3, 2)  # 56x56
    x = b.conv_bn(x, 32, bottleneck, 3, 2, name="bottleneck")  # 28x28x12
    x = b.conv_bn(x, bottleneck, width, 3, 1)
    for _ in range(depth - 1):
        x = b.conv_bn(x, width, width, 3, 1)
    doc = "bottlenet: cheap stem to a 12-channel bottleneck, heavy backbone"
    return b.build([b.classifier(x, width, classes)], doc=doc, opset=opset, ir_version=ir_version)


# -- models for the cluster planner (issue 14): big enough to spread over several devices -------------------


def _w(c: int, width: float) -> int:
    return max(1, round(c * width))


def vgg16(size: int = 224, classes: int = 1000, width: float = 1.0, seed: int = 0,
          opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """VGG-16 (Simonyan & Zisserman 2015, configuration D): 13 conv3x3+relu in five stages, each ended by a 2x2
    max pool, then fc-4096, fc-4096, fc-``classes`` (no dropout: inference). ``width`` scales every conv and hidden
    fc width; the fc input is the flattened 512 x size/32 x size/32 map (pools floor odd sizes).
    At 224 x 224 and width 1: 15.5 GMACs, 138 M parameters (553 MB)."""
    if size < 32:
        raise ValueError(f"vgg16: size {size} is under 32 (five 2x2 pools)")
    b = Builder("vgg16", seed)
    x = b.input("input", [1, 3, size, size])
    cin = 3
    for stage, (c, n) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        for _ in range(n):
            x = b.conv_relu(x, cin, _w(c, width))
            cin = _w(c, width)
        x = b.maxpool(x, 2, 2, 0)
    x = b.op("Flatten", [x], axis=1)
    fin, hidden = cin * (size // 32) ** 2, _w(4096, width)
    x = b.relu(b.gemm(x, fin, hidden))
    x = b.relu(b.gemm(x, hidden, hidden))
    return b.build([b.gemm(x, hidden, classes, name="logits")], doc=f"VGG-16 width {width:g}", opset=opset,
                   ir_version=ir_version)


def yolo16(size: int = 416, width: float = 1.0, seed: int = 0, opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """The first 16 layers of YOLOv2 (Redmon & Farhadi 2017; darknet yolov2.cfg layers 0-15), the part DeepThings
    partitions into fused tiles: conv3x3 (and 1x1 bottleneck) + BatchNormalization + LeakyRelu(0.1), with four 2x2
    max pools (floor on odd sizes); output ``features``: 256 channels at size/16. ``width`` scales the channels.
    At 416 x 416 and width 1:
    3.4 M parameters, 6.1 GMACs."""
    if size < 16:
        raise ValueError(f"yolo16: size {size} is under 16 (four 2x2 pools)")
    b = Builder("yolo16", seed)
    x = b.input("input", [1, 3, size, size])
    layers = (32, "M", 64, "M", 128, (64, 1), 128, "M", 256, (128, 1), 256, "M", 512, (256, 1), 512, (256, 1))
    cin = 3
    for i, layer in enumerate(layers):
        if layer == "M":
            x = b.maxpool(x, 2, 2, 0)
            continue
        c, k = layer if isinstance(layer, tuple) else (layer, 3)
        y = b.bn(b.conv(x, cin, _w(c, width), k, bias=False), _w(c, width))
        x = b.op("LeakyRelu", [y], alpha=0.1, name="features" if i == len(layers) - 1 else None)
        cin = _w(c, width)
    return b.build([x], doc=f"YOLOv2 layers 0-15 width {width:g}", opset=opset, ir_version=ir_version)


def fc_wide(size: int = 64, features: int = 1024, outputs: int = 10000, seed: int = 0,
            opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """Musical Chair's model-parallel case: a small conv stem (three conv3x3 stride 2 + relu, 32-64-128 channels),
    global average pool, fc-``features`` + relu, then one wide fc of ``outputs`` (>= 10k: its weights, not its
    FLOPs, dominate; it favours splitting its outputs across devices). At the defaults: 10.4 M parameters."""
    b = Builder("fc_wide", seed)
    x = b.input("input", [1, 3, size, size])
    cin = 3
    for c in (32, 64, 128):
        x = b.conv_relu(x, cin, c, 3, 2)
        cin = c
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    x = b.relu(b.gemm(x, cin, features))
    return b.build([b.gemm(x, features, outputs, name="logits")], doc=f"fc_wide {features}->{outputs}", opset=opset,
                   ir_version=ir_version)


MODELS = {
    "chain": chain,
    "residual_block": residual_block,
    "inception": inception,
    "detector_heads": detector_heads,
    "transformer_block": transformer_block,
    "resnet18": resnet18,
    "mobilenet_v2": mobilenet_v2,
    "bottlenet": bottlenet,
}
# Not in MODELS (the suite every test and `splitc bench` compiles on every link): VGG-16 alone is 553 MB.
CLUSTER_MODELS = {"vgg16": vgg16, "yolo16": yolo16, "fc_wide": fc_wide}
