"""Run a cluster plan (plan.json "cluster" section): the hub coordinates, one worker per device computes.

Per frame and stage the hub sends each part its inputs (spatial: the part's input rows, a slice on H; channel
and single: the whole tensors; data: the whole tensors to one replica, chosen by weighted round-robin on the
frame number), gathers the parts' outputs and concatenates them (spatial: on H; channel: on the merge axis).
Frames are pipelined: ``stream`` keeps at most ``max_in_flight`` frames between the input iterator and the
results, which come back in frame order whatever order they finish in.

A device that dies (connection error, a request pending ``timeout_s`` and no answer to a ping within another
``timeout_s``, a Ray actor's death) fails the frames it
held; the runner takes the precomputed plan for the devices left (the same number of each group: the plans name
slots ``<group>/<k>``, bound here to the live devices of that group in order), loads its parts, logs one line and
re-runs those frames from their start. No frame is lost; ``switches`` records each switch: the device, why,
``seconds`` from the failure's detection to the new plan's parts loaded, and ``at`` (time.perf_counter()).
The engine is splitc/runtimes/cluster_tcp.py (worker processes over TCP) or splitc/runtimes/cluster_ray.py.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import numpy as np

from splitc.errors import SplitcError
from splitc.runtimes.cluster_plan import validate
from splitc.runtimes.cluster_section import load_section
from splitc.runtimes.cluster_tcp import TcpEngine, WorkerLost

log = logging.getLogger("splitc.cluster")


def weighted_round_robin(shares: list[int]) -> list[int]:
    """One round of replica indices, ``shares[i]`` of them i, interleaved (smooth weighted round-robin)."""
    current, total, order = [0] * len(shares), sum(shares), []
    for _ in range(total):
        current = [c + s for c, s in zip(current, shares)]
        best = max(range(len(shares)), key=lambda i: current[i])
        current[best] -= total
        order.append(best)
    return order


class _State:
    """One plan bound to live devices: slot -> device, and the data-parallel rounds of its stages."""

    def __init__(self, plan: dict, binding: dict[str, str], generation: int):
        self.plan, self.binding, self.generation = plan, binding, generation
        self.rounds = [weighted_round_robin(s["shares"]) if s["strategy"] == "data" else None for s in plan["stages"]]


class ClusterRunner:
    """``ClusterRunner(out_dir, spawn=True)`` or ``workers={slot: "host:port"}`` or ``engine=RayEngine(...)``."""

    def __init__(self, out_dir: str | Path, workers: dict[str, str] | None = None, spawn: bool = False, *,
                 engine=None, threads: int = 1, timeout_s: float = 30.0):
        self.folder = Path(out_dir)
        section, self.outputs = load_section(self.folder)
        self.section = validate(section, self.folder)  # consistent: stages chain, shares cover the outputs, digests
        self.group = {d["slot"]: d["group"] for d in self.section["devices"]}
        self.engine = engine if engine is not None else TcpEngine(self.folder, workers, spawn, threads)
        self.timeout_s = timeout_s
        self.live = list(self.group)  # devices still answering, in plan.json order
        self.switches: list[dict] = []  # {"device", "why", "seconds", "devices", "at"} per plan switch
        self.reruns = 0  # frame attempts re-run after a device was lost
        self._lock = threading.Lock()
        self._tags = itertools.count()
        self.engine.start(list(self.live))
        try:
            self.state = self._bind(0)  # generation 0
        except WorkerLost as e:
            self.engine.close()
            raise SplitcError(f"cluster device {e.device} failed while its parts were loaded ({e.why})") from None
        except BaseException:
            self.engine.close()
            raise

    # ------------------------------------------------------------------ plans for the devices left

    def _choose(self) -> dict:
        have = Counter(self.group[d] for d in self.live)
        fits = [p for p in self.section["plans"] if not Counter(self.group[s] for s in p["devices"]) - have]
        if not fits:
            raise SplitcError(f"cluster: no plan runs on the devices left ({', '.join(self.live) or 'none'}); restart the lost ones")
        return max(fits, key=lambda p: (Counter(self.group[s] for s in p["devices"]) == have, len(p["devices"])))

    def _bind(self, generation: int) -> _State:
        """The plan for the live devices, its slots bound to them and its parts loaded; WorkerLost if one dies meanwhile."""
        plan = self._choose()
        binding = {}
        for g in {self.group[s] for s in plan["devices"]}:
            slots = [s for s in self.group if s in plan["devices"] and self.group[s] == g]
            live = [d for d in self.live if self.group[d] == g]
            binding.update(zip(slots, live))
        loads = {(binding[p["slot"]], p["file"], p["sha256"]) for s in plan["stages"] for p in s["parts"]}
        for device, fut in [(d, self.engine.load(d, f, h)) for d, f, h in sorted(loads)]:
            self._wait(fut, device)
        return _State(plan, binding, generation)

    def _rebind(self) -> None:
        """``state``: the plan for the live devices (under the lock); a device that fails meanwhile is dropped too."""
        while True:
            try:
                self.state = self._bind(self.state.generation + 1)
                return
            except WorkerLost as again:
                self.engine.drop(again.device, again.why)
                if again.device in self.live:
                    self.live.remove(again.device)

    def _switched(self, device: str, why: str, since: float) -> None:
        took = time.perf_counter() - since
        self.switches.append({"device": device, "why": why, "seconds": took, "devices": list(self.live), "at": time.perf_counter()})
        log.warning("cluster: device %s %s; switched to the %d-device plan [%s] in %.3f s%s", device, why,
                    len(self.state.plan["devices"]), " ".join(self.live), took, ", re-running its frames" if why != "joined" else "")

    def _lost(self, state: _State, lost: WorkerLost) -> None:
        with self._lock:
            if state is not self.state:  # another frame already switched away from this plan
                return
            self.engine.drop(lost.device, lost.why)
            if lost.device in self.live:
                self.live.remove(lost.device)
            self._rebind()
            self._switched(lost.device, f"lost ({lost.why})", lost.at)

    def join(self, device: str, address: str | None = None) -> None:
        """``device`` (a slot of the section) is back: its worker at ``address`` (or where it was; a new local
        process with spawn=True). Frames from now on run on the plan for the devices live with it."""
        if device not in self.group:
            raise SplitcError(f"cluster: {device!r} is not a device of this plan ({', '.join(self.group)})")
        if device in self.live:
            raise SplitcError(f"cluster: device {device} is already running")
        since = time.perf_counter()
        self.engine.add(device, address)
        with self._lock:
            self.live = [d for d in self.group if d in self.live or d == device]
            self._rebind()
            self._switched(device, "joined", since)

    # ------------------------------------------------------------------ one frame

    def _wait(self, fut: Future, device: str):
        """The request's result; every ``timeout_s`` without it the device is pinged aside (a busy device answers,
        a hung one does not and is dropped)."""
        while True:
            try:
                return fut.result(timeout=self.timeout_s)
            except FutureTimeout:
                if not self.engine.alive(device, self.timeout_s):
                    self.engine.drop(device, f"no answer in {self.timeout_s:g} s")
                    raise WorkerLost(device, f"no answer in {self.timeout_s:g} s") from None

    def _frame(self, tag: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        while True:
            state = self.state
            try:
                return self._run(state, tag, feeds)
            except WorkerLost as lost:
                self._lost(state, lost)
                self.reruns += 1

    def _run(self, state: _State, tag: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env = dict(feeds)
        for stage, rounds in zip(state.plan["stages"], state.rounds):
            parts = stage["parts"] if rounds is None else [stage["parts"][rounds[tag % len(rounds)]]]
            missing = [n for p in parts for n in p["inputs"] if n not in env]
            if missing:
                raise SplitcError(f"cluster plan: stage {stage['blocks']} reads '{missing[0]}', which no input or earlier stage makes")
            futs = []
            for p in parts:
                sub = {n: _rows(env[n], p.get("input_rows")) for n in p["inputs"]}
                device = state.binding[p["slot"]]
                codec = p.get("codec", "fp32")  # the boundary codec of this hub<->device edge (cluster_codec.py)
                futs.append((device, self.engine.submit(device, p["file"], sub, tag, **({"codec": codec} if codec != "fp32" else {}))))
            results = [self._wait(f, d) for d, f in futs]
            env.update(_merge(stage, parts, results))
        names = self.outputs or state.plan["stages"][-1]["outputs"]
        return {n: env[n] for n in names}

    # ------------------------------------------------------------------ public

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One frame through the current plan: the model's outputs."""
        return self._frame(next(self._tags), inputs)

    def stream(self, frames, max_in_flight: int = 4):
        """Outputs of each frame of ``frames`` (an iterable of input dicts), in order, at most ``max_in_flight`` pipelined."""
        if type(max_in_flight) is not int or not 1 <= max_in_flight <= 1024:
            raise SplitcError(f"cluster: max_in_flight {max_in_flight!r} is not an integer in [1, 1024]")
        pending: deque[Future] = deque()
        with ThreadPoolExecutor(max_in_flight, thread_name_prefix="splitc-frame") as pool:
            try:
                for feeds in frames:  # a frame is read only once there is room for it
                    pending.append(pool.submit(self._frame, next(self._tags), feeds))
                    while len(pending) >= max_in_flight:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for fut in pending:
                    fut.cancel()

    def close(self) -> None:
        self.engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _rows(tensor: np.ndarray, rows) -> np.ndarray:
    if rows is None:
        return tensor
    if tensor.ndim < 3 or rows[1] > tensor.shape[2]:
        raise SplitcError(f"cluster plan: input rows {rows} do not fit a tensor of shape {list(tensor.shape)}")
    return np.ascontiguousarray(tensor[:, :, rows[0]:rows[1]])


def _merge(stage: dict, parts: list[dict], results: list[dict]) -> dict[str, np.ndarray]:
    if len(results) == 1:
        return results[0]
    axis = stage["merge"]["axis"]
    out = {}
    for name in stage["outputs"]:
        pieces = [r[name] for r in results]
        if stage["strategy"] == "spatial":
            for p, piece in zip(parts, pieces):
                lo, hi = p["output_rows"]
                if piece.ndim < 3 or piece.shape[2] != hi - lo:
                    raise SplitcError(f"cluster device for {p['slot']}: '{name}' has shape {list(piece.shape)}, not rows {lo}..{hi}")
        try:
            out[name] = np.concatenate(pieces, axis=axis)
        except ValueError as e:
            raise SplitcError(f"cluster plan: the parts' '{name}' do not concatenate on axis {axis} ({e})") from None
    return out
