"""The Ray engine of the cluster runtime (``pip install splitc[ray]``): for real machines.

Each device is a Ray node offering a custom resource named for its slot (``ray start --address HUB:6379
--resources '{"splitc/pi/1": 1}'`` on the second Pi); each part is an actor pinned there by a small share of that
resource (several parts may share a device) and no CPU reservation. The hub puts each part's inputs in the object
store (``ray.put``), the actor reads them by reference and its outputs come back as an object. An actor
with a boundary codec (a part's ``codec`` "int8", splitc/runtimes/cluster_codec.py) its inputs and outputs travel
as the wire payloads the TCP engine sends instead. An actor
that dies (its node left) fails its calls with WorkerLost, and the runner switches plans as with the TCP engine.

    runner = ClusterRunner("out/", engine=RayEngine("out/", address="auto"))

Ray is imported only when the engine starts: the runtime installs and runs without it.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

from splitc.errors import SplitcError
from splitc.runtimes.cluster_codec import pack, unpack
from splitc.runtimes.cluster_tcp import WorkerLost
from splitc.runtimes.cluster_worker import expected
from splitc.runtimes.wire import CodecError

PREFIX = "splitc/"
SHARE = 0.01  # of a device's resource per part actor: up to 100 parts per device


def resource(slot: str) -> str:
    """The custom resource a device's Ray node offers: ``splitc/pi/0``."""
    return PREFIX + slot


class _Part:
    """A part loaded in onnxruntime inside its actor; a part that fails to load answers every call with the error."""

    def __init__(self, folder: str, file: str, threads: int, sha256: str | None):
        from splitc.runtimes.cluster_worker import Parts

        self.parts, self.file, self.error = Parts(folder, threads), file, None
        try:
            self.parts.load(file, sha256)
        except SplitcError as e:
            self.error = str(e)

    def ready(self) -> bool:
        if self.error:
            raise SplitcError(self.error)
        return True

    def run(self, feeds: dict) -> dict:
        if self.error:
            raise SplitcError(self.error)
        sess, _, outputs = self.parts.loaded(self.file)
        return dict(zip([o["name"] for o in outputs], sess.run([o["name"] for o in outputs], feeds)))

    def outputs(self) -> list:
        self.ready()
        return self.parts.loaded(self.file)[2]

    def run_coded(self, payload: bytes, codec: str, tag: int) -> bytes:
        """The part on a wire payload coded with ``codec``; its outputs coded likewise."""
        self.ready()
        return self.parts.run(self.file, payload, tag, codec)


class RayEngine:
    """``address``: an existing Ray cluster ("auto", "ray://host:10001"), or None to use the one this process
    initialized (or start a local one with ``init`` as ray.init's keyword arguments)."""

    def __init__(self, folder: str | Path, address: str | None = None, threads: int = 1, init: dict | None = None):
        self.folder, self.address, self.threads, self.init = str(Path(folder).resolve()), address, threads, dict(init or {})
        self.actors: dict[tuple[str, str], object] = {}
        self.outputs: dict[tuple[str, str], list] = {}  # (device, file) -> the part's output specs (coded runs)
        self.dead: dict[str, str] = {}
        self.owns = False  # whether this engine started Ray (and so shuts it down on close)

    def start(self, devices: list[str]) -> None:
        try:
            import ray
        except ImportError:
            raise SplitcError("the Ray engine needs Ray: pip install 'splitc[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=self.address, **self.init)
            self.owns = True
        offered = ray.cluster_resources()
        missing = [d for d in devices if offered.get(resource(d), 0) <= 0]
        if missing:
            raise SplitcError(f"no Ray node offers the resource {resource(missing[0])!r} of device {missing[0]}; start that"
                              f" device's node with ray start --resources '{{\"{resource(missing[0])}\": 1}}'")
        self._actor = ray.remote(_Part)

    def _future(self, device: str, ref, then=None) -> Future:
        ray, out = self.ray, Future()

        def done(f):
            e = f.exception()
            if e is None:
                try:
                    out.set_result(then(f.result()) if then else f.result())
                except CodecError as err:
                    out.set_exception(SplitcError(f"cluster device {device}: {err}"))
            elif isinstance(e, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)):
                out.set_exception(WorkerLost(device, f"its Ray actor died ({type(e).__name__})"))
            elif isinstance(e, ray.exceptions.RayTaskError) and isinstance(getattr(e, "cause", None), SplitcError):
                out.set_exception(SplitcError(f"cluster device {device}: {e.cause}"))
            else:
                out.set_exception(SplitcError(f"cluster device {device}: {type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"))

        ref.future().add_done_callback(done)
        return out

    def _lost(self, device: str) -> Future | None:
        if device in self.dead:
            fut = Future()
            fut.set_exception(WorkerLost(device, self.dead[device]))
            return fut
        return None

    def load(self, device: str, file: str, sha256: str | None = None) -> Future:
        if (lost := self._lost(device)) is not None:
            return lost
        key = (device, file)
        if key not in self.actors:
            options = {"num_cpus": 0, "resources": {resource(device): SHARE}, "max_restarts": 0}
            self.actors[key] = self._actor.options(**options).remote(self.folder, file, self.threads, sha256)
        return self._future(device, self.actors[key].ready.remote())

    def submit(self, device: str, file: str, feeds: dict, tag: int, codec: str = "fp32") -> Future:
        if (lost := self._lost(device)) is not None:
            return lost
        actor = self.actors[(device, file)]
        if codec == "fp32":
            return self._future(device, actor.run.remote(self.ray.put(feeds)))
        key = (device, file)
        if key not in self.outputs:
            try:
                self.outputs[key] = self.ray.get(actor.outputs.remote())
            except (self.ray.exceptions.RayActorError, self.ray.exceptions.ActorUnavailableError) as e:
                lost = Future()
                lost.set_exception(WorkerLost(device, f"its Ray actor died ({type(e).__name__})"))
                return lost
        try:
            body = pack(feeds, codec, tag)
        except CodecError as e:
            raise SplitcError(f"cluster device {device}: {e}") from None
        return self._future(device, actor.run_coded.remote(body, codec, tag),
                            lambda got: unpack(got, expected(self.outputs[key], got), codec))

    def add(self, device: str, address: str | None = None) -> None:
        """``device``'s node is back (it offers the device's resource again); its parts get new actors."""
        if self.ray.cluster_resources().get(resource(device), 0) <= 0:
            raise SplitcError(f"no Ray node offers the resource {resource(device)!r} of device {device}; start its node first")
        self.dead.pop(device, None)

    def alive(self, device: str, timeout_s: float) -> bool:
        """An actor runs one call at a time, so a ping would wait behind the late call: a call late by
        ``timeout_s`` counts as a hung device (Ray itself reports a node that left as the actors' death)."""
        return False

    def actors_of(self, device: str) -> list:
        return [a for (d, _), a in self.actors.items() if d == device]

    def drop(self, device: str, why: str) -> None:
        self.dead.setdefault(device, why)
        for key in [k for k in self.actors if k[0] == device]:
            self.ray.kill(self.actors.pop(key))
            self.outputs.pop(key, None)

    def close(self) -> None:
        for actor in self.actors.values():
            self.ray.kill(actor)
        self.actors.clear()
        if self.owns:
            self.ray.shutdown()
