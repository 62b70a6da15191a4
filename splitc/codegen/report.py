"""The compile report: ``report.html`` and two PNGs beside ``plan.json``; viewable offline (no network, no scripts).

``report_layers.png`` is the picture of the Neurosurgeon and JointDNN papers: per node in topological order,
its latency on each target and its output size, the chosen placement beside the baselines' (min-cut,
best single cut) and, with the cost graph at hand, the predicted latency of cutting after each node, with the
chosen plan, device-only, cloud-only and the best single cut marked. ``report_graph.png`` draws the
partitioned graph in layers, each node coloured by where it runs and each tensor that crosses a link in red.

Everything is read from plan.json; the optional :class:`~splitc.partition.passes.partition.PartitionResult` adds the
baselines' placements and the single-cut curve. matplotlib (Agg) draws the PNGs.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitc.ui import fmt_bytes as _fmt_bytes
from splitc.ui import fmt_s as _fmt_s

HTML = "report.html"
LAYERS_PNG = "report_layers.png"
GRAPH_PNG = "report_graph.png"
FILES = (HTML, LAYERS_PNG, GRAPH_PNG)

TIER_COLOURS = ("#2b83ba", "#f39c12", "#1a9850", "#8e44ad")  # device, then each tier toward the cloud
CROSS = "#d7191c"
BASELINE_NAMES = {"device_only": "device only", "cloud_only": "cloud only",
                  "best_single_cut": "best single cut (Neurosurgeon)", "dads": "min-cut (DADS)"}
STRIP_NAMES = {"dads": "min-cut", "best_single_cut": "single cut"}


def write_report(directory: str | Path, plan: dict, partition=None) -> list[Path]:
    """Write report.html, report_layers.png and report_graph.png into ``directory``; returns their paths."""
    directory = Path(directory)
    view = _View(plan, partition)
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):  # names are text: '$x$' in a model or profile name is no TeX
        layers_png(directory / LAYERS_PNG, view)
        graph_png(directory / GRAPH_PNG, view)
    (directory / HTML).write_text(report_html(view))
    return [directory / f for f in FILES]


class _View:
    """What the pictures and the page need, read once from plan.json (and the partition, when given)."""

    def __init__(self, plan: dict, partition=None):
        self.plan = plan
        self.targets = [t["name"] for t in plan["targets"]]
        self.colour = {t: TIER_COLOURS[i % len(TIER_COLOURS)] for i, t in enumerate(self.targets)}
        self.nodes = [n for n in plan["nodes"] if n.get("target") in self.colour]  # placed nodes, topological order
        self.replicated = len(plan["nodes"]) - len(self.nodes)
        self.pos = {n["name"]: i for i, n in enumerate(self.nodes)}
        self.out_bytes = np.zeros(len(self.nodes))
        for t in plan["tensors"]:
            if t["producer"] in self.pos:
                self.out_bytes[self.pos[t["producer"]]] += t["bytes"]
        self.input_bytes = sum(t["bytes"] for t in plan["tensors"] if t["producer"] is None)
        producer = {t["name"]: t["producer"] for t in plan["tensors"]}
        # the tensors sent toward the cloud, each at x = just after its producer (-0.5: a graph input)
        self.sent = [(self.pos[producer[b["tensor"]]] + 0.5 if producer.get(b["tensor"]) in self.pos else -0.5, b)
                     for b in plan["boundary"] if not b.get("is_output")]
        self.cuts = sorted({x for x, _ in self.sent})
        self.tier_index = {t: i for i, t in enumerate(self.targets)}
        self.placements = {"chosen": np.array([self.tier_index[n["target"]] for n in self.nodes])}
        self.curve = None
        # the partition (when it is this plan's) adds the baselines' placements and the single-cut curve
        if partition is not None and [n.name for n in partition.cost_graph.nodes] == [n["name"] for n in self.nodes]:
            for key in ("dads", "best_single_cut"):
                if key in partition.baselines:
                    self.placements[STRIP_NAMES[key]] = np.array(partition.baselines[key].placement)
            self.curve = single_cut_curve(partition.cost_graph)

    @property
    def total(self) -> float:
        return self.plan["predicted"]["total_s"]

    def kind(self) -> str:
        """device: nothing sent; cloud: every node off the device; split: the rest."""
        on_device = int((self.placements["chosen"] == 0).sum())
        if not any(not b.get("is_output") for b in self.plan["boundary"]):
            return "device"
        return "cloud" if on_device == 0 else "split"


# -- the per-node picture -------------------------------------------------------------------------


def single_cut_curve(cg) -> tuple[np.ndarray, np.ndarray]:
    """(x, predicted seconds) of cutting after each prefix of the topological order: the first k nodes on the
    device, the rest on the last tier (k = 0: cloud only, k = n: device only). Infeasible cuts are NaN."""
    from splitc.partition.costgraph import evaluate_cuts

    k = np.arange(len(cg.nodes) + 1)
    res = evaluate_cuts(cg)
    total = np.where(res["feasible"], res["total"], np.nan)
    return k - 0.5, total


def _figure(width_in: float, height_in: float):
    """A figure on the Agg canvas, without pyplot (no GUI backend, no global state, faster to import)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    return fig


