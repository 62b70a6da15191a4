"""Measure a model's kernels on this machine in onnxruntime and map them back to the ONNX nodes they cover.

onnxruntime's profiler (``SessionOptions.enable_profiling``) records one event per kernel per run. With graph
optimizations on, kernels are fused and renamed (``Conv`` + ``BatchNormalization`` + ``Relu`` -> one
``relu_0_nchwc`` NCHWc kernel, ``MatMul`` + ``Add`` -> ``Reshape, Gemm, Reshape``, a decomposed layer norm ->
``SkipLayerNormalization`` ...). The optimized graph is saved beside the session (``optimized_model_filepath``)
and both graphs are cut at the tensors they share:

* a tensor of the optimized graph *survives* when it carries an original tensor's name, or when it is the output
  of an NCHWc kernel that onnxruntime named after the original tensor it computes (``<tensor>_nchwc``, with a
  fused residual ``Add`` / activation followed to the tensor they produce);
  (a ``ReorderInput`` output holds its input in the blocked layout);
* original nodes joined by tensors that do not survive belong together, so do kernels joined by tensors that do
  not survive, and an original node and a kernel that produce the same surviving tensor belong together;
* a group of kernels with no original node (a layout change of a graph input) joins the kernels next to it.

Each resulting group is a set of original nodes and the kernels that compute exactly them: its measured time is
the sum of its kernels' durations in a typical run (the mean over the middle half of the runs, by their total:
see :func:`typical_kernel_seconds`). A fused group is thus costed as a unit; most groups are one node
(plus the activations and batch norms fused into it).
"""

from __future__ import annotations

import bisect
import json
import os
import platform
import re
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from splitc.ir import metadata as ann
from splitc.errors import SplitcError
from splitc.cost.fit import NodeFeatures, node_features
from splitc.frontend.passes.replicable import is_replicable
from splitc.runtimes.ort import OPT_LEVELS, synthetic_inputs


@dataclass(frozen=True)
class Settings:
    """How onnxruntime runs: the deployment's settings, and how many runs are measured."""

    optimization: str = "all"
    threads: int = 0  # intra-op threads; 0 = onnxruntime's default (one per physical core)
    warmup: int = 5
    runs: int = 30
    spinning: bool = False  # idle intra-op threads spin for work (onnxruntime's default) instead of sleeping

    def __post_init__(self):
        if self.optimization not in OPT_LEVELS:
            raise SplitcError(f"--optimization '{self.optimization}': choose one of {', '.join(OPT_LEVELS)}")
        if self.threads < 0:
            raise SplitcError(f"--threads {self.threads}: must be 0 (onnxruntime's default) or more")
        if self.warmup < 0 or self.runs < 1:
            raise SplitcError(f"--warmup {self.warmup} / --runs {self.runs}: need warmup >= 0 and runs >= 1")


def session_options(settings: Settings, *, profile_prefix: str | None = None, optimized_path: str | None = None):
    options = ort.SessionOptions()
    options.graph_optimization_level = OPT_LEVELS[settings.optimization]
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    # With more than one thread, onnxruntime's workers spin for tens of ms after each parallel section by default.
    # The profiled and the plain session run interleaved: a pool still spinning steals a core from the other
    # session (on 2 cores, 2-thread runs measured 3-5x slower), and the profiled kernel times miss it.
    # So no pool spins once its run returns; between parallel sections it spins only with ``spinning``.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.spinning else "0")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if optimized_path is not None:
        options.optimized_model_filepath = optimized_path
    return options


def make_session(model: str | Path | bytes, settings: Settings, **kw) -> ort.InferenceSession:
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, session_options(settings, **kw), providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Group:
    """Original nodes and the kernels that compute exactly them."""

    seconds: float  # sum of the kernels' typical durations (typical_kernel_seconds)
    nodes: tuple[str, ...]  # original node names (costed ones and those fused/eliminated with them)
    kernels: tuple[str, ...]  # onnxruntime kernel (optimized node) names


@dataclass
class ModelProfile:
    """One model measured on this machine."""

    model: str
    settings: Settings
    wall_s: float  # median whole-model run, profiling off
    wall_runs: list[float]
    kernel_s: float  # sum of the kernels' typical durations, profiling on
    groups: list[Group]
    features: dict[str, NodeFeatures]  # original node name -> features (nodes that cost nothing are absent)
    op_types: dict[str, str]  # original node name -> op type
    kernel_ops: dict[str, str]  # kernel name -> op type (domain-qualified when not ONNX)
    unmapped_s: float = 0.0  # kernel time that computes only constants (no original node to give it to)
    notes: list[str] = field(default_factory=list)

    @property
    def kernels(self) -> int:
        return sum(len(g.kernels) for g in self.groups)

    def rows(self, per_kernel_s: float = 0.0) -> list[tuple[float, list[NodeFeatures]]]:
        """(seconds, features of the costed nodes) per group: what the fit is made from.

        ``per_kernel_s`` corrects every kernel's profiled duration (see :func:`measure_profiler_bias`).
        """
        return [(max(0.0, g.seconds + per_kernel_s * len(g.kernels)), [self.features[n] for n in g.nodes if n in self.features])
                for g in self.groups]


