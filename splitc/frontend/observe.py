"""Run a model once in onnxruntime to read tensor shapes off real tensors, in a child process bounded in time and memory.

A model from a stranger may loop 10^12 times or allocate without end, so the run happens in
``python -m splitc.frontend.observe FOLDER``: the parent writes the model and the input specs to a private
folder, the child caps its own address space (RLIMIT_AS) before importing onnxruntime, makes the synthetic
inputs, runs and writes ``result.json``; the parent kills it after ``timeout_s``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TIMEOUT_S = 60.0  # default wall-clock limit of the run
MEMORY_BYTES = 4 << 30  # default address-space limit of the child, on top of twice the model's size


def observe(model_bytes: bytes, inputs: list[dict], model_name: str, timeout_s: float | None = None,
            memory_bytes: int | None = None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Run the model on synthetic inputs (``inputs``: name, dtype, shape) and return every output's (shape, dtype).

    Raises ``ObserveError`` with one line naming the model and the limit it ran into, or onnxruntime's reason."""
    timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
    limit = (MEMORY_BYTES if memory_bytes is None else memory_bytes) + 2 * len(model_bytes)
    with tempfile.TemporaryDirectory(prefix="splitc-observe-") as tmp:
        folder = Path(tmp)
        (folder / "model.onnx").write_bytes(model_bytes)
        (folder / "inputs.json").write_text(json.dumps(inputs))
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the splitc package
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            proc = subprocess.run([sys.executable, "-m", "splitc.frontend.observe", tmp, str(limit)], env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ObserveError(f"{model_name}: running the model to observe tensor shapes took longer than {timeout_s:g} s"
                               " (a loop without end?); the run was stopped") from None
        result = folder / "result.json"
        data = json.loads(result.read_text()) if result.is_file() else {}
    if "shapes" in data:
        return {name: (tuple(shape), np.dtype(dtype)) for name, (shape, dtype) in data["shapes"].items()}
    if data.get("error") == "memory" or (not data and proc.returncode != 0 and b"alloc" in proc.stderr):
        raise ObserveError(f"{model_name}: running the model to observe tensor shapes needed more than the memory limit of"
                           f" {limit / 2**30:.1f} GiB; the run was stopped")
    reason = data.get("error") or (proc.stderr.decode(errors="replace").strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    raise ObserveError(f"{model_name}: {reason[:200]}", run_failed=True)


class ObserveError(Exception):
    def __init__(self, message: str, run_failed: bool = False):
        super().__init__(message)
        self.run_failed = run_failed  # onnxruntime refused or failed (not a limit)


def _child(folder: Path, limit: int) -> dict:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        import onnxruntime as ort

        from splitc.runtimes.ort import synthetic_inputs

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        results = session.run(names, synthetic_inputs(json.loads((folder / "inputs.json").read_text())))
    except MemoryError:
        return {"error": "memory"}
    except Exception as e:  # noqa: BLE001  (onnxruntime raises many types)
        text = str(e).strip()
        if "bad_alloc" in text or "Failed to allocate" in text:
            return {"error": "memory"}
        return {"error": text.splitlines()[0] if text else type(e).__name__}
    return {"shapes": {n: [list(r.shape), r.dtype.str] for n, r in zip(names, results) if isinstance(r, np.ndarray)}}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    (out / "result.json").write_text(json.dumps(_child(out, int(sys.argv[2]))))
