"""Run compiled parts in onnxruntime: head -> encode -> (link) -> decode -> tail -> results back."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from splitc.errors import SplitcError
from splitc.runtimes import planfile
from splitc.runtimes.image import input_records, run_frame
from splitc.runtimes.segment import hop_entropy, hop_models
from splitc.runtimes.wire import decode, encode, plan_fingerprint

OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session(model: str | Path | bytes, optimization: str = "all", threads: int = 0, spinning: bool = True) -> ort.InferenceSession:
    """``spinning=False``: idle intra-op threads sleep instead of spinning after a run (a server, or a client
    beside one, on few cores: spinning threads starve the process that has work)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = OPT_LEVELS[optimization]
    options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime's Fail / InvalidProtobuf / InvalidGraph are not exported
        what = "the model bytes" if isinstance(model, bytes) else str(model)
        raise SplitcError(f"{what}: onnxruntime cannot load it ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def synthetic_inputs(specs: list[dict], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the plan's shapes: standard normal floats, ones for integers (valid ids and masks)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        dtype = numpy_dtype(spec["dtype"])
        shape = tuple(spec["shape"])
        if np.issubdtype(dtype, np.floating):
            feeds[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[spec["name"]] = np.ones(shape, dtype=dtype)
    return feeds


_NP = {"float": "float32", "double": "float64", "float16": "float16", "bool": "bool"}


def numpy_dtype(name) -> np.dtype:
    """The numpy dtype of a plan's dtype name (ONNX's "float", "double", ... or numpy's "int64", ...)."""
    return np.dtype(_NP.get(name, name)) if isinstance(name, str) else np.dtype(name)


def frame_bytes(specs: list[dict]) -> int:
    """Bytes of one sample of inputs ``specs`` (name/dtype/shape dicts), at least 1."""
    return sum(int(np.prod(s["shape"], dtype=np.int64)) * numpy_dtype(s["dtype"]).itemsize for s in specs) or 1


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    bytes_up: int = 0  # payload bytes device -> next tier
    bytes_down: int = 0  # payload bytes back to the device
    raw_up: int = 0  # the same tensors before the boundary codec
    seconds: dict[str, float] = field(default_factory=dict)
    link_bytes: list[dict[str, int]] = field(default_factory=list)  # per link: {"up": .., "down": ..}
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # run_image: the feeds made from the frame


class SplitModel:
    """The artifacts of ``splitc compile`` loaded in onnxruntime, run locally in one process.

    Stages run in plan order, each on its tier's store of tensors; after a stage, every hop it
    sends is encoded, (here) handed over in memory, and decoded into the next tier's store.
    """

    def __init__(self, out_dir: str | Path, optimization: str = "all", threads: int = 0, runtime: str = "ort",
                 spinning: bool = True):
        if runtime not in ("ort", "tvm"):
            raise SplitcError(f"runtime '{runtime}': choose ort (the ONNX parts) or tvm (the libraries of --emit onnx,tvm)")
        out = Path(out_dir)
        self.plan = planfile.load(out)  # every field read below is checked there, every path kept inside `out`
        self.dir = out
        self.targets = [t["name"] for t in self.plan["targets"]]
        self.device = self.targets[0]
        self.stages = self.plan["stages"]
        self.sessions = {}
        self.runtime = runtime
        if runtime == "tvm":  # each stage's TVM library instead of its ONNX part (splitc/runtimes/tvm.py)
            from splitc.runtimes.tvm import open_parts

            self.sessions = open_parts(out, self.plan, threads)
        for stage in self.stages if runtime == "ort" else ():
            file = stage.get("artifact")
            if file is None:
                continue
            path = (out / file).resolve()  # inside `out`: planfile checked it
            if not path.is_file():
                raise SplitcError(f"{out}: plan.json names {file} for stage {stage['index']} ({stage['target']}), but it is missing")
            self.sessions[stage["index"]] = session(path, optimization, threads, spinning)
        self.fingerprint = plan_fingerprint(self.plan)  # payloads name the plan they were made for
        self.images = input_records(self.plan)  # image inputs: how they cross and how they are normalized
        self._frames: dict[str, np.ndarray] = {}  # the uint8 frames of the current run_image call
        self.hops: dict[int, list[dict]] = {}
        for b in self.plan["boundary"]:
            self.hops.setdefault(b.get("stage", 0), []).append(b)

    @property
    def inputs(self) -> list[dict]:
        return self.plan["model"]["inputs"]

    @classmethod
    def for_bandwidth(cls, out_dir: str | Path, up_bps: float, **kwargs) -> SplitModel:
        """The plan a bandwidth sweep chose for this uplink rate (``splitc compile --sweep-bandwidth``)."""
        plan = planfile.load(out_dir)
        sweep = plan.get("sweep")
        if not sweep:
            raise SplitcError(f"{out_dir}: compiled without --sweep-bandwidth; there is one plan")
        for interval in sweep["intervals"]:
            if interval["min_up_bps"] * (1 - 1e-12) <= up_bps <= interval["max_up_bps"] * (1 + 1e-12):
                return cls((Path(out_dir) / interval["plan"]).resolve(), **kwargs)  # inside out_dir: planfile checked it
        lo, hi = sweep["range_bps"]
        raise SplitcError(f"{up_bps / 1e6:g} Mbps is outside the swept range {lo / 1e6:g}-{hi / 1e6:g} Mbps; recompile with a wider sweep")

    def run(self, feeds: dict[str, np.ndarray]) -> RunResult:
        result = RunResult({}, link_bytes=[{"up": 0, "down": 0} for _ in self.plan["links"]])
        stores: dict[str, dict[str, np.ndarray]] = {t: {} for t in self.targets}
        stores[self.device].update(feeds)
        for stage in self.stages:
            store = stores[stage["target"]]
            sess = self.sessions.get(stage["index"])
            if sess is not None:
                t = time.perf_counter()
                names = [o.name for o in sess.get_outputs()]
                store.update(zip(names, self._run_stage(stage, sess, names, store)))
                key = f"stage{stage['index']}_{stage['target']}"
                result.seconds[key] = result.seconds.get(key, 0.0) + time.perf_counter() - t
            for hop in self.hops.get(stage["index"], []):
                self._send(hop, stores, result)
        result.bytes_up, result.bytes_down = result.link_bytes[0]["up"], result.link_bytes[0]["down"]
        missing = [o["name"] for o in self.plan["model"]["outputs"] if o["name"] not in stores[self.device]]
        if missing:
            raise SplitcError(f"{self.dir}/plan.json: model output(s) {', '.join(missing)} never reach {self.device}:"
                              " no stage computes them there and no hop brings them back")
        result.outputs = {o["name"]: stores[self.device][o["name"]] for o in self.plan["model"]["outputs"]}
        return result

    def _run_stage(self, stage: dict, sess, names: list[str], store: dict) -> list:
        where = f"stage {stage['index']} ({stage['target']}, {stage.get('artifact')})"
        missing = [i.name for i in sess.get_inputs() if i.name not in store]
        if missing:
            raise SplitcError(f"{self.dir}/plan.json: {where} needs {', '.join(missing)}, which no earlier stage or hop"
                              f" provides on {stage['target']}")
        try:
            return sess.run(names, {i.name: store[i.name] for i in sess.get_inputs()})
        except SplitcError:
            raise
        except Exception as e:  # noqa: BLE001 - onnxruntime's InvalidArgument & co: inputs the part does not take
            raise SplitcError(f"{self.dir}/plan.json: {where} rejects its inputs ({_first_line(e)})") from None

    def run_image(self, image) -> RunResult:
        """Run on a frame as a camera has it: an image file path or an HxW[xC] uint8 array (or a dict of them per input
        name), fitted to the input (centre crop, resize) and normalized as plan.json's input_codec says; a hop of the
        input sends this frame compressed. ``result.inputs`` holds the feeds it made."""
        return run_frame(self, self.images, self.inputs, image)

    def stream(self, key_interval: int = 30) -> SplitModel:
        """Send every hop with inter-frame delta coding from now on (frames are the successive ``run`` calls)."""
        self._streams = {}
        self._key_interval = key_interval
        return self

    def _send(self, hop: dict, stores, result: RunResult) -> None:
        wire = hop["wire"]
        missing = [w["name"] for w in wire if w["name"] not in stores[hop["from"]]]
        if missing:
            raise SplitcError(f"{self.dir}/plan.json: the hop of '{hop['tensor']}' sends {', '.join(missing)} from {hop['from']},"
                              " where no stage computed it")
        try:
            self._send_wire(hop, wire, stores, result)
        except ValueError as e:  # CodecError, or a packing error: the part's outputs are not what plan.json says crosses the link
            raise SplitcError(f"{self.dir}/plan.json: the hop of '{hop['tensor']}' ({hop['from']} -> {hop['to']}): {e}") from None

    def _ans_models(self, hop: dict) -> dict:
        """The hop's ans models (segment.hop_models: the remote runtime's too), built once per hop."""
        cache = self.__dict__.setdefault("_ans_cache", {})
        key = (hop["tensor"], hop.get("link", 0), hop.get("direction"))
        if key not in cache:
            cache[key] = hop_models(hop) or {}
        return cache[key]

    def _send_wire(self, hop: dict, wire: list, stores, result: RunResult) -> None:
        t = time.perf_counter()
        bits = {w["name"]: w["bits"] for w in wire if w.get("bits", 8) != 8}
        entropy = hop_entropy(hop)
        models = self._ans_models(hop) if entropy == "ans" else None
        tensors = {w["name"]: stores[hop["from"]][w["name"]] for w in wire}
        expected = {w["name"]: (w["dtype"], tuple(w["shape"]), w.get("bits", 8)) for w in wire}
        streams = getattr(self, "_streams", None)
        if hop.get("codec", "").partition(":")[0] in ("jpeg", "png", "webp"):  # an image input: the compressed frame
            from splitc.runtimes.image import decode_frame, encode_frame

            record = self.images.get(hop["tensor"])
            if record is None:
                raise SplitcError(f"{self.dir}/plan.json: the hop of '{hop['tensor']}' is coded {hop['codec']}, but input_codec"
                                  " does not describe that input")
            frame = self._frames.get(hop["tensor"]) if hop["from"] == self.device else None
            payload = encode_frame(record, frame, tensors[hop["tensor"]], self.fingerprint)
            t_enc = time.perf_counter()
            stores[hop["to"]][hop["tensor"]] = decode_frame(record, payload, self.fingerprint)
        elif streams is not None:  # stateful pair per hop: (q_t - q_{t-1}) mod 2^bits, key frames, resync on loss
            from splitc.runtimes.delta import DeltaDecoder, DeltaEncoder

            key = (hop["tensor"], hop.get("link", 0), hop.get("direction"))
            if key not in streams:
                streams[key] = (DeltaEncoder(bits, self._key_interval, self.fingerprint, entropy=entropy),
                                DeltaDecoder(expected, self.fingerprint))
            encoder, decoder = streams[key]
            payload = encoder.encode(tensors)
            t_enc = time.perf_counter()
            stores[hop["to"]].update(decoder.decode(payload))
        else:
            payload = encode(tensors, bits=bits, plan=self.fingerprint, entropy=entropy, models=models)
            t_enc = time.perf_counter()
            stores[hop["to"]].update(decode(payload, expected, plan=self.fingerprint, models=models))
        direction = hop.get("direction", "down" if hop["to"] == self.device else "up")
        result.link_bytes[hop.get("link", 0)][direction] += len(payload)
        result.seconds["encode"] = result.seconds.get("encode", 0.0) + t_enc - t
        result.seconds["decode"] = result.seconds.get("decode", 0.0) + time.perf_counter() - t_enc
        if hop.get("link", 0) == 0 and direction == "up":
            result.raw_up += hop["raw_bytes"]


@dataclass(frozen=True)
class OutputCheck:
    name: str
    max_abs: float
    max_ref: float
    cosine: float
    top1_agree: float | None  # for classifier-like outputs (last axis = classes)


def compare_outputs(reference: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> list[OutputCheck]:
    checks = []
    for name, ref in reference.items():
        out = got[name]
        if ref.shape != out.shape:
            raise SplitcError(f"output '{name}': split model gives shape {out.shape}, the original {ref.shape}")
        a = ref.astype(np.float64).ravel()
        b = out.astype(np.float64).ravel()
        max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        cosine = float(a @ b / denom) if denom > 0 else (1.0 if np.array_equal(a, b) else 0.0)
        top1 = None
        if ref.ndim >= 2 and ref.shape[-1] > 1 and np.issubdtype(ref.dtype, np.floating) and ref.ndim <= 3:
            top1 = float(np.mean(np.argmax(ref, axis=-1) == np.argmax(out, axis=-1)))
        checks.append(OutputCheck(name, max_abs, float(np.max(np.abs(a))) if a.size else 0.0, cosine, top1))
    return checks
