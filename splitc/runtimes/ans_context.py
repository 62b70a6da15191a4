"""Context-adaptive coding of sparse maps: a significance map coded with its neighbours as context, then magnitudes.

For a 4-D (N, C, H, W) tensor whose symbols are often the zero point (post-ReLU maps), a static per-channel table
spends about the same bits on a zero wherever it is; but zeros come in patches. Here each frame is coded as

1. its significance map (symbol != the channel's zero point), one binary decision per position with probability
   ``p[c, k]`` of being non-zero, where the context k = 2 x (left neighbour is zero) + (upper neighbour is zero)
   (outside the map counts as zero) -- the positions are coded by anti-diagonals (i + j = d), whose contexts are all
   known once the previous anti-diagonal is decoded, so a frame takes H + W - 1 vectorized coder calls;
2. the non-zero symbols of each channel in raster order, with the channel's table (``tables``, fitted on the
   non-zero symbols only).

Plan entry (``quant.ans``, beside ``tables``): ``"significance": {"zero": [z, ...], "counts": [[n0, n1] x 4, ...]}``:
per channel its zero symbol and, per context, how many zero (n0) and non-zero (n1) positions the calibration saw.
The fit keeps it only where it codes the calibration symbols in fewer bits than the plain tables
(:func:`splitc.runtimes.ans.fit_tables`).
"""

from __future__ import annotations

import numpy as np

MAX_COUNT = 1 << 40


class SigError(ValueError):
    pass


def contexts(zero: np.ndarray) -> np.ndarray:
    """(N, C, H, W) bool "is zero" -> int context 2 * left_zero + above_zero (outside = zero)."""
    z = np.pad(zero, ((0, 0), (0, 0), (1, 0), (1, 0)), constant_values=True)
    return 2 * z[:, :, 1:, :-1].astype(np.int8) + z[:, :, :-1, 1:]


def fit_counts(q: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """(C, 4, 2) counts of zero / non-zero positions per channel and context."""
    isz = q == zero.reshape(1, -1, 1, 1)
    ctx = contexts(isz)
    c = np.broadcast_to(np.arange(q.shape[1]).reshape(1, -1, 1, 1), q.shape)
    idx = (c * 4 + ctx) * 2 + (~isz)
    return np.bincount(idx.ravel(), minlength=q.shape[1] * 8).reshape(q.shape[1], 4, 2)


def nonzero_probability(counts: np.ndarray) -> np.ndarray:
    """(C, 4) probability of a non-zero symbol per channel and context (add-half smoothing)."""
    counts = np.asarray(counts, np.float64)
    return np.clip((counts[..., 1] + 0.5) / (counts.sum(axis=-1) + 1.0), 1e-6, 1 - 1e-6)


def entry(zero: np.ndarray, counts: np.ndarray) -> dict:
    return {"zero": np.asarray(zero).astype(int).tolist(), "counts": np.asarray(counts).astype(int).tolist()}


def parse(sig, rows: int, alphabet: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate a plan's ``significance`` (untrusted) -> (zero symbols (C,), counts (C, 4, 2))."""
    if not isinstance(sig, dict) or not isinstance(sig.get("zero"), list) or not isinstance(sig.get("counts"), list):
        raise SigError("ans significance must be {zero: [...], counts: [...]}")
    zero, counts = sig["zero"], sig["counts"]
    try:
        z = np.asarray(zero)
        c = np.asarray(counts)
    except (ValueError, OverflowError):
        raise SigError("ans significance holds non-numbers") from None
    if (z.shape != (rows,) or z.dtype.kind not in "iu" or (rows and (z.min() < 0 or z.max() >= alphabet))
            or c.shape != (rows, 4, 2) or c.dtype.kind not in "iu" or (rows and (c.min() < 0 or c.max() > MAX_COUNT))):
        raise SigError(f"ans significance must give {rows} zero symbols below {alphabet} and {rows} x 4 x 2 counts in 0..2^40")
    return z.astype(np.uint8), c.astype(np.int64)


def _diagonals(h: int, w: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for d in range(h + w - 1):
        i = np.arange(max(0, d - w + 1), min(h, d + 1))
        out.append((i, d - i))
    return out


def bits(q: np.ndarray, zero: np.ndarray, p: np.ndarray, magnitude_logp: np.ndarray) -> float:
    """Ideal code length of (N, C, H, W) symbols: significance under context + magnitudes (``magnitude_logp``:
    (C, alphabet) log2 probabilities of the magnitude tables)."""
    isz = q == zero.reshape(1, -1, 1, 1)
    ctx = contexts(isz)
    pc = p[np.arange(q.shape[1]).reshape(1, -1, 1, 1), ctx]
    sig = -np.where(isz, np.log2(1 - pc), np.log2(pc)).sum()
    rows = q.shape[1]
    idx = (q.astype(np.intp) + (np.arange(rows) * magnitude_logp.shape[1]).reshape(1, -1, 1, 1))[~isz]
    counts = np.bincount(idx, minlength=magnitude_logp.size)
    return float(sig + np.einsum("i,i->", counts, -magnitude_logp.ravel(), dtype=np.float64))


def encode(coder, constriction, q: np.ndarray, zero: np.ndarray, p: np.ndarray, models: list) -> None:
    """Push (N, C, H, W) symbols onto a constriction AnsCoder (a stack: pushed in reverse decoding order)."""
    n, c, h, w = q.shape
    isz = q == zero.reshape(1, -1, 1, 1)
    ctx = contexts(isz)
    bern = constriction.stream.model.Bernoulli(perfect=False)
    diags = _diagonals(h, w)
    chan = np.arange(c)[:, None]
    for o in range(n - 1, -1, -1):
        nonzero = ~isz[o].reshape(c, -1)
        vals = q[o].reshape(c, -1)[nonzero].astype(np.int32)  # grouped by channel, raster order within one
        counts = nonzero.sum(axis=1)
        ends = np.cumsum(counts)
        for r in np.flatnonzero(counts)[::-1]:
            coder.encode_reverse(vals[ends[r] - counts[r]:ends[r]], models[r])
        for i, j in reversed(diags):
            coder.encode_reverse((~isz[o][:, i, j]).astype(np.int32).ravel(), bern,
                                 p[chan, ctx[o][:, i, j]].ravel().astype(np.float64))


def decode(coder, constriction, shape: tuple[int, ...], zero: np.ndarray, p: np.ndarray, models: list) -> np.ndarray:
    n, c, h, w = shape
    out = np.empty(shape, np.uint8)
    bern = constriction.stream.model.Bernoulli(perfect=False)
    diags = _diagonals(h, w)
    chan = np.arange(c)[:, None]
    for o in range(n):
        z = np.ones((c, h + 1, w + 1), bool)  # is-zero flags, padded above and left with "zero"
        for i, j in diags:
            ctx = 2 * z[:, 1 + i, j].astype(np.int8) + z[:, i, 1 + j]
            nonzero = coder.decode(bern, p[chan, ctx].ravel().astype(np.float64))
            z[:, 1 + i, 1 + j] = np.asarray(nonzero).reshape(c, -1) == 0
        nonzero = ~z[:, 1:, 1:].reshape(c, -1)
        counts = nonzero.sum(axis=1)
        vals = np.empty(int(counts.sum()), np.uint8)
        start = 0
        for r in np.flatnonzero(counts):
            vals[start:start + counts[r]] = coder.decode(models[r], int(counts[r]))
            start += counts[r]
        frame = np.broadcast_to(zero.reshape(-1, 1), (c, h * w)).copy()
        frame[nonzero] = vals
        out[o] = frame.reshape(c, h, w)
    return out
