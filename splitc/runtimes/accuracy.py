"""The accuracy metrics of a plan's budget (``--accuracy-budget``), shared by the compiler's held-out check and
``splitc run``: per sample, top-1 agreement of the first output (argmax of its last axis), cosine similarity over
all outputs, and ``prob``: top-1 agrees and no class probability of the first output moves by more than PROB_TOL (its
softmax over the last axis, unless it already holds probabilities: the measure for scorers whose top-1 rarely
changes); their means over the samples. A plan without an explicit budget is judged by DEFAULT_BUDGET."""

from __future__ import annotations

import numpy as np

DEFAULT_BUDGET = {"cosine": 0.99}
METRICS = ("top1", "cosine", "prob")
PROB_TOL = 0.01


def probabilities(x: np.ndarray) -> np.ndarray:
    """``x`` as class probabilities over its last axis: itself when it already is (non-negative, summing to 1; a single
    value in [0, 1] is a score), else its softmax (a single value: its sigmoid)."""
    x = np.asarray(x, np.float64)
    if x.shape[-1:] == (1,):
        return x if x.size and 0 <= x.min() and x.max() <= 1 else 1 / (1 + np.exp(-x))
    if x.size and x.min() >= 0 and np.allclose(x.sum(axis=-1), 1, atol=1e-3):
        return x
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def output_metrics(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> dict[str, float]:
    """Means over samples of top-1 agreement (first output), prob (first output) and cosine (all outputs); plus the
    max abs error."""
    top1, prob, cos, worst = [], [], [], 0.0
    for ref, out in zip(reference, got):
        r0, o0 = np.asarray(ref[0]), np.asarray(out[0])
        same = True
        if r0.ndim >= 1 and r0.shape[-1] > 1:
            agree = np.argmax(r0, axis=-1) == np.argmax(o0, axis=-1)
            top1.append(float(np.mean(agree)))
            same = bool(np.all(agree))
        if r0.ndim >= 1 and r0.size and r0.shape == o0.shape:
            prob.append(float(same and np.max(np.abs(probabilities(r0) - probabilities(o0))) <= PROB_TOL))
        a = np.concatenate([np.asarray(r, np.float64).ravel() for r in ref])
        b = np.concatenate([np.asarray(o, np.float64).ravel() for o in out])
        d = np.linalg.norm(a) * np.linalg.norm(b)
        cos.append(float(a @ b / d) if d > 0 else float(np.array_equal(a, b)))
        if a.size:
            worst = max(worst, float(np.max(np.abs(a - b))))
    return {"top1": float(np.mean(top1)) if top1 else 1.0, "cosine": float(np.mean(cos)) if cos else 1.0,
            "prob": float(np.mean(prob)) if prob else 1.0, "max_abs_error": worst}


def meets(metrics: dict[str, float], budget: dict[str, float]) -> bool:
    return all(metrics.get(k, 0.0) >= v - 1e-12 for k, v in budget.items())


def plan_budget(plan: dict) -> dict[str, float]:
    """The budget plan.json was compiled for (``accuracy.budget``), or DEFAULT_BUDGET; bounded numbers in (0, 1]."""
    budget = (plan.get("accuracy") or {}).get("budget") or DEFAULT_BUDGET
    if not isinstance(budget, dict) or not all(k in METRICS and isinstance(v, (int, float)) and 0 < v <= 1
                                               for k, v in budget.items()):
        from splitc.errors import SplitcError

        raise SplitcError(f"plan.json: accuracy.budget {budget!r} is not {{top1|cosine|prob: number in (0, 1]}}")
    return {k: float(v) for k, v in budget.items()}