# --------------------------------------------------------------------------------------------- measuring


def _kernel_durations(trace: list[dict], warmup: int) -> list[dict[str, float]]:
    """Per run after the first ``warmup`` runs: kernel name -> its seconds in that run."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run")
    kept = runs[warmup:]
    starts = [lo for lo, _ in kept]
    out: list[dict[str, float]] = [defaultdict(float) for _ in kept] or [defaultdict(float)]
    for e in trace:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        r = bisect.bisect_right(starts, e["ts"]) - 1
        if kept and (r < 0 or e["ts"] > kept[r][1]):
            continue  # a warm-up run's kernel
        out[max(r, 0)][e["name"][: -len("_kernel_time")]] += e["dur"] * 1e-6
    return out


def middle_mean(values: list[float]) -> float:
    """The mean of the values between their quartiles (the interquartile mean): robust like a median, and a
    mean, so that it adds up (see :func:`typical_kernel_seconds`)."""
    lo, hi = np.percentile(values, [25, 75])
    return float(np.mean([v for v in values if lo <= v <= hi]))


def typical_kernel_seconds(per_run: list[dict[str, float]]) -> dict[str, float]:
    """Kernel name -> seconds in a typical run: the mean over the runs whose kernel total lies between the
    quartiles of all runs' totals.

    Not each kernel's own median: on a machine that also runs other work, most runs are preempted somewhere,
    but each short kernel rarely, so the sum of per-kernel medians misses the preemptions that every run
    pays (measured on 2 shared cores at load 9: 178 ms against a 374 ms median run of the plain session; these
    means summed to 364 ms). Means over the same runs add up to the kernel time of those runs."""
    totals = [sum(r.values()) for r in per_run]
    lo, hi = np.percentile(totals, [25, 75])
    kept = [r for r, t in zip(per_run, totals) if lo <= t <= hi]
    names = {k for r in per_run for k in r}
    return {k: sum(r.get(k, 0.0) for r in kept) / len(kept) for k in names}


def _specs(model: ir.Model) -> list[dict]:
    from splitc.ir.graph import graph_inputs

    specs = []
    for v in graph_inputs(model.graph):
        info = ann.get(v, ann.TENSOR, ann.TensorInfo)
        specs.append({"name": v.name, "dtype": info.dtype, "shape": list(info.shape)})
    return specs


def _constant_initializers(proto: onnx.ModelProto) -> None:
    """Drop initializers from the graph inputs, as splitc's emitted parts do.

    From IR version 4 an initializer that is also a graph input is a default that a caller may override, so
    onnxruntime neither folds nor fuses it (no BatchNormalization folded into its Conv, no NCHWc weights).
    Deployed parts list only real inputs, so the profile measures the model that way too.
    """
    if proto.ir_version < 4:
        return  # before IR 4 initializers must be listed as inputs, and onnxruntime treats them as constants
    names = {t.name for t in proto.graph.initializer}
    keep = [v for v in proto.graph.input if v.name not in names]
    if len(keep) != len(proto.graph.input):
        del proto.graph.input[:]
        proto.graph.input.extend(keep)


def measure_model(
    path: str | Path,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    settings: Settings = Settings(),
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ModelProfile:
    """Profile ``path`` in onnxruntime with ``settings``; group kernels with the original nodes they compute."""
    return measure_models([(path, input_shapes, settings)], progress=progress)[0]


BLOCK = 6  # consecutive runs of one model within a round of measure_models


def measure_models(
    items: list[tuple[str | Path, dict[str, tuple[int, ...]] | None, Settings]],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> list[ModelProfile]:
    """Profile each (model, input shapes, settings), all at once: every round runs each model BLOCK times (its
    profiled session, then its plain one), model after model, so that the load of a shared machine falls on all
    of them alike (measured one after the other, models saw different loads and the fit could not reconcile them)
    and each run finds its own weights in the caches.
    A model with fewer warm-up + measured runs stops early. ``progress(done, total)`` counts runs of all."""
    from splitc.compiler import import_model
    from splitc.pipeline import run_passes
    from splitc.cost.passes.flops import FlopsPass
    from splitc.cost.passes.tensor_bytes import TensorBytesPass

    tick = progress or (lambda _done, _total: None)
    prepared = []
    for path, input_shapes, _ in items:
        model = import_model(path, input_shapes)
        run_passes([TensorBytesPass(Path(path).name), FlopsPass(warn_unknown=False)], model)
        proto = ir.to_proto(model)
        _constant_initializers(proto)
        prepared.append((model, proto, synthetic_inputs(_specs(model))))
    totals = [st.warmup + st.runs for _, _, st in items]
    with tempfile.TemporaryDirectory(prefix="splitc-profile-") as tmp:
        sessions, walls = [], [[] for _ in items]
        for i, ((_, _, st), (_, proto, _)) in enumerate(zip(items, prepared)):
            src, opt = os.path.join(tmp, f"model{i}.onnx"), os.path.join(tmp, f"optimized{i}.onnx")
            onnx.save_model(proto, src, save_as_external_data=proto.ByteSize() > 1_800_000_000)
            sessions.append((make_session(src, st, profile_prefix=os.path.join(tmp, f"trace{i}"), optimized_path=opt),
                             make_session(src, st), opt))
        done = 0
        # rounds over all models, BLOCK runs of one model at a time: a shared machine's drift falls on every model
        # alike (model after model, two models profiled minutes apart saw 1.32x and 0.80x of their later speed),
        # while each run finds its own weights in the caches (one run of each model in turn came out 7-32% slower
        # than a plain session on a quiet machine, and every held-out model was overpredicted: median +45%)
        for start in range(0, max(totals), BLOCK):
            for i, ((prof, plain, _), (_, _, feeds), st) in enumerate(zip(sessions, prepared, (x[2] for x in items))):
                for r in range(start, min(start + BLOCK, totals[i])):
                    prof.run(None, feeds)
                    t = time.perf_counter()
                    plain.run(None, feeds)
                    if r >= st.warmup:
                        walls[i].append(time.perf_counter() - t)
                    done += 1
                    tick(done, sum(totals))
        traces, optimized = [], []
        for prof, _, opt in sessions:
            with open(prof.end_profiling()) as f:
                traces.append(json.load(f))
            optimized.append(onnx.load(opt, load_external_data=False))
        del sessions
    out = []
    for (path, _, st), (model, proto, _), trace, opt_model, wall in zip(items, prepared, traces, optimized, walls):
        typical = typical_kernel_seconds(_kernel_durations(trace, st.warmup))
        static = {n.name for n in model.graph if is_replicable(n)}
        groups, kernel_ops, unmapped, notes = map_kernels(proto.graph, opt_model.graph, typical, static)
        features = {}
        op_types = {}
        for node in model.graph:
            op_types[node.name] = node.op_type
            f = node_features(node)
            if f is not None:
                features[node.name] = f
        out.append(ModelProfile(
            model=str(path), settings=st, wall_s=statistics.median(wall), wall_runs=wall,
            kernel_s=sum(typical.values()), groups=groups, features=features, op_types=op_types,
            kernel_ops=kernel_ops, unmapped_s=unmapped, notes=notes,
        ))
    return out


# --------------------------------------------------------------------------------------------- mapping


class _UnionFind:
    def __init__(self):
        self.parent: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


_NCHWC_NAME = re.compile(r"^(.*)_nchwc(?:_token_\d+)?$")


def _attr(node: onnx.NodeProto, name: str):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def _aliases(orig: onnx.GraphProto, opt: onnx.GraphProto) -> dict[str, str]:
    """Optimized tensor name -> the original tensor it holds, for the tensors that survive optimization."""
    produced = {o: n for n in orig.node for o in n.output if o}
    names = set(produced) | {v.name for v in orig.input} | {t.name for t in orig.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in orig.node:
        for i in n.input:
            if i:
                consumers[i].append(n)
    alias: dict[str, str] = {}
    for n in opt.node:
        for o in n.output:
            if o in names:
                alias[o] = o
    # NCHWc kernels are named after the original tensor they compute; a residual Add and an activation fused
    # into the kernel afterwards move its output down to the tensor they produce.
    for n in opt.node:
        m = _NCHWC_NAME.match(n.name)
        if not m or n.domain != "com.microsoft.nchwc" or not n.output or n.output[0] in alias:
            continue
        base = m.group(1)
        if base not in produced:
            continue
        tensor = base
        if n.op_type == "Conv" and len(n.input) > 3 and n.input[3]:
            adds = [c for c in consumers.get(tensor, []) if c.op_type in ("Add", "Sum")]
            if len(adds) == 1 and len(consumers[tensor]) == 1:
                tensor = adds[0].output[0]
        act = _attr(n, "activation")
        if act:
            act = act.decode() if isinstance(act, bytes) else act
            nxt = consumers.get(tensor, [])
            if len(nxt) == 1 and nxt[0].op_type == act and tensor not in {o.name for o in orig.output}:
                tensor = nxt[0].output[0]
        alias[n.output[0]] = tensor
    # a layout change holds the same tensor in another layout
    for n in opt.node:
        if n.op_type == "ReorderInput" and n.input and n.output and n.output[0] not in alias and n.input[0] in names:
            alias[n.output[0]] = n.input[0]
    return alias


def map_kernels(orig: onnx.GraphProto, opt: onnx.GraphProto, seconds: dict[str, float], static_nodes: set[str] | None = None):
    """Group original nodes with the kernels computing them; see the module docstring.

    ``static_nodes`` names the original nodes that depend on no graph input (onnxruntime folds them); by
    default those whose inputs are all initializers or outputs of such nodes.
    Returns (groups, kernel op types, seconds of kernels that cover no original node, notes).
    """
    alias = _aliases(orig, opt)
    # a kernel's output aliasing an original tensor is a cut point; an original tensor is one too when a kernel
    # produces it (under its own name or an alias)
    survivors = set(alias.values())
    surviving_opt = set(alias)
    uf = _UnionFind()
    static = {t.name for t in orig.initializer}
    # original nodes whose inputs are all initializers/constants are folded by onnxruntime
    if static_nodes is not None:
        dynamic_nodes = [n for n in orig.node if n.name not in static_nodes]
    else:
        dynamic_tensors = {v.name for v in orig.input if v.name not in static}
        dynamic_nodes = []
        for n in orig.node:
            if any(i in dynamic_tensors for i in n.input if i):
                dynamic_nodes.append(n)
                dynamic_tensors.update(o for o in n.output if o)
    producer_o = {o: n.name for n in dynamic_nodes for o in n.output if o}
    for n in dynamic_nodes:
        uf.find(("o", n.name))
        for i in n.input:
            if i in producer_o and i not in survivors:
                uf.union(("o", producer_o[i]), ("o", n.name))
    producer_k = {o: n.name for n in opt.node for o in n.output if o}
    kernel_ops = {n.name: (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}") for n in opt.node}
    for n in opt.node:
        uf.find(("k", n.name))
        for i in n.input:
            if i in producer_k and i not in surviving_opt:
                uf.union(("k", producer_k[i]), ("k", n.name))
        for o in n.output:
            if o in alias and alias[o] in producer_o:
                uf.union(("o", producer_o[alias[o]]), ("k", n.name))
    # kernels that compute no original node by themselves (a layout change of a graph input) join the kernels
    # that read their output, else those that produce their input
    consumers_k: dict[str, list[str]] = defaultdict(list)
    for n in opt.node:
        for i in n.input:
            if i:
                consumers_k[i].append(n.name)
    has_nodes = {uf.find(("o", n.name)) for n in dynamic_nodes}
    for n in opt.node:
        if uf.find(("k", n.name)) in has_nodes:
            continue
        near = [c for o in n.output for c in consumers_k.get(o, [])] + [producer_k[i] for i in n.input if i in producer_k]
        for other in near:
            if uf.find(("k", other)) in has_nodes:
                uf.union(("k", other), ("k", n.name))
                has_nodes.add(uf.find(("k", n.name)))
                break
    members: dict = defaultdict(lambda: ([], []))
    for n in dynamic_nodes:
        members[uf.find(("o", n.name))][0].append(n.name)
    for n in opt.node:
        members[uf.find(("k", n.name))][1].append(n.name)
    groups, unmapped, notes = [], 0.0, []
    missing = [k for k in seconds if k not in kernel_ops]
    if missing:
        notes.append(f"{len(missing)} profiled kernel(s) not in the optimized graph: {missing[:3]}")
    for nodes, kernels in members.values():
        t = sum(seconds.get(k, 0.0) for k in kernels)
        if not nodes:
            unmapped += t
            continue
        groups.append(Group(t, tuple(nodes), tuple(kernels)))
    return groups, kernel_ops, unmapped, notes


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}: {cpu}, {os.cpu_count()} logical CPUs"


def feeds_for(model_path: str | Path, input_shapes=None) -> dict[str, np.ndarray]:
    from splitc.compiler import import_model
    from splitc.cost.passes.tensor_bytes import TensorBytesPass
    from splitc.pipeline import run_passes

    model = import_model(model_path, input_shapes)
    run_passes([TensorBytesPass(Path(model_path).name)], model)  # _specs reads the tensor annotations
    return synthetic_inputs(_specs(model))


# --------------------------------------------------------------------------------------------- calibration


def calibration_models() -> list[tuple[str, onnx.ModelProto]]:
    """Small graphs of one op type each at activation sizes typical of CNNs and transformers: the standalone
    memory-bound ops (elementwise, layout, reductions, norms, pooling, resizing) and plain MatMuls that the
    profiled models may not run on their own (a CNN's residual Add and activations are fused into its convs).
    Convolutions come from the profiled models only. Independent branches differ in their attributes or
    inputs, so that onnxruntime's common-subexpression elimination keeps them apart."""
    from splitc.tools import zoo

    a, b, small, tiny = [1, 64, 56, 56], [1, 128, 384], [1, 64, 28, 28], [1, 16, 12, 12]
    models = []

    def build(name: str, fn) -> None:
        builder = zoo.Builder(f"calibration_{name}", seed=0)
        outputs = fn(builder)
        models.append((name, builder.build(outputs, doc=f"splitc profile calibration: {name}")))

    def elementwise(bd, shape):
        x = bd.input("x", shape)
        y = bd.op("Relu", [x])
        t = y
        for op in ("Add", "Mul", "Sigmoid", "Add", "Mul", "Tanh"):
            t = bd.op(op, [t] if op in ("Sigmoid", "Tanh") else [t, y])
        return [t]

    build("elementwise_a", lambda bd: elementwise(bd, a))
    build("elementwise_b", lambda bd: elementwise(bd, b))
    build("elementwise_tiny", lambda bd: elementwise(bd, tiny))

    def transposes(bd, shape, perms):
        x = bd.input("x", shape)
        return [bd.op("Transpose", [x], perm=p) for p in perms]

    build("transpose_a", lambda bd: transposes(bd, a, [[0, 2, 3, 1], [0, 1, 3, 2], [0, 3, 1, 2]]))
    build("transpose_heads", lambda bd: transposes(bd, [1, 128, 12, 32], [[0, 2, 1, 3], [0, 2, 3, 1]]))

    def concat_slice(bd, shape):
        x = bd.input("x", shape)
        y = bd.op("Relu", [x])
        outs = [bd.op("Concat", [x, y], axis=1), bd.op("Concat", [y, x], axis=2)]
        half = shape[1] // 2
        outs.append(bd.op("Slice", [x, bd.const([0]), bd.const([half]), bd.const([1])]))
        outs.append(bd.op("Slice", [x, bd.const([1]), bd.const([shape[2]]), bd.const([2])]))
        return outs

    build("concat_slice_a", lambda bd: concat_slice(bd, a))
    build("concat_slice_b", lambda bd: concat_slice(bd, b))
    build("concat_slice_tiny", lambda bd: concat_slice(bd, tiny))
    build("transpose_tiny", lambda bd: transposes(bd, tiny, [[0, 2, 3, 1], [0, 1, 3, 2]]))

    def reductions(bd):
        att = bd.input("att", [1, 4, 128, 128])
        scores = bd.input("scores", [1, 4800, 8])
        x = bd.input("x", a)
        few = bd.input("few", [1, 300, 2])
        return [bd.op("Softmax", [att], axis=-1), bd.op("Softmax", [scores], axis=-1), bd.op("Softmax", [few], axis=-1),
                bd.op("ReduceMean", [x], axes=[2, 3], keepdims=1), bd.op("ReduceMax", [x], axes=[1], keepdims=1),
                bd.op("ReduceMean", [few], axes=[1], keepdims=1)]

    build("reduce", reductions)

    def norms(bd):
        x = bd.input("x", b)
        t = x
        for _ in range(3):
            g = bd.init(np.ones(b[-1], np.float32), "ln_g")
            beta = bd.init(np.zeros(b[-1], np.float32), "ln_b")
            t = bd.op("LayerNormalization", [t, g, beta], axis=-1, epsilon=1e-5)
        y = bd.input("y", a)
        u = bd.op("Relu", [y])
        for i in range(2):
            u = bd.bn(u, a[1])
        z = bd.input("z", [1, 16, 64])
        g = bd.init(np.ones(64, np.float32), "ln_g")
        return [t, u, bd.op("LayerNormalization", [z, g, bd.init(np.zeros(64, np.float32), "ln_b")], axis=-1)]

    build("norm", norms)

    def pools(bd):
        x = bd.input("x", a)
        t = bd.op("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
        m2 = bd.op("MaxPool", [t], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        avg = bd.op("AveragePool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
        return [m2, avg, bd.op("GlobalAveragePool", [x]), bd.op("GlobalMaxPool", [t])]

    build("pool", pools)

    def resizes(bd):
        x = bd.input("x", small)
        y = bd.input("y", [1, 128, 13, 13])
        scales = bd.const([1.0, 1.0, 2.0, 2.0], np.float32)
        return [bd.op("Resize", [x, "", scales], mode="nearest"), bd.op("Resize", [x, "", scales], mode="linear"),
                bd.op("Resize", [y, "", scales], mode="nearest")]

    build("resize", resizes)

    def matmuls(bd):
        x = bd.input("x", [1, 128, 256])
        t = x
        for _ in range(3):
            t = bd.op("MatMul", [t, bd.init(bd.he((256, 256), 256, 1.0), "mm_w")])
        v = bd.input("v", [1, 1024])
        u = v
        for _ in range(2):
            u = bd.op("MatMul", [u, bd.init(bd.he((1024, 1024), 1024, 1.0), "mm_w")])
        q = bd.input("q", [1, 4, 128, 32])
        k = bd.input("k", [1, 4, 32, 128])
        w = bd.input("w", [1, 16, 32])
        return [t, u, bd.op("MatMul", [q, k]), bd.op("MatMul", [w, bd.init(bd.he((32, 32), 32, 1.0), "mm_w")])]

    build("matmul", matmuls)
    return models



def _chain_model(shape: list[int], n: int) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    nodes, prev = [], "x"
    for i in range(n):
        nodes.append(helper.make_node("Add" if i % 2 == 0 else "Mul", [prev, "c"], [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.full(1, 1.0001, np.float32), "c")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def measure_profiler_bias(settings: Settings, nodes: int = 200, runs: int = 30) -> float:
    """Seconds to add to each profiled kernel duration so that kernels sum to the unprofiled run time.

    onnxruntime's profiler times each kernel with its own bookkeeping inside (about +1.5 us per kernel on a
    server core), while the executor's own time between kernels is outside every kernel. A chain of tiny
    kernels, profiled and not, interleaved, measures the net difference per kernel (usually negative).
    """
    estimates = []
    for shape in ([1, 64, 8, 8], [1, 64, 16, 16]):
        model = _chain_model(shape, nodes)
        with tempfile.TemporaryDirectory(prefix="splitc-bias-") as tmp:
            prof = make_session(model, settings, profile_prefix=os.path.join(tmp, "trace"))
            plain = make_session(model, settings)
            feeds = {"x": np.ones(shape, np.float32)}
            wall = []
            for i in range(settings.warmup + runs):
                prof.run(None, feeds)
                t = time.perf_counter()
                plain.run(None, feeds)
                if i >= settings.warmup:
                    wall.append(time.perf_counter() - t)
            with open(prof.end_profiling()) as f:
                durations = typical_kernel_seconds(_kernel_durations(json.load(f), settings.warmup))
        kernels = sum(durations.values())
        estimates.append((middle_mean(wall) - kernels) / max(1, len(durations)))
    return float(min(10e-6, max(-10e-6, statistics.median(estimates))))




def measure_codec(settings: Settings, runs: int = 15) -> tuple[float, float]:
    """(encode, decode) bytes/s of the int8 boundary on this machine, of raw fp32 bytes: onnxruntime's
    DynamicQuantizeLinear + the wire codec's zstd, and back (DequantizeLinear), on a ReLU activation."""
    from onnx import TensorProto, helper

    from splitc.runtimes.wire import decode, encode

    shape = [1, 64, 56, 56]
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)

    def model(nodes, inputs, outputs):
        graph = helper.make_graph(nodes, "codec", inputs, outputs)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        return m.SerializeToString()

    f32 = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    u8 = lambda n, s: helper.make_tensor_value_info(n, TensorProto.UINT8, s)  # noqa: E731
    quant = make_session(model([helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])],
                               [f32("x", shape)], [u8("q", shape), f32("s", []), u8("z", [])]), settings)
    deq = make_session(model([helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
                             [u8("q", shape), f32("s", []), u8("z", [])], [f32("y", shape)]), settings)
    expected = {"q": ("uint8", tuple(shape)), "s": ("float32", ()), "z": ("uint8", ())}
    enc, dec = [], []
    for i in range(runs + 2):
        t0 = time.perf_counter()
        q, s, z = quant.run(None, {"x": x})
        payload = encode({"q": q, "s": s, "z": z})
        t1 = time.perf_counter()
        got = decode(payload, expected)
        deq.run(None, got)
        t2 = time.perf_counter()
        if i >= 2:
            enc.append(t1 - t0)
            dec.append(t2 - t1)
    return x.nbytes / statistics.median(enc), x.nbytes / statistics.median(dec)


def measure_cluster_codec(runs: int = 15) -> tuple[float, float]:
    """(encode, decode) bytes/s of a cluster plan's int8 link codec (splitc/runtimes/cluster_codec.py: numpy's
    DynamicQuantizeLinear + zstd, one wire payload) on this machine, of raw fp32 bytes, on a dense frame: a
    LeakyReLU(0.1) activation (YOLO's), as tile and channel boundaries carry. A ReLU frame (half zeros) codes
    ~2-3x slower: zstd spends its time on the runs of the zero point."""
    from splitc.runtimes.cluster_codec import pack, unpack

    shape = (1, 64, 56, 56)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x = np.where(x > 0, x, np.float32(0.1) * x)
    expected = {"x": ("float32", shape)}
    enc, dec = [], []
    for i in range(runs + 2):
        t0 = time.perf_counter()
        payload = pack({"x": x}, "int8")
        t1 = time.perf_counter()
        unpack(payload, expected, "int8")
        t2 = time.perf_counter()
        if i >= 2:
            enc.append(t1 - t0)
            dec.append(t2 - t1)
    return x.nbytes / statistics.median(enc), x.nbytes / statistics.median(dec)


def measure_image_codecs(runs: int = 7) -> tuple[tuple[str, float], ...]:
    """Pixels/s of the input-image codecs on one core of this machine (splitc.runtimes.image: JPEG q90 4:2:0, PNG,
    WebP q90), encode and decode of a 224x224 photo-like frame (smooth gradients, a disc, sensor noise); medians.
    () when the image extra (Pillow, simplejpeg) is not installed: plans then use rpi4's figures, with a warning."""
    from splitc.runtimes.image import ImageSpec, parse_codec

    try:
        import PIL  # noqa: F401
    except ImportError:
        return ()
    side = 224
    yy, xx = np.mgrid[0:side, 0:side] / side
    frame = np.stack([xx * 200 + yy * 40, yy * 180 + 30, (xx * yy) * 255], -1)
    frame[(yy - 0.5) ** 2 + (xx - 0.4) ** 2 < 0.04] = (200, 60, 40)
    frame = np.clip(frame + np.random.default_rng(0).normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
    spec = ImageSpec("x", "NHWC", side, side, 3, "uint8")
    out = []
    for kind in ("jpeg", "png", "webp"):
        codec = parse_codec(kind)
        data = codec.encode(frame)
        for way, fn, arg in (("encode", codec.encode, frame), ("decode", lambda d: codec.decode(d, spec), data)):
            times = []
            for _ in range(runs if kind == "jpeg" else 3):
                t0 = time.perf_counter()
                fn(arg)
                times.append(time.perf_counter() - t0)
            out.append((f"{kind}_{way}", side * side / statistics.median(times)))
    return tuple(sorted(out))


# --------------------------------------------------------------------------------------------- a device profile


@dataclass
class ProfileRun:
    """What ``splitc profile`` measured and fitted."""

    profile: object  # splitc.cost.targets.DeviceProfile
    toml: str
    models: list[ModelProfile]
    fit: object  # splitc.cost.fit.FitResult
    bias_s: float  # the correction added to each profiled kernel (measure_profiler_bias)
    predicted_s: list[float]  # whole-model prediction of the fitted profile, per model
    calibration: list[ModelProfile] = field(default_factory=list)


def measure_calibration(settings: Settings, progress: Callable[[int, int], None] | None = None) -> list[ModelProfile]:
    """Measure :func:`calibration_models` (at most 15 runs each: they are small and steady)."""
    with tempfile.TemporaryDirectory(prefix="splitc-calibration-") as tmp:
        return measure_models(_calibration_items(settings, tmp), progress=progress)


def _calibration_items(settings: Settings, folder: str) -> list[tuple[str, None, Settings]]:
    """:func:`calibration_models` saved in ``folder``, each with at most 3 warm-up and 15 measured runs."""
    cal_settings = replace(settings, warmup=min(settings.warmup, 3), runs=min(settings.runs, 15))
    items = []
    for name, proto in calibration_models():
        path = os.path.join(folder, f"{name}.onnx")
        onnx.save_model(proto, path)
        items.append((path, None, cal_settings))
    return items


def assign_input_shapes(shapes: dict[str, tuple[int, ...]], inputs: dict[str, set[str]]) -> dict[str, dict]:
    """Which ``--input-shape`` entries apply to which model (``inputs``: model path as given -> its input names).

    ``NAME=shape`` applies to every model that has an input NAME; ``MODEL:NAME=shape`` (MODEL as given on the
    command line, or its file name) only to that model, over a plain ``NAME=shape``. An entry that applies to
    no model is an error (a typo, or the wrong model). An input name may itself hold ':' (``input:0``): the
    prefix is a model only when it names one of the models.
    """
    def model_of(key: str) -> tuple[list[str], str] | None:
        prefix, sep, name = key.partition(":")
        while sep:
            hits = [p for p in inputs if prefix in (p, Path(p).name)]
            if hits:
                return hits, name
            more, sep, name = name.partition(":")
            prefix = f"{prefix}:{more}"
        return None

    out: dict[str, dict] = {p: {} for p in inputs}
    unused, scoped = [], []
    for key, dims in shapes.items():
        target = model_of(key)
        if target is None:
            users = [p for p, names in inputs.items() if key in names]
            unused += [] if users else [key]
            for p in users:
                out[p].setdefault(key, dims)
        else:
            scoped.append((key, target, dims))
    if unused:
        raise SplitcError(f"--input-shape names {', '.join(sorted(unused))}, which none of the models has as an input;"
                          " write MODEL.onnx:NAME=DxD.. to give one model's input")
    for key, (paths, name), dims in scoped:
        for p in paths:
            if name not in inputs[p]:
                raise SplitcError(f"--input-shape {key}: {p} has no input '{name}' (its inputs: {', '.join(sorted(inputs[p])) or 'none'})")
            out[p][name] = dims
    return out


def _labels(paths: list[str]) -> list[str]:
    names = [Path(p).name for p in paths]
    return [n if names.count(n) == 1 else f"{n} ({Path(p).parent})" for n, p in zip(names, paths)]


def profile_device(
    models: list[tuple[str | Path, dict[str, tuple[int, ...]]]],
    name: str,
    settings: Settings = Settings(),
    *,
    description: str = "",
    calibration: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> ProfileRun:
    """Measure ``models`` (and, with ``calibration``, the built-in calibration kernels) on this machine, fit
    per-class models to them, and return the device profile."""
    from splitc.cost import fit as fitting

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
        raise SplitcError(f"--name '{name}': use letters, digits, '-', '_' or '.'")
    if not models:
        raise SplitcError("splitc profile: give at least one model to measure")
    tick = progress or (lambda _what, _done, _total: None)
    labels = _labels([str(p) for p, _ in models])
    user_runs = len(models) * (settings.warmup + settings.runs)
    with tempfile.TemporaryDirectory(prefix="splitc-calibration-") as tmp:
        items = [(path, shapes, settings) for path, shapes in models] + (_calibration_items(settings, tmp) if calibration else [])
        # all at once, interleaved: the load of a shared machine falls on every model and calibration graph alike
        profiles = measure_models(items, progress=lambda d, t: tick("all models, interleaved", round(d * user_runs / t), user_runs))
    measured, cal = profiles[: len(models)], profiles[len(models):]
    tick("calibration", 0, 0)
    # one correction per kernel for the profiler's bookkeeping, measured on a chain of tiny kernels. Each model's own
    # gap (plain run minus its kernels, spread over them) also spread the executor's and the Python call's time
    # over the kernels: small-kernel models were overpredicted (YOLOX-Nano +52%, UltraFace +40% at 1 thread)
    bias = measure_profiler_bias(settings)
    enc, dec = measure_codec(settings)
    cluster_enc, cluster_dec = measure_cluster_codec()
    rows = [row for p in measured + cal for row in p.rows(bias)]
    result = fitting.fit_groups(rows)
    threads = settings.threads or "onnxruntime default"
    table = {
        "tool": "splitc profile",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_description(),
        "onnxruntime": ort.__version__,
        "optimization": settings.optimization,
        "threads": settings.threads,
        "spinning": settings.spinning,
        "warmup": settings.warmup,
        "runs": settings.runs,
        "profiler_bias_s": bias,
        "calibration_kernels": sum(p.kernels for p in cal),
        "dropped_s": result.dropped_s,
        "models": {},
    }
    for p, label in zip(measured, labels):
        table["models"][label] = {"wall_s": p.wall_s, "kernel_s": p.kernel_s, "kernels": p.kernels, "groups": len(p.groups)}
    sources = [
        f"measured by splitc profile on {machine_description()} at {table['date']}",
        f"onnxruntime {ort.__version__} CPUExecutionProvider, graph optimization '{settings.optimization}', intra-op threads:"
        f" {threads} ({'spinning' if settings.spinning else 'not spinning'} when idle); {settings.warmup} warm-up + {settings.runs} measured runs per model, per-kernel means over the runs between the quartiles",
        "models: " + ", ".join(f"{label} ({p.kernels} kernels, {len(p.groups)} groups)" for p, label in zip(measured, labels)),
        (f"plus {len(cal)} built-in calibration graphs ({table['calibration_kernels']} kernels: standalone elementwise, layout,"
         " reduction, norm, pooling, resize and MatMul ops)") if cal else "no calibration graphs (--no-calibration)",
        "per-class models fitted by non-negative least squares (splitc/cost/fit.py); codec: DynamicQuantizeLinear + zstd measured"
        " (cluster_*: the cluster link codec, numpy + zstd, on a dense LeakyReLU frame)",
    ]
    profile = fitting.build_profile(
        name, result, description=description or f"{platform.node()} measured with onnxruntime {ort.__version__}",
        sources=tuple(sources), encode_bytes_per_s=enc, decode_bytes_per_s=dec, measured=table,
        cluster_encode_bytes_per_s=cluster_enc, cluster_decode_bytes_per_s=cluster_dec,
    )
    image = measure_image_codecs()
    if image:
        profile = replace(profile, image_px_per_s=image, sources=profile.sources + (
            "[image]: input-image codecs measured on one core (splitc.runtimes.image: JPEG q90, PNG, WebP q90 of a 224x224 frame)",))
    for p, entry in zip(measured, table["models"].values()):
        entry["predicted_s"] = float(sum(fitting.predict(profile, f) for f in p.features.values()))
    predicted = [entry["predicted_s"] for entry in table["models"].values()]
    header = (f"Device profile '{name}', measured by 'splitc profile'. Use it with --target {name}.toml\n"
              "Re-measure when onnxruntime, its settings or the machine change.")
    return ProfileRun(profile, fitting.profile_to_toml(profile, header), measured, result, bias, predicted, cal)
