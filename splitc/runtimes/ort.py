"""Run compiled parts in onnxruntime: head -> encode -> (link) -> decode -> tail -> results back."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from splitc.errors import SplitcError
from splitc.runtimes.codec import decode, encode

OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session(model: str | Path | bytes, optimization: str = "all", threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = OPT_LEVELS[optimization]
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def synthetic_inputs(specs: list[dict], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the plan's shapes: standard normal floats, ones for integers (valid ids and masks)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        dtype = np.dtype(_NP.get(spec["dtype"], spec["dtype"]))
        shape = tuple(spec["shape"])
        if np.issubdtype(dtype, np.floating):
            feeds[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[spec["name"]] = np.ones(shape, dtype=dtype)
    return feeds


_NP = {"float": "float32", "double": "float64", "float16": "float16", "bool": "bool"}


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    bytes_up: int = 0  # payload bytes device -> server
    bytes_down: int = 0
    raw_up: int = 0  # the same tensors as fp32/raw before the boundary codec
    seconds: dict[str, float] = field(default_factory=dict)


class SplitModel:
    """The artifacts of ``splitc compile`` loaded in onnxruntime, run locally in one process."""

    def __init__(self, out_dir: str | Path, optimization: str = "all", threads: int = 0):
        out = Path(out_dir)
        plan_path = out / "plan.json"
        if not plan_path.is_file():
            raise SplitcError(f"{out}: no plan.json here; point at a directory written by 'splitc compile'")
        try:
            self.plan = json.loads(plan_path.read_text())
        except ValueError as e:
            raise SplitcError(f"{plan_path}: not valid JSON ({e})") from None
        self.dir = out
        self.device = self.plan["targets"][0]["name"]
        self.server = self.plan["targets"][1]["name"]
        self.sessions = {}
        for target, file in self.plan["artifacts"].items():
            if not (out / file).is_file():
                raise SplitcError(f"{out}: plan.json names {file} for {target}, but it is missing")
            self.sessions[target] = session(out / file, optimization, threads)
        self.up = [b for b in self.plan["boundary"] if b["from"] == self.device]
        self.down = [b for b in self.plan["boundary"] if b["to"] == self.device]

    @property
    def inputs(self) -> list[dict]:
        return self.plan["model"]["inputs"]

    def _expected(self, crossings) -> dict[str, tuple[str, tuple[int, ...]]]:
        return {w["name"]: (w["dtype"], tuple(w["shape"])) for b in crossings for w in b["wire"]}

    def run(self, feeds: dict[str, np.ndarray]) -> RunResult:
        result = RunResult({})
        available = dict(feeds)
        t = time.perf_counter()
        head = self.sessions.get(self.device)
        if head is not None:
            names = [o.name for o in head.get_outputs()]
            head_in = {i.name: feeds[i.name] for i in head.get_inputs()}
            available.update(zip(names, head.run(names, head_in)))
        result.seconds["head"] = time.perf_counter() - t
        if self.up:
            t = time.perf_counter()
            payload = encode({w["name"]: available[w["name"]] for b in self.up for w in b["wire"]})
            result.seconds["encode"] = time.perf_counter() - t
            result.bytes_up = len(payload)
            result.raw_up = sum(b["raw_bytes"] for b in self.up)
            t = time.perf_counter()
            received = decode(payload, self._expected(self.up))  # on the server
            result.seconds["decode"] = time.perf_counter() - t
            tail = self.sessions[self.server]
            t = time.perf_counter()
            names = [o.name for o in tail.get_outputs()]
            produced = dict(zip(names, tail.run(names, {i.name: received[i.name] for i in tail.get_inputs()})))
            result.seconds["tail"] = time.perf_counter() - t
            if self.down:
                payload = encode({w["name"]: produced[w["name"]] for b in self.down for w in b["wire"]})
                result.bytes_down = len(payload)
                available.update(decode(payload, self._expected(self.down)))
        result.outputs = {o["name"]: available[o["name"]] for o in self.plan["model"]["outputs"]}
        return result


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
