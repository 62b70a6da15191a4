"""Entropy coding of quantized symbols with static per-channel probability models (rANS, ``constriction``).

A calibrated codec with ``+ans`` (``int8-channel-step0.5+ans``) fits, per channel (axis 1), a histogram of its
uint8 symbols on the calibration data; the tables are part of the plan (``boundary[].quant.ans``), so both ends
build the same models and a payload carries only the coded words. The coder is ``constriction``'s ANS stack
coder (an optional extra: ``pip install 'splitc[ans]'``); without it the sender falls back to zstd and says so in
the payload (``codec: "zstd"``), and a receiver without it rejects an ``ans`` payload with a one-line error.

Table format (``quant.ans``): ``{"alphabet": 2^bits, "axis": 1 | null, "tables": [[first, [count, ...]], ...]}``,
one table per channel (or one for the whole tensor): counts of the symbols ``first, first + 1, ...``; every other
symbol of the alphabet gets a small floor probability, so any symbol can be coded. A 4-D tensor's entry may add
``significance`` (:mod:`splitc.runtimes.ans_context`): its zero symbols are then coded as a map with their neighbours
as context, and ``tables`` hold the non-zero symbols only.
"""

from __future__ import annotations

import numpy as np

from splitc.runtimes import ans_context as _sig

try:  # optional: pip install constriction
    import constriction as _constriction
except ImportError:  # pragma: no cover - depends on the install
    _constriction = None

MAX_TABLES = 1 << 16
MAX_COUNT = 1 << 40
FLOOR = 2.0 ** -20  # probability mass per unseen symbol, relative to the table's total


class AnsError(ValueError):
    """A table or payload that does not make a valid model or symbol stream."""


def available() -> bool:
    return _constriction is not None


def fit_tables(q: np.ndarray, alphabet: int, per_channel: bool, zero: np.ndarray | None = None) -> dict:
    """Tables (the plan entry) from calibration symbols ``q`` (samples stacked on axis 0, channels on axis 1).
    ``zero``: the channels' zero symbols, for whole (N, C, H, W) maps: the significance context is added when it
    codes ``q`` in at least 2% fewer bits than the plain tables."""
    q = np.asarray(q, np.uint8)
    channels = per_channel and q.ndim >= 2
    hist = _row_counts(q.reshape(*q.shape[:2], int(np.prod(q.shape[2:]))) if channels else q.reshape(1, 1, q.size), alphabet)
    plain = _entry(hist, alphabet, channels)
    if zero is None or not channels or q.ndim != 4 or min(q.shape[2:]) < 2:
        return plain
    zero = np.asarray(zero, np.uint8).reshape(-1)
    mag = hist.copy()
    mag[np.arange(len(mag)), zero] = 0
    ctx = _entry(mag, alphabet, True)
    ctx["significance"] = _sig.fit(q, zero)
    if AnsModel(ctx).bits(q) > 0.98 * AnsModel(plain).bits(q):
        return plain
    return ctx


def _entry(hist: np.ndarray, alphabet: int, channels: bool) -> "FittedTables":
    # half a count more within 2 of every symbol seen: held-out neighbours stay cheap (stored doubled)
    seen = np.pad(hist > 0, ((0, 0), (2, 2)))
    near = np.logical_or.reduce([seen[:, i:i + alphabet] for i in range(5)])
    counts = 2 * hist + near
    nz = counts > 0  # each table: from the first to the last symbol with a count ([0, [0]] for none)
    lo = np.where(nz.any(axis=1), nz.argmax(axis=1), 0).tolist()
    hi = np.where(nz.any(axis=1), alphabet - nz[:, ::-1].argmax(axis=1), 1).tolist()
    tables = [[a, c[a:b].tolist()] for c, a, b in zip(counts, lo, hi)]
    entry = FittedTables(alphabet=int(alphabet), axis=1 if channels else None, tables=tables)
    entry.counts = counts.astype(np.float64).astype(np.float32)  # what AnsModel would read back from the lists
    return entry


class FittedTables(dict):
    """``fit_tables``' plan entry (a plain dict to JSON), carrying its tables as the (tables, alphabet) float32 array
    AnsModel keeps, so the calibration that made it builds models without reading thousands of lists back (and
    validating what it wrote itself). ``counts = None`` drops the array; AnsModel then reads the lists."""

    counts: np.ndarray | None = None


