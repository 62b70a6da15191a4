"""Context-adaptive coding of sparse maps (``+ctx``): which positions are zero, coded with their neighbours as context,
then the non-zero symbols.

For a 4-D (N, C, H, W) tensor whose symbols are often the zero point (post-ReLU maps), a static per-channel table
spends about the same bits on a zero wherever it is; but zeros come in patches, and a channel is often off for a
whole frame. Each frame is coded as

1. one flag per channel: does it hold a non-zero symbol (probability ``off`` per channel);
2. for the channels that do, the significance map (symbol != the channel's zero point), one binary decision per
   position with probability ``p[c, k]`` of non-zero, where the context k = 2 x (left neighbour is zero) + (upper
   neighbour is zero) (outside the map counts as zero). Positions go by anti-diagonals (i + j = d), whose contexts are
   all known once the previous anti-diagonal is decoded; within one, decisions are grouped by their probability
   rounded to one of ``len(LEVELS)`` levels (equal steps of log-odds, <= 0.01 bit a decision lost), so each group is
   one coder call with a fixed model;
3. the non-zero symbols of each channel in raster order, with the channel's table (fitted on non-zero symbols only).

Plan entry (``quant.ans.significance``): ``{"zero": [z, ...], "counts": [[[n0, n1] x 4], ...], "off": [[n_on, n_off],
...]}``: per channel its zero symbol, per context how many zero (n0) and non-zero (n1) positions the calibration saw
in frames where the channel was on, and in how many frames it was on / off. Both ends derive the same models from it.
"""

from __future__ import annotations

import functools

import numpy as np

MAX_COUNT = 1 << 40
LEVELS = 1.0 / (1.0 + np.exp(-np.linspace(-7.0, 7.0, 29)))  # probabilities of "non-zero" / "on" the coder uses
_LOGIT = np.log(LEVELS / (1 - LEVELS))


class SigError(ValueError):
    pass


def contexts(zero: np.ndarray) -> np.ndarray:
    """(..., H, W) bool "is zero" -> int context 2 * left_zero + above_zero (outside = zero)."""
    pad = [(0, 0)] * (zero.ndim - 2) + [(1, 0), (1, 0)]
    z = np.pad(zero, pad, constant_values=True)
    return 2 * z[..., 1:, :-1].astype(np.int8) + z[..., :-1, 1:]


def _level(counts: np.ndarray) -> np.ndarray:
    """counts (..., 2) of (zero/off, non-zero/on) -> index into LEVELS of the add-half estimate of P(non-zero/on)."""
    c = np.asarray(counts, np.float64)
    p = np.clip((c[..., 1] + 0.5) / (c.sum(axis=-1) + 1.0), 1e-9, 1 - 1e-9)
    return np.abs(np.log(p / (1 - p))[..., None] - _LOGIT).argmin(axis=-1)


def fit(q: np.ndarray, zero: np.ndarray) -> dict:
    """The plan entry from calibration symbols (N, C, H, W) and the channels' zero symbols."""
    isz = q == zero.reshape(1, -1, 1, 1)
    on = ~isz.all(axis=(2, 3))  # (N, C)
    n, c = on.shape
    ctx = contexts(isz)
    chan = np.broadcast_to(np.arange(c).reshape(1, -1, 1, 1), q.shape)
    keep = np.broadcast_to(on[:, :, None, None], q.shape)
    idx = ((chan * 4 + ctx) * 2 + ~isz)[keep]
    counts = np.bincount(idx.ravel(), minlength=c * 8).reshape(c, 4, 2)
    frames_on = on.sum(axis=0)
    off = np.stack([frames_on, n - frames_on], axis=1)  # [n_on, n_off] per channel
    return {"zero": zero.astype(int).tolist(), "counts": counts.astype(int).tolist(), "off": off.astype(int).tolist()}