def _steps(edges: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The outline of a bar per node as one polyline (cheaper for matplotlib than stairs() or bar())."""
    return np.repeat(edges, 2)[1:-1], np.repeat(values, 2)


def layers_png(path: Path, view: _View) -> None:
    from matplotlib.colors import ListedColormap
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    plan, n = view.plan, len(view.nodes)
    curve = view.curve
    heights = [3, 2, 0.35 * len(view.placements) + 0.25] + ([2.6] if curve is not None else [])
    fig = _figure(14, 2.1 + sum(heights) * 0.95)
    # not sharex: shared axes share one tick locator, and ticks are most of the drawing time; only the bottom has x ticks
    axes = fig.subplots(len(heights), 1, gridspec_kw={"height_ratios": heights, "hspace": 0.12})
    ax_lat, ax_bytes, ax_place = axes[:3]
    edges = np.arange(n + 1) - 0.5

    lat = {t: np.array([nd["latency_s"].get(t, 0.0) for nd in view.nodes]) for t in view.targets}
    positive = np.concatenate([v[v > 0] for v in lat.values()] + [np.array([1e-6])])
    floor = positive.min() / 2
    for i, t in enumerate(view.targets):  # the device filled, the other tiers outlined on top
        xs, ys = _steps(edges, np.maximum(lat[t], floor))
        label = f"on {t}: {_fmt_s(lat[t].sum())} for all nodes"
        if i == 0:
            ax_lat.fill_between(xs, floor, ys, color=view.colour[t], alpha=0.55, lw=0, label=label)
        else:
            ax_lat.plot(xs, ys, color=view.colour[t], lw=1.3, label=label)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency per node")
    ax_lat.legend(**_LEGEND)

    sizes = [b for b in view.out_bytes if b > 0] + [b["encoded_bytes"] for b in plan["boundary"]] + [view.input_bytes]
    low = max(1.0, min(b for b in sizes if b > 0) / 3) if any(b > 0 for b in sizes) else 1.0
    xs, ys = _steps(edges, np.maximum(view.out_bytes, low))
    ax_bytes.fill_between(xs, low, ys, color="#7f7f7f", alpha=0.6, lw=0, label="output size per node (raw)")
    if view.input_bytes:
        ax_bytes.axhline(view.input_bytes, color="#444444", ls="--", lw=1,
                         label=f"model input {_fmt_bytes(view.input_bytes)} (what cloud-only sends)")
    ax_bytes.set_yscale("log")
    ax_bytes.set_ylabel("output size")

    cmap = ListedColormap([view.colour[t] for t in view.targets])
    rows = list(view.placements.items())
    strip = np.array([p for _, p in rows], dtype=float)
    ax_place.imshow(strip, aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(view.targets) - 0.5, interpolation="nearest",
                    extent=(-0.5, n - 0.5, len(rows) - 0.5, -0.5))
    ax_place.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    ax_place.tick_params(axis="y", length=0)

    for ax in axes:
        for i, x in enumerate(view.cuts):
            ax.axvline(x, color=CROSS, lw=1.2, alpha=0.9, label="chosen cut (tensor sent up)" if i == 0 and ax is ax_bytes else None)
    if view.sent:  # markers via plot(): scatter's autoscaling costs more than the whole panel
        ax_bytes.plot([x for x, _ in view.sent], [b["encoded_bytes"] for _, b in view.sent], ls="", marker="o", ms=4.5,
                      color=CROSS, zorder=5, label="bytes on the wire (encoded)")
    ax_bytes.legend(**_LEGEND)

    if curve is not None:
        ax_cut = axes[3]
        xs, ys = curve
        finite = np.isfinite(ys)  # a cut inside a fused kernel is infeasible: the line joins the feasible cuts
        ax_cut.plot(xs[finite], ys[finite], color="#555555", lw=1.2, marker="." if n <= 80 else None, ms=4,
                    label=f"if cut after this node\n({view.targets[0]} before, {view.targets[-1]} after)")
        base = plan["baselines"]
        ax_cut.plot([xs[-1]], [ys[-1]], ls="", marker="s", ms=7, color=view.colour[view.targets[0]], zorder=5,
                       label=f"device only {_fmt_s(base['device_only']['total_s'])}")
        ax_cut.plot([xs[0]], [ys[0]], ls="", marker="s", ms=7, color=view.colour[view.targets[-1]], zorder=5,
                       label=f"cloud only {_fmt_s(base['cloud_only']['total_s'])}")
        if finite.any():
            k = int(np.nanargmin(ys))
            ax_cut.plot([xs[k]], [ys[k]], ls="", marker="*", ms=13, color="#6a3d9a", zorder=6,
                           label=f"best single cut {_fmt_s(ys[k])}")
        ax_cut.axhline(view.total, color=CROSS, lw=1.5, label=f"chosen plan {_fmt_s(view.total)}")
        if "dads" in base:
            ax_cut.axhline(base["dads"]["total_s"], color="#222222", lw=1, ls=":", label=f"min-cut (DADS) {_fmt_s(base['dads']['total_s'])}")
        lo, hi = np.nanmin(ys[finite]) if finite.any() else view.total, np.nanmax(ys[finite]) if finite.any() else view.total
        if hi / max(lo, 1e-12) > 20:
            ax_cut.set_yscale("log")
        ax_cut.set_ylabel("end to end")
        ax_cut.legend(**_LEGEND)

    bottom = axes[-1]
    for ax in axes:
        ax.set_xlim(-0.5 - max(1, n * 0.01), n - 0.5 + max(1, n * 0.01))
        if ax is not bottom:
            ax.xaxis.set_major_locator(NullLocator())
    if n <= 40:
        bottom.set_xticks(range(n), [_short(nd["op_type"]) for nd in view.nodes], rotation=90, fontsize=7)
    bottom.set_xlabel(f"node, in topological order ({n} placed" + (f"; {view.replicated} replicated constants and shape"
                                                                    f" arithmetic not shown)" if view.replicated else ")"))
    fig.suptitle(_headline(view), fontsize=11, x=0.01, ha="left")
    fig.subplots_adjust(left=0.08, right=0.76, top=0.94, bottom=0.11 if n <= 40 else 0.07)
    # plain tick labels (1 ms, 10 KB): the default log labels go through mathtext, slower to draw
    ax_lat.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _fmt_s(v)))
    ax_bytes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _fmt_bytes(v)))
    if curve is not None:
        axes[3].yaxis.set_major_formatter(FuncFormatter(lambda v, _: _fmt_s(v)))
    for ax in axes:
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_minor_locator(NullLocator())
        if ax.get_yscale() == "log":
            ax.yaxis.set_major_locator(LogLocator(numticks=5))
    fig.savefig(path, dpi=90, pil_kwargs={"compress_level": 1})


_LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8, "frameon": False, "borderaxespad": 0}


def _headline(view: _View) -> str:
    plan = view.plan
    links = ", ".join(l["name"] for l in plan["links"])
    head = f"{plan['model']['file']}: {' -> '.join(view.targets)} over {links}: predicted {_fmt_s(view.total)}"
    device_only = plan["baselines"].get("device_only", {}).get("total_s")
    if device_only:
        head += f", {device_only / view.total:.2f}x vs device only"
    kind = view.kind()
    return head + {"device": " (nothing cut)", "cloud": " (everything offloaded)",
                   "split": f" ({len(plan.get('cut', []))} tensor(s) cut)"}[kind]


# -- the partitioned graph ------------------------------------------------------------------------

_SHORT = {"BatchNormalization": "BN", "GlobalAveragePool": "GAP", "LayerNormalization": "LN", "AveragePool": "AvgPool",
          "DynamicQuantizeLinear": "DQL", "ReduceMean": "RMean", "Transpose": "Transp"}


def _short(op_type: str) -> str:
    return _SHORT.get(op_type, op_type if len(op_type) <= 8 else op_type[:7] + ".")


@dataclass
class GraphLayout:
    names: list[str]
    tier: np.ndarray  # tier index per drawn vertex
    kind: np.ndarray  # "node", "input" or "output"
    xy: np.ndarray
    edges: list[tuple[int, int, bool]]  # (from, to, crosses a link)
    row: np.ndarray  # the row each vertex is drawn in
    rows: int
    per_row: int  # layers per row


LAYERS_PER_ROW = 110  # about 12 px per layer on the 16-inch figure


def graph_layout(view: _View) -> GraphLayout:
    """Layered layout: x = longest path from an input, rows of at most LAYERS_PER_ROW layers (deep graphs wrap),
    nodes of a layer ordered by the mean height of their predecessors (one barycentre sweep)."""
    plan = view.plan
    names, tier, kind = [], [], []
    index: dict[str, int] = {}

    def add(name: str, t: int, k: str) -> int:
        index[name] = len(names)
        names.append(name)
        tier.append(t)
        kind.append(k)
        return index[name]

    edges: list[tuple[int, int, bool]] = []
    for t in plan["tensors"]:
        if t["producer"] is None and any(c in view.pos for c in t["consumers"]):
            add("in:" + t["name"], 0, "input")
    for nd in view.nodes:
        add(nd["name"], view.tier_index[nd["target"]], "node")
    for t in plan["tensors"]:
        src = index.get(t["producer"]) if t["producer"] is not None else index.get("in:" + t["name"])
        if src is None:
            continue
        for c in t["consumers"]:
            if c in index:
                edges.append((src, index[c], tier[src] != tier[index[c]]))
        if t["is_output"]:
            dst = add("out:" + t["name"], 0, "output")
            edges.append((src, dst, tier[src] != 0))
    n = len(names)
    preds: list[list[int]] = [[] for _ in range(n)]
    for u, v, _ in edges:
        preds[v].append(u)
    depth = [0] * n
    for v in range(n):  # inputs, then nodes in topological order, then outputs: predecessors come first
        depth[v] = 1 + max((depth[u] for u in preds[v]), default=-1)
    n_layers = max(depth, default=0) + 1
    rows = max(1, math.ceil(n_layers / LAYERS_PER_ROW))
    per_row = math.ceil(n_layers / rows)
    layers: dict[int, list[int]] = defaultdict(list)
    for v in range(n):
        layers[depth[v]].append(v)
    y_in_layer = np.zeros(n)
    for d in range(n_layers):
        members = layers[d]
        members.sort(key=lambda v: (np.mean([y_in_layer[u] for u in preds[v]]) if preds[v] else 0.0, v))
        for i, v in enumerate(members):
            y_in_layer[v] = i - (len(members) - 1) / 2
    xy = np.zeros((n, 2))
    row = np.zeros(n, dtype=int)
    offset = 0.0
    for r in range(rows):
        span = range(r * per_row, min(n_layers, (r + 1) * per_row))
        half = max((len(layers[d]) for d in span), default=1) / 2 + 0.9
        offset -= half
        for d in span:
            for v in layers[d]:
                xy[v] = (d - r * per_row, offset + y_in_layer[v])
                row[v] = r
        offset -= half
    return GraphLayout(names, np.array(tier), np.array(kind), xy, edges, row, rows, per_row)


def _edge_path(g: GraphLayout, u: int, v: int) -> np.ndarray:
    """A straight segment to the next layer; an arc over the layers between for a longer edge in one row (else it
    would hide under the chain); a straight line from one row to the next for a wrapped edge."""
    a, b = g.xy[u], g.xy[v]
    span = b[0] - a[0]
    if g.row[u] != g.row[v] or span <= 1:
        return np.array([a, b])
    t = np.linspace(0.0, 1.0, 9)[:, None]
    bow = 0.3 + 0.06 * min(span, 10)
    return (1 - t) * a + t * b + np.hstack([np.zeros_like(t), 4 * bow * t * (1 - t)])


def graph_png(path: Path, view: _View) -> None:
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    g = graph_layout(view)
    n = len(g.names)
    low, high = (g.xy[:, 1].min(), g.xy[:, 1].max()) if n else (0.0, 0.0)
    top = high + (1.4 if g.rows > 1 else 0.9)  # room for the row labels
    height_units = top - low + 0.6
    height_in = min(16.0, max(2.6, 1.3 + height_units * (0.3 if n <= 80 else 0.17)))
    fig = _figure(16, height_in)
    ax = fig.subplots()
    same_row = [_edge_path(g, u, v) for u, v, c in g.edges if not c and g.row[u] == g.row[v]]
    wrapped = [_edge_path(g, u, v) for u, v, c in g.edges if not c and g.row[u] != g.row[v]]
    crossing = [_edge_path(g, u, v) for u, v, c in g.edges if c]
    lw = 0.8 if n <= 150 else 0.5
    ax.add_collection(LineCollection(same_row, colors="#8a8a8a", linewidths=lw, alpha=0.75, zorder=1))
    if wrapped:
        ax.add_collection(LineCollection(wrapped, colors="#8a8a8a", linewidths=lw * 0.6, alpha=0.18, zorder=1))
    if crossing:
        ax.add_collection(LineCollection(crossing, colors=CROSS, linewidths=2.4 if n <= 150 else 1.8, alpha=0.95, zorder=3))
    size = 9.5 if n <= 60 else 5.5 if n <= 200 else 3.5  # marker diameter, points
    for k, marker in (("node", "o"), ("input", ">"), ("output", "s")):
        for i in range(len(view.targets)):
            m = (g.kind == k) & (g.tier == i)
            if m.any():  # plot(), not scatter(): one line per group is much cheaper to autoscale and draw
                ax.plot(g.xy[m, 0], g.xy[m, 1], ls="", marker=marker, ms=size if k == "node" else size * 1.3,
                        color=TIER_COLOURS[i % len(TIER_COLOURS)], mec="#333333" if k != "node" else "none", mew=0.6, zorder=4)
    if n <= 60:  # small graphs: each node's op, alternately above and below so neighbours do not collide
        for v in range(n):
            text = _short(view.nodes[view.pos[g.names[v]]]["op_type"]) if g.kind[v] == "node" else g.names[v].split(":", 1)[1]
            up = int(round(g.xy[v, 0])) % 2 == 0
            ax.annotate(text, g.xy[v], xytext=(0, 7 if up else -7), textcoords="offset points", ha="center",
                        va="bottom" if up else "top", fontsize=7, zorder=5)
    if g.rows > 1:
        for r in range(g.rows):
            ys = g.xy[g.row == r, 1]
            if len(ys):
                ax.text(-0.5, ys.max() + 0.75, f"layers {r * g.per_row}-{(r + 1) * g.per_row - 1}", fontsize=7,
                        color="#666666", ha="left", va="bottom")
    nodes = g.kind == "node"
    handles = [Line2D([], [], marker="o", ls="", color=view.colour[t], label=f"{t}: {int((g.tier[nodes] == i).sum())} nodes")
               for i, t in enumerate(view.targets)]
    n_cross = sum(c for *_, c in g.edges)
    if n_cross:
        handles.append(Line2D([], [], color=CROSS, lw=2, label=f"crosses a link ({n_cross} edges)"))
    handles += [Line2D([], [], marker=">", ls="", color="#777777", label="model input"),
                Line2D([], [], marker="s", ls="", color="#777777", label="model output")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, -0.01), ncol=len(handles), fontsize=8, frameon=False)
    ax.set_xlim(-1, max(g.per_row, 2))
    ax.set_ylim(low - 0.6, top)
    ax.set_axis_off()
    title = f"{view.plan['model']['file']}: partitioned graph, {len(view.nodes)} nodes, layered left to right"
    if g.rows > 1:
        title += f" in {g.rows} rows"
    if view.replicated:
        title += f" ({view.replicated} replicated constant/shape nodes not drawn)"
    ax.set_title(title, fontsize=10, loc="left")
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.4 / height_in, bottom=0.35 / height_in)
    fig.savefig(path, dpi=90, pil_kwargs={"compress_level": 1})


# -- the page ----------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#222;margin:24px auto;max-width:1280px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
.sub{color:#555}.verdict{background:#f4f8fb;border-left:5px solid #2b83ba;padding:10px 14px;margin:14px 0;font-size:15px}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #e5e5e5;text-align:left}
th{background:#fafafa}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:10px;background:#9ab;vertical-align:middle}.chosen td{font-weight:600}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;vertical-align:middle;margin-right:4px}
img{max-width:100%;border:1px solid #ddd}small{color:#666}details{margin:10px 0}
"""


def _row(cells, cls: str = "") -> str:
    tds = "".join(f'<td class="n">{c[1:]}</td>' if c.startswith("\x00") else f"<td>{c}</td>" for c in cells)
    return f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>"


def _num(text: str) -> str:
    return "\x00" + text


def _verdict(view: _View) -> str:
    plan, e = view.plan, html.escape
    device, last = view.targets[0], view.targets[-1]
    base = plan["baselines"]
    kind = view.kind()
    if kind == "device":
        alt = base.get("cloud_only", {}).get("total_s")
        why = (f" Sending the input ({_fmt_bytes(view.input_bytes)}) to {e(last)} would take {_fmt_s(alt)} in all;"
               f" no cut beats running here." if alt else "")
        return f"Nothing is cut: the whole model runs on <b>{e(device)}</b>, predicted <b>{_fmt_s(view.total)}</b> per frame.{why}"
    sent = [b for b in plan["boundary"] if not b.get("is_output")]
    wire = sum(b["encoded_bytes"] for b in sent)
    speed = base.get("device_only", {}).get("total_s", view.total) / view.total
    what = "Everything is offloaded: the input" if kind == "cloud" else f"Cut at {len(sent)} tensor(s):"
    names = ", ".join(f"<code>{e(b['tensor'])}</code>" for b in sent[:6]) + (" ..." if len(sent) > 6 else "")
    return (f"{what} {names} ({_fmt_bytes(wire)} on the wire) goes from {e(sent[0]['from'])} to {e(sent[0]['to'])}."
            f" Predicted <b>{_fmt_s(view.total)}</b> per frame, <b>{speed:.2f}x</b> faster than running everything on {e(device)}.")


def report_html(view: _View) -> str:
    plan, e = view.plan, html.escape
    m = plan["model"]
    entries = [("chosen plan", plan["predicted"])] + [(BASELINE_NAMES.get(k, k), v) for k, v in plan["baselines"].items()]
    scale = max(s["total_s"] for _, s in entries) or 1.0
    rows = []
    for name, s in entries:
        cells = [e(name), _num(_fmt_s(s["total_s"]))] + [_num(_fmt_s(s["compute_s"].get(t, 0.0))) for t in view.targets]
        cells += [_num(_fmt_s(s["transfer_s"] + s.get("rtt_s", 0.0))), _num(f"{s['total_s'] / view.total:.2f}x"),
                  f'<span class="bar" style="width:{max(1, round(220 * s["total_s"] / scale))}px"></span>']
        rows.append(_row(cells, "chosen" if name == "chosen plan" else ""))
    head = "".join(f"<th{' class=n' if i else ''}>{h}</th>" for i, h in enumerate(
        ["plan", "predicted"] + [f"on {e(t)}" for t in view.targets] + ["transfer + RTT", "time vs chosen", ""]))
    links = "; ".join(f"{e(l['name'])} {e(l.get('from', ''))}&rarr;{e(l.get('to', ''))}: up {l['up_bps'] / 1e6:g} Mbps,"
                      f" down {l['down_bps'] / 1e6:g} Mbps, RTT {_fmt_s(l['rtt_s'])}" for l in plan["links"])
    targets = " &rarr; ".join(f'<span class="sw" style="background:{view.colour[t["name"]]}"></span><b>{e(t["name"])}</b>'
                              f' <small>({e(t.get("description", ""))})</small>' for t in plan["targets"])
    if plan["boundary"]:
        brows = [_row([f"<code>{e(b['tensor'])}</code>", f"{e(b['from'])} &rarr; {e(b['to'])}", _num(_fmt_bytes(b["raw_bytes"])),
                       _num(_fmt_bytes(b["encoded_bytes"])), e(b["codec"]), _num(_fmt_s(b["encode_s"])), _num(_fmt_s(b["transfer_s"])),
                       _num(_fmt_s(b["decode_s"]))]) for b in plan["boundary"]]
        bhead = "".join(f"<th{' class=n' if i > 1 and i != 4 else ''}>{h}</th>" for i, h in enumerate(
            ["tensor", "direction", "raw", "encoded", "codec", "encode", "transfer", "decode"]))
        boundary = f"<table><tr>{bhead}</tr>{''.join(brows)}</table>"
    else:
        boundary = f"<p>No tensor crosses a link: every node runs on {e(view.targets[0])}.</p>"
    nrows = []
    for i, nd in enumerate(view.nodes):
        sw = f'<span class="sw" style="background:{view.colour[nd["target"]]}"></span>'
        nrows.append(_row([_num(str(i)), e(nd["name"]), e(nd["op_type"]), sw + e(nd["target"])]
                          + [_num(_fmt_s(nd["latency_s"].get(t, 0.0))) for t in view.targets] + [_num(_fmt_bytes(view.out_bytes[i]))]))
    nhead = "".join(f"<th>{h}</th>" for h in ["#", "node", "op", "runs on"] + [f"latency on {e(t)}" for t in view.targets] + ["output"])
    solver = plan.get("solver", {})
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>splitc report: {e(m['file'])}</title><style>{_CSS}</style></head><body>
<h1>splitc report: {e(m['file'])}</h1>
<div class="sub">{targets}<br>link: {links}; boundary codec {e(str(plan.get('boundary_codec', '')))};
sha256 <code>{e(m.get('sha256', '')[:16])}</code>; {len(plan['nodes'])} nodes</div>
<div class="verdict">{_verdict(view)}</div>
<h2>Predicted latency per frame: the plan and the baselines</h2>
<table><tr>{head}</tr>{''.join(rows)}</table>
<small>All priced in the same cost model (plan.json's <code>cost_model</code>). Solved {e(str(solver.get('status', '')))} by
{e(str(solver.get('method', '')))} in {_fmt_s(solver.get('solve_s', 0.0))}; compiled in {_fmt_s(plan.get('compile_s', 0.0))}.</small>
<h2>Where it was cut</h2>
{boundary}
<h2>Per node: latency on each target, output size, placement</h2>
<img src="{LAYERS_PNG}" alt="per-node latency on each target, output size, placements and the single-cut curve">
<p><small>Top: each node's predicted latency on every target, in topological order. Middle: its output size; the dashed line
is the model input. Strips: where the chosen plan, the min-cut (DADS) and the best single cut (Neurosurgeon) run each node.
Bottom: the predicted end-to-end latency of cutting after each node (device before, cloud after). Red lines: the chosen cut.</small></p>
<h2>The partitioned graph</h2>
<img src="{GRAPH_PNG}" alt="the partitioned graph, each node coloured by placement">
<details><summary>all {len(view.nodes)} placed nodes in topological order</summary>
<table><tr>{nhead}</tr>{''.join(nrows)}</table></details>
<p><small>splitc {e(str(plan.get('splitc_version', '')))}; everything on this page comes from plan.json beside it.</small></p>
</body></html>
"""