def _row_counts(q: np.ndarray, alphabet: int) -> np.ndarray:
    """(rows, alphabet) counts of the symbols of ``q`` (outer, rows, inner) per row, symbols >= alphabet left out;
    one bincount over row-offset symbols (16-bit indices where they fit) instead of one per row."""
    rows = q.shape[1]
    wide = np.uint16 if rows * alphabet <= 1 << 16 else np.intp
    idx = q.astype(wide)
    idx += (np.arange(rows, dtype=wide) * alphabet)[None, :, None]
    idx = idx.ravel() if alphabet >= 256 and q.dtype == np.uint8 else idx[(q < alphabet)]
    return np.bincount(idx, minlength=rows * alphabet).reshape(rows, alphabet)


class AnsModel:
    """The coder's models for one tensor, built once from its plan entry (which it validates: plans are untrusted)."""

    def __init__(self, entry: dict):
        self._models = None
        self._sig = None  # significance context (splitc.runtimes.ans_context), if the entry has one
        if isinstance(entry, FittedTables) and entry.counts is not None:  # made in this process by fit_tables
            self.alphabet, self.axis, self._full = entry["alphabet"], entry["axis"], entry.counts
            self.rows = len(entry.counts)
            self._significance(entry.get("significance"))
            return
        if not isinstance(entry, dict):
            raise AnsError("ans tables must be an object")
        alphabet, axis, tables = entry.get("alphabet"), entry.get("axis"), entry.get("tables")
        if type(alphabet) is not int or alphabet not in (2, 4, 16, 256):
            raise AnsError(f"ans alphabet {alphabet!r} is not 2, 4, 16 or 256")
        if axis not in (None, 1) or not isinstance(tables, list) or not 1 <= len(tables) <= MAX_TABLES or (axis is None and len(tables) != 1):
            raise AnsError("ans tables: axis must be 1 or null and tables a list of 1..65536 (one when axis is null)")
        self.alphabet, self.axis = alphabet, axis
        full = np.zeros((len(tables), alphabet), np.float64)
        for r, t in enumerate(tables):
            if not (isinstance(t, list) and len(t) == 2 and type(t[0]) is int and isinstance(t[1], list)):
                raise AnsError("an ans table must be [first symbol, [counts]]")
            first, counts = t
            try:  # whole numbers only: floats, booleans, strings, nested lists give another dtype or fail
                arr = np.asarray(counts) if counts else None
            except (ValueError, OverflowError):
                arr = None
            if arr is None or arr.dtype.kind not in "iu" or arr.ndim != 1 or not (
                    0 <= first and first + arr.size <= alphabet and arr.min() >= 0 and arr.max() <= MAX_COUNT):
                raise AnsError(f"ans table [{first}, {len(counts)} counts] does not fit an alphabet of {alphabet} with counts in 0..2^40")
            full[r, first:first + arr.size] = arr
        self._full = full.astype(np.float32)  # counts up to 2^40: float32 keeps them to 1e-7 relative, enough for sizes
        self.rows = len(tables)
        self._models = None
        self._significance(entry.get("significance"))

    def _significance(self, sig) -> None:
        if sig is None:
            return
        if self.axis != 1:
            raise AnsError("ans significance needs per-channel tables (axis 1)")
        try:
            self._sig = _sig.SigModel(sig, self.rows, self.alphabet)
        except _sig.SigError as err:
            raise AnsError(str(err)) from None

    def _check_map(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 4 or shape[1] != self.rows:
            raise AnsError(f"ans significance tables are for (N, {self.rows}, H, W) maps, the tensor has shape {list(shape)}")

    def probabilities(self, dtype=np.float64) -> np.ndarray:
        """(tables, alphabet): the counts plus the floor, normalized (recomputed: a plan holds thousands of tables)."""
        full = self._full.astype(dtype)
        p = full + dtype(FLOOR) * np.maximum(full.sum(axis=1, keepdims=True), 1.0)
        return p / p.sum(axis=1, keepdims=True)

    @property
    def models(self):
        if self._models is None:
            if _constriction is None:
                raise AnsError("the ans coder needs the constriction package: pip install 'splitc[ans]'")
            cat = _constriction.stream.model.Categorical
            self._models = [cat(p, perfect=False) for p in self.probabilities()]
        return self._models

    def _rows(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(outer, tables, inner): the symbol array as outer x tables x inner blocks, one table per block."""
        n = int(np.prod(shape))
        if self.axis is None:
            return 1, 1, n
        if len(shape) < 2 or shape[1] != self.rows:
            raise AnsError(f"ans tables are per channel ({self.rows}), the tensor has shape {list(shape)}")
        inner = int(np.prod(shape[2:]))
        return shape[0], shape[1], inner

    def encode(self, q: np.ndarray) -> bytes:
        """uint8 symbols (< alphabet) -> coded bytes (little-endian 32-bit words)."""
        q = np.asarray(q)
        outer, rows, inner = self._rows(q.shape)
        if q.size and int(q.max()) >= self.alphabet:
            raise AnsError(f"symbol {int(q.max())} is outside the alphabet of {self.alphabet}")
        models = self.models
        coder = _constriction.stream.stack.AnsCoder()
        if self._sig is not None:
            self._check_map(q.shape)
            self._sig.encode(coder, _constriction, q, models)
            return coder.get_compressed().astype("<u4").tobytes()
        blocks = q.reshape(outer, rows, inner).astype(np.int32)
        for o in range(outer - 1, -1, -1):  # a stack: the last block coded is the first decoded
            for r in range(rows - 1, -1, -1):
                coder.encode_reverse(blocks[o, r], models[r])
        return coder.get_compressed().astype("<u4").tobytes()

    def decode(self, blob: bytes, shape: tuple[int, ...]) -> np.ndarray:
        """Coded bytes -> uint8 symbols of ``shape``; the count is the shape's, whatever the bytes say."""
        if len(blob) % 4:
            raise AnsError(f"{len(blob)} bytes is not a whole number of 32-bit words")
        outer, rows, inner = self._rows(shape)
        models = self.models
        words = np.frombuffer(blob, "<u4").astype(np.uint32)
        if self._sig is not None:
            self._check_map(tuple(shape))
        try:
            coder = _constriction.stream.stack.AnsCoder(words)
            if self._sig is not None:
                return self._sig.decode(coder, _constriction, tuple(shape), models)
            out = np.empty((outer, rows, inner), np.uint8)
            for o in range(outer):
                for r in range(rows):
                    out[o, r] = coder.decode(models[r], inner)
        except Exception as err:  # noqa: BLE001 - constriction raises plain exceptions on malformed streams
            raise AnsError(f"ans data is corrupt ({err})") from None
        return out.reshape(shape)

    def bits(self, q: np.ndarray) -> float:
        """Ideal code length of ``q`` under these models (the cross-entropy), in bits."""
        outer, rows, inner = self._rows(np.shape(q))
        if self._sig is not None:
            self._check_map(np.shape(q))
            return self._sig.bits(np.minimum(np.asarray(q), self.alphabet - 1), np.log2(self.probabilities(np.float32)))
        q = np.asarray(q).reshape(outer, rows, inner)
        if q.dtype == np.uint8 and self.alphabet == 256:  # every symbol is in the alphabet: the fast count
            counts = _row_counts(q, 256).ravel()
        else:
            idx = q.astype(np.intp) + (np.arange(rows) * self.alphabet)[None, :, None]
            counts = np.bincount(np.minimum(idx, rows * self.alphabet - 1).ravel(), minlength=rows * self.alphabet)
        # einsum, not counts @ logp: an int64 x float32 matmul goes through BLAS in cast chunks, whose thread start-up
        # made this product 3 ms for 64 tables (0.01 ms here), and 10x that on a loaded machine
        return float(np.einsum("i,i->", counts, -np.log2(self.probabilities(np.float32)).ravel(), dtype=np.float64))

    def coded_bytes(self, q: np.ndarray) -> int:
        """What ``encode(q)`` writes, from the cross-entropy (the coder is within 0.1% of it, tests/test_ans.py):
        whole 32-bit words plus one word of final state."""
        return 4 * (int(np.ceil(self.bits(q) / 32)) + 1)