class SigModel:
    """A plan's ``significance`` entry (untrusted: validated) as the coder's models."""

    def __init__(self, sig, rows: int, alphabet: int):
        if not isinstance(sig, dict) or not all(isinstance(sig.get(k), list) for k in ("zero", "counts", "off")):
            raise SigError("ans significance must be {zero: [...], counts: [...], off: [...]}")
        try:
            z, c, o = (np.asarray(sig[k]) for k in ("zero", "counts", "off"))
        except (ValueError, OverflowError):
            raise SigError("ans significance holds non-numbers") from None
        ok = z.shape == (rows,) and c.shape == (rows, 4, 2) and o.shape == (rows, 2)
        ok = ok and all(a.dtype.kind in "iu" and (not a.size or (a.min() >= 0 and a.max() <= MAX_COUNT)) for a in (z, c, o))
        if not ok or (rows and z.max() >= alphabet):
            raise SigError(f"ans significance must give {rows} zero symbols below {alphabet}, {rows} x 4 x 2 and {rows} x 2"
                           " counts in 0..2^40")
        self.zero = z.astype(np.uint8)
        self.level = _level(c).astype(np.uint8)  # (C, 4); uint8: numpy's stable sort of it is a radix sort
        self.on_level = _level(o[:, ::-1]).astype(np.uint8)  # (C,): P(on) from [n_on, n_off] reversed to (off, on)
        self._models = None

    def models(self, constriction) -> list:
        if self._models is None:
            self._models = [constriction.stream.model.Bernoulli(float(p), perfect=False) for p in LEVELS]
        return self._models

    def bits(self, q: np.ndarray, magnitude_logp: np.ndarray) -> float:
        """Ideal code length of (N, C, H, W) symbols under these models and the magnitude tables' log2 probabilities."""
        isz = q == self.zero.reshape(1, -1, 1, 1)
        on = ~isz.all(axis=(2, 3))
        pon = LEVELS[self.on_level][None, :]
        total = -np.where(on, np.log2(pon), np.log2(1 - pon)).sum()
        p = LEVELS[self.level[np.arange(q.shape[1]).reshape(1, -1, 1, 1), contexts(isz)]]
        sig = np.where(isz, np.log2(1 - p), np.log2(p))
        total -= sig[np.broadcast_to(on[:, :, None, None], q.shape)].sum()
        rows, alphabet = magnitude_logp.shape
        idx = (q.astype(np.intp) + (np.arange(rows) * alphabet).reshape(1, -1, 1, 1))[~isz]
        return float(total + np.einsum("i,i->", np.bincount(idx, minlength=rows * alphabet), -magnitude_logp.ravel(),
                                       dtype=np.float64))

    def encode(self, coder, constriction, q: np.ndarray, tables: list) -> None:
        """Push (N, C, H, W) symbols onto a constriction AnsCoder (a stack: pushed in reverse decoding order)."""
        n, c, h, w = q.shape
        isz = q == self.zero.reshape(1, -1, 1, 1)
        models = self.models(constriction)
        for o in range(n - 1, -1, -1):
            on = np.flatnonzero(~isz[o].all(axis=(1, 2)))
            nonzero = ~isz[o, on].reshape(len(on), h * w)
            vals = q[o, on].reshape(len(on), h * w)[nonzero].astype(np.int32)  # by channel, raster order within one
            ends = np.cumsum(nonzero.sum(axis=1)).tolist()
            for k, r in reversed(list(enumerate(on.tolist()))):
                if ends[k] > (ends[k - 1] if k else 0):
                    coder.encode_reverse(vals[(ends[k - 1] if k else 0):ends[k]], tables[r])
            # every decision of the frame in the decoder's order: by (anti-diagonal, level) group, and within one by
            # channel and row, which is the raveled order: one stable (radix) sort of the group ids for the whole frame
            zmap = isz[o, on]
            ii, jj = np.indices((h, w))
            ngroups = (h + w - 1) * len(LEVELS)
            group = ((ii + jj)[None] * len(LEVELS) + self.level[on[:, None, None], contexts(zmap)]).astype(
                np.uint16 if ngroups <= 1 << 16 else np.uint32).ravel()
            order = np.argsort(group, kind="stable")
            bits = (~zmap).ravel()[order].astype(np.int32)
            counts = np.bincount(group, minlength=ngroups)
            present = np.flatnonzero(counts)
            stops = np.cumsum(counts[present]).tolist()
            starts = [0] + stops[:-1]
            for a, b, g in zip(reversed(starts), reversed(stops), reversed((present % len(LEVELS)).tolist())):
                coder.encode_reverse(bits[a:b], models[g])
            flags = np.zeros(c, bool)
            flags[on] = True
            for lv_, fl in reversed(self._groups(self.on_level, flags)):
                coder.encode_reverse(fl, models[lv_])

    @staticmethod
    def _groups(levels: np.ndarray, bits: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """The decisions by level (stable: in position order within one), as the decoder reads them."""
        order = np.argsort(levels, kind="stable")
        bits = bits[order].astype(np.int32)
        counts = np.bincount(levels, minlength=len(LEVELS)).tolist()
        out, start = [], 0
        for lv, k in enumerate(counts):
            if k:
                out.append((lv, bits[start:start + k]))
                start += k
        return out

    def _decode_group(self, coder, models, levels: np.ndarray) -> np.ndarray:
        counts = np.bincount(levels, minlength=len(LEVELS))
        present = np.flatnonzero(counts).tolist()
        if len(present) == 1:  # one level: the decisions in position order
            return np.asarray(coder.decode(models[present[0]], len(levels)), np.int32)
        order = np.argsort(levels, kind="stable")
        out = np.empty(len(levels), np.int32)
        start = 0
        for lv in present:
            k = int(counts[lv])
            out[order[start:start + k]] = coder.decode(models[lv], k)
            start += k
        return out

    def decode(self, coder, constriction, shape: tuple[int, ...], tables: list) -> np.ndarray:
        n, c, h, w = shape
        models = self.models(constriction)
        out = np.empty(shape, np.uint8)
        diags = _flat_diagonals(h, w)
        for o in range(n):
            on = np.flatnonzero(self._decode_group(coder, models, self.on_level))
            levels = self.level[on].ravel()  # (channels on x 4): a channel's 4 contexts' levels, side by side
            base = (4 * np.arange(len(on), dtype=np.intp))[:, None]
            z = np.ones((len(on), (h + 1) * (w + 1)), bool)  # is-zero flags, padded above and left with "zero"
            for pos, left, up in diags:
                ctx = base + 2 * z[:, left] + z[:, up]
                nonzero = self._decode_group(coder, models, levels[ctx].ravel())
                z[:, pos] = nonzero.reshape(len(on), len(pos)) == 0
            nonzero = ~z.reshape(len(on), h + 1, w + 1)[:, 1:, 1:].reshape(len(on), h * w)
            counts = nonzero.sum(axis=1).tolist()
            vals = np.empty(int(sum(counts)), np.uint8)
            start = 0
            for k, r in enumerate(on.tolist()):
                if counts[k]:
                    vals[start:start + counts[k]] = coder.decode(tables[r], counts[k])
                    start += counts[k]
            frame = np.broadcast_to(self.zero.reshape(-1, 1), (c, h * w)).copy()
            sub = frame[on]
            sub[nonzero] = vals
            frame[on] = sub
            out[o] = frame.reshape(c, h, w)
        return out


@functools.lru_cache(maxsize=64)
def _flat_diagonals(h: int, w: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """Per anti-diagonal, indices into a map padded above and left, raveled: (positions, left, upper neighbours)."""
    out = []
    for i, j in _diagonals(h, w):
        pos = (1 + i) * (w + 1) + 1 + j
        out.append((pos, pos - 1, pos - (w + 1)))
    return tuple(out)


def _diagonals(h: int, w: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for d in range(h + w - 1):
        i = np.arange(max(0, d - w + 1), min(h, d + 1))
        out.append((i, d - i))
    return out
