"""``splitc bench``: partition quality over a suite of models, targets and links, and a baseline gate for CI.

The suite is every model of ``splitc.tools.zoo``, the light topologies shipped inside the ``onnx`` wheel and, when
present, the trained models of ``../shared/models`` (input shapes read from its MANIFEST.md), each compiled
for ``rpi4,cloud``, ``jetson-nano,cloud`` and the chain ``rpi4,jetson-nano,cloud`` (rpi4 to jetson-nano over
wifi, jetson-nano to cloud over the case's link) over 3g, 4g and wifi. A case whose targets this build cannot
compile (``compile_model`` raises :class:`SplitcError` for them on a tiny model) is skipped with the reason
recorded; when the build learns them, the cases run.

Per case: cut tensors and bytes, predicted latency, speed-up over device-only, cloud-only, best single cut
(Neurosurgeon) and min-cut (DADS), the optimality gap against the solver's proven bound, and solve time.
Predicted costs come from the cost model, not from timing, so they are deterministic: ``check`` compares each
case's ``predicted_s`` with a committed baseline and fails on a regression beyond :data:`TOLERANCE` or on a
failed case.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from splitc.ui import fmt_bytes, fmt_s

SCHEMA = "splitc.bench/1"
TOLERANCE = 1e-3  # a predicted cost more than 0.1% above the baseline is a regression
LINKS = ("3g", "4g", "wifi")
PAIRS = ("rpi4,cloud", "jetson-nano,cloud")
CHAIN = "rpi4,jetson-nano,cloud"
CHAIN_FIRST_LINK = "wifi"  # rpi4 -> jetson-nano; the case's link joins jetson-nano and the cloud
DEFAULT_BASELINE = Path("benchmarks/baseline.json")
# the fields of a result that the baseline keeps: deterministic, so the committed file only changes with the plans
BASELINE_FIELDS = ("status", "reason", "nodes", "cut_tensors", "cut_bytes", "predicted_s", "device_only_s", "cloud_only_s",
                   "best_single_cut_s", "min_cut_s")
# the symbolic dims of the zoo's transformer block, fixed as a user would with --input-shape
ZOO_SHAPES = {"transformer_block": {"x": (1, 128, 64)}}


@dataclass(frozen=True)
class Model:
    name: str
    source: str  # zoo | light | shared
    path: Path | None = None  # light, shared: the file; zoo: built on first use
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    model: Model
    targets: str
    link: str  # the link to the cloud: 3g, 4g, wifi
    link_spec: str  # what CompileOptions.link gets: "4g", or "wifi,4g" for the three-tier chain

    @property
    def key(self) -> str:
        return f"{self.model.name}/{self.targets}/{self.link_spec}"


# -- the suite ------------------------------------------------------------------------------------


def light_dir() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def default_shared_dir() -> Path | None:
    """``../shared/models`` beside the working directory or beside the source checkout, if it has a MANIFEST.md."""
    for d in (Path.cwd().parent / "shared" / "models", Path(__file__).resolve().parents[3] / "shared" / "models"):
        if (d / "MANIFEST.md").is_file():
            return d
    return None


_DIMS = re.compile(r"^(?P<names>.+?)\s+(?P<dims>\d+(?:x\d+)*)(?:\s*\(.*\))?$")


def parse_manifest(text: str) -> dict[str, dict[str, tuple[int, ...]]]:
    """file stem -> input shapes, from the "input (fix to)" column of ../shared/models/MANIFEST.md.

    ``input_ids, attention_mask 1x128 (int64)`` gives both inputs the shape (1, 128).
    """
    models: dict[str, dict[str, tuple[int, ...]]] = {}
    header: list[str] | None = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else None
        if cells is None:
            header = None
            continue
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        row = dict(zip(header, cells))
        file, spec = row.get("file", ""), next((v for k, v in row.items() if k.startswith("input")), "")
        if not file.endswith(".onnx"):
            continue
        m = _DIMS.match(spec)
        dims = tuple(int(d) for d in m.group("dims").split("x")) if m else None
        names = [n.strip() for n in m.group("names").split(",")] if m else []
        models[file[: -len(".onnx")]] = {n: dims for n in names if n}
    return models


def models(quick: bool = False, shared_dir: Path | None = None) -> list[Model]:
    from splitc.tools import zoo

    out = [Model(name, "zoo", None, ZOO_SHAPES.get(name, {})) for name in zoo.MODELS]
    out += [Model(p.stem, "light", p) for p in sorted(light_dir().glob("light_*.onnx"))]
    if not quick and shared_dir is not None and (shared_dir / "MANIFEST.md").is_file():
        for stem, shapes in parse_manifest((shared_dir / "MANIFEST.md").read_text()).items():
            path = shared_dir / f"{stem}.onnx"
            if path.is_file():
                out.append(Model(stem, "shared", path, shapes))
    return out


def suite(quick: bool = False, shared_dir: Path | None = None, model_patterns: Iterable[str] = (),
          links: Iterable[str] = LINKS) -> list[Case]:
    """The cases: every model x target set x link. ``quick``: zoo and light models, rpi4,cloud only."""
    patterns = [p for p in model_patterns if p]
    chosen = [m for m in models(quick, shared_dir) if not patterns or any(fnmatch.fnmatchcase(m.name, p) for p in patterns)]
    links = list(links)
    unknown = [l for l in links if l not in LINKS]
    if unknown:
        from splitc.errors import SplitcError

        raise SplitcError(f"--links: unknown {', '.join(unknown)}; the suite's links are {', '.join(LINKS)}")
    target_sets = PAIRS[:1] if quick else PAIRS + (CHAIN,)
    cases = []
    for m in chosen:
        for targets in target_sets:
            for link in links:
                cases.append(Case(m, targets, link, _link_spec(targets, link)))
    return cases


def _link_spec(targets: str, link: str) -> str:
    hops = targets.count(",")
    return link if hops == 1 else ",".join([CHAIN_FIRST_LINK] * (hops - 1) + [link])


# -- running ---------------------------------------------------------------------------------------


class Runner:
    """Runs cases; builds zoo models into a temporary directory once, probes each target set once."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self._paths: dict[str, Path] = {}

    def model_path(self, m: Model) -> Path:
        if m.path is not None:
            return m.path
        if m.name not in self._paths:
            import onnx

            from splitc.tools import zoo

            path = self.workdir / f"{m.name}.onnx"
            onnx.save_model(zoo.MODELS[m.name](), str(path))
            self._paths[m.name] = path
        return self._paths[m.name]

    def run(self, case: Case) -> dict:
        from splitc.compiler import CompileOptions, compile_model

        res = {"key": case.key, "model": case.model.name, "source": case.model.source, "targets": case.targets,
               "link": case.link, "link_spec": case.link_spec}
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = compile_model(self.model_path(case.model), None,
                                       CompileOptions(target=case.targets, link=case.link_spec,
                                                      input_shapes=dict(case.model.input_shapes)))
        except Exception as e:  # noqa: BLE001  - a failed case is a result, named in the report
            return {**res, "status": "failed", "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                    "wall_s": time.perf_counter() - t0}
        res.update(metrics(result.plan))
        res["wall_s"] = time.perf_counter() - t0
        res["warnings"] = sorted({str(w.message).splitlines()[0] for w in caught})[:5]
        return res


def metrics(plan: dict) -> dict:
    """A case's numbers from its plan.json."""
    total = plan["predicted"]["total_s"]
    base = {k: v["total_s"] for k, v in plan.get("baselines", {}).items()}
    crossing = [b for b in plan["boundary"] if not b.get("is_output")]
    solver = plan.get("solver", {})
    min_cut = base.get("dads")
    # the lower bound on latency the solver proved (HiGHS: the MIP dual bound, or the LP optimum by duality), read
    # apart from the plan's own priced total: the gap is 0 only when the solver's model and the cost model agree
    bound = solver.get("bound") if plan.get("objective", "latency") == "latency" else None
    return {
        "status": "ok",
        "nodes": sum(1 for n in plan["nodes"] if n.get("target") != "replicated"),
        "cut_tensors": len(plan.get("cut", crossing)),
        "cut_bytes": int(sum(b["encoded_bytes"] for b in crossing)),
        "wire_bytes": int(sum(b["encoded_bytes"] for b in plan["boundary"])),
        "placement": _placement_counts(plan),
        "predicted_s": total,
        "device_only_s": base.get("device_only"),
        "cloud_only_s": base.get("cloud_only"),
        "best_single_cut_s": base.get("best_single_cut"),
        "min_cut_s": min_cut,
        "speedup": {k: (v / total if total > 0 else None) for k, v in base.items()},
        "lower_bound_s": bound,
        "gap": (total - bound) / total if bound is not None and total > 0 else None,
        "plan_vs_min_cut": total / min_cut if min_cut else None,
        "solver": f"{solver.get('method', '?')} ({solver.get('status', '?')})",
        "solve_s": solver.get("solve_s"),
        "compile_s": plan.get("compile_s"),
    }


def _placement_counts(plan: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in plan["nodes"]:
        if n.get("target") and n["target"] != "replicated":
            counts[n["target"]] = counts.get(n["target"], 0) + 1
    return counts


def run_suite(cases: list[Case], on_case: Callable[[int, Case, dict | None], None] | None = None) -> dict:
    """Run every case; ``on_case(i, case, result)`` before (result None) and after each. Returns the JSON report."""
    import splitc

    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="splitc-bench-") as tmp:
        runner = Runner(Path(tmp))
        for i, case in enumerate(cases):
            if on_case:
                on_case(i, case, None)
            results.append(runner.run(case))
            if on_case:
                on_case(i, case, results[-1])
    return {"schema": SCHEMA, "splitc_version": splitc.__version__, "wall_s": time.perf_counter() - t0,
            "cases": results}


# -- the baseline gate ----------------------------------------------------------------------------


@dataclass
class CheckResult:
    regressions: list[tuple[str, float, float]] = field(default_factory=list)  # key, baseline, now
    failed: list[tuple[str, str]] = field(default_factory=list)  # key, error
    improvements: list[tuple[str, float, float]] = field(default_factory=list)
    new: list[str] = field(default_factory=list)  # run and ok here, not in the baseline (or not ok there)
    not_run: list[str] = field(default_factory=list)  # ok in the baseline, skipped or absent here
    outside: int = 0  # baseline entries outside this run's suite (filtered out, or shared models absent)
    compared: int = 0

    @property
    def ok(self) -> bool:
        return not self.regressions and not self.failed

    def lines(self) -> list[str]:
        out = []
        for key, base, now in self.regressions:
            out.append(f"REGRESSION {key}: predicted {_ms(now)} vs baseline {_ms(base)} (+{(now / base - 1) * 100:.2f}%)")
        for key, error in self.failed:
            out.append(f"FAILED {key}: {error}")
        for key, base, now in self.improvements:
            out.append(f"improved {key}: predicted {_ms(now)} vs baseline {_ms(base)} ({(now / base - 1) * 100:.2f}%)")
        if self.new:
            out.append(f"new (not in the baseline): {len(self.new)} case(s): {', '.join(self.new[:10])}"
                       + (" ..." if len(self.new) > 10 else ""))
        if self.not_run:
            out.append(f"not run here (in the baseline): {len(self.not_run)} case(s): {', '.join(self.not_run[:10])}"
                       + (" ..." if len(self.not_run) > 10 else ""))
        if self.outside:
            out.append(f"{self.outside} baseline case(s) are outside this run's suite")
        verdict = "check passed" if self.ok else (
            f"check FAILED: {len(self.regressions)} regression(s), {len(self.failed)} failed case(s): "
            + ", ".join([k for k, *_ in self.regressions] + [k for k, _ in self.failed]))
        out.append(f"{verdict} ({self.compared} case(s) compared, tolerance {TOLERANCE * 100:g}%)")
        return out


def _ms(s: float) -> str:
    return f"{s * 1e3:.3f} ms"


def load_baseline(path: str | Path) -> dict:
    from splitc.errors import SplitcError

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SplitcError(f"{path}: no baseline; create it with: splitc bench --update {path}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise SplitcError(f"{path}: not a readable baseline ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("cases"), dict):
        raise SplitcError(f"{path}: not a splitc bench baseline (schema {SCHEMA}); recreate it with: splitc bench --update {path}")
    return data


def check(report: dict, baseline: dict, tolerance: float = TOLERANCE, scope: Iterable[str] | None = None) -> CheckResult:
    """Compare each case's predicted cost with the baseline's. Regressions and failed cases fail the check.

    ``scope``: the keys of the suite that was run; baseline entries outside it are counted, not listed.
    """
    out = CheckResult()
    base = baseline["cases"]
    if scope is not None:
        scope = set(scope)
        out.outside = sum(1 for k in base if k not in scope)
        base = {k: v for k, v in base.items() if k in scope}
    seen = set()
    for r in report["cases"]:
        key = r["key"]
        seen.add(key)
        if r["status"] == "failed":
            out.failed.append((key, r.get("error", "")))
            continue
        b = base.get(key)
        if r["status"] != "ok":
            if b is not None and b.get("status") == "ok":
                out.not_run.append(key)
            continue
        if b is None or b.get("status") != "ok" or b.get("predicted_s") is None:
            out.new.append(key)
            continue
        out.compared += 1
        was, now = float(b["predicted_s"]), float(r["predicted_s"])
        if now > was * (1 + tolerance):
            out.regressions.append((key, was, now))
        elif now < was * (1 - tolerance):
            out.improvements.append((key, was, now))
    out.not_run += sorted(k for k, b in base.items() if k not in seen and b.get("status") == "ok")
    return out


def updated_baseline(report: dict, previous: dict | None, suite_keys: Iterable[str]) -> dict:
    """The baseline rewritten from this run. Entries of cases outside this run's suite (filtered out, or shared
    models absent here) are kept, so a partial run never drops them."""
    import splitc

    keys = set(suite_keys)
    cases = {k: v for k, v in (previous or {}).get("cases", {}).items() if k not in keys}
    for r in report["cases"]:
        cases[r["key"]] = {k: r[k] for k in BASELINE_FIELDS if r.get(k) is not None}
    return {"schema": SCHEMA, "splitc_version": splitc.__version__, "tolerance": TOLERANCE,
            "note": "predicted costs per case (model/targets/link) from the cost model; regenerate with: splitc bench --update",
            "cases": dict(sorted(cases.items()))}


def write_json(path: str | Path, data: dict) -> None:
    """Whole or not at all, through a private temp file beside ``path`` (never a predictable name a link could sit on)."""
    # imported here: splitc.cli.main imports this module, which must stay light
    from splitc.codegen import output

    output.write_text(path, json.dumps(data, indent=1) + "\n")


# -- markdown -------------------------------------------------------------------------------------

_SPEEDUPS = (("device_only", "× device-only"), ("cloud_only", "× cloud-only"), ("best_single_cut", "× best single cut"),
             ("dads", "× min-cut"))


def _geomean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def markdown_table(results: list[dict]) -> str:
    cols = ["model", "source", "targets", "placed nodes", "cut tensors", "cut bytes", "predicted"] + [c for _, c in _SPEEDUPS] + [
        "gap", "solve"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(cols) - 3)) + "|"]
    ok = [r for r in results if r["status"] == "ok"]
    for r in ok:
        gap = "-" if r["gap"] is None else f"{round(r['gap'] * 100, 2) + 0.0:.2f}%"  # + 0.0: no "-0.00%" for a bound a hair above
        cells = [r["model"], r["source"], r["targets"], str(r["nodes"]), str(r["cut_tensors"]),
                 fmt_bytes(r["cut_bytes"]) if r["cut_tensors"] else "-", fmt_s(r["predicted_s"])]
        cells += [f"{r['speedup'][k]:.2f}×" if r["speedup"].get(k) else "-" for k, _ in _SPEEDUPS]
        cells += [gap, fmt_s(r["solve_s"]) if r["solve_s"] is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    if ok:
        gm = [_geomean([r["speedup"].get(k) for r in ok]) for k, _ in _SPEEDUPS]
        lines.append("| **geometric mean** | | | | | | | " + " | ".join(f"**{g:.2f}×**" if g else "-" for g in gm) + " | | |")
    return "\n".join(lines)


def markdown(report: dict, links: Iterable[str] | None = None) -> str:
    results = report["cases"]
    links = [l for l in (links or LINKS) if any(r["link"] == l for r in results)]
    out = []
    for link in links:
        rows = [r for r in results if r["link"] == link]
        ok = [r for r in rows if r["status"] == "ok"]
        out.append(f"### link to the cloud: {link}\n")
        if ok:
            out.append(markdown_table(rows) + "\n")
        out += _not_ok_lines(rows)
    n_ok = sum(r["status"] == "ok" for r in results)
    out.append(f"{len(results)} case(s): {n_ok} ok, {sum(r['status'] == 'skipped' for r in results)} skipped,"
               f" {sum(r['status'] == 'failed' for r in results)} failed; {report.get('wall_s', 0):.0f} s."
               " Speed-ups are the baseline's predicted latency over the plan's (same cost model); gap = (plan -"
               " proven lower bound) / plan; the three-tier chain sends rpi4 -> jetson-nano over wifi. Placed nodes: those"
               " the partitioner places; constants and shape arithmetic, recomputed by whichever part needs them, are not"
               " counted (splitc compile's 'N nodes' counts every node).")
    return "\n".join(out) + "\n"


def _not_ok_lines(rows: list[dict]) -> list[str]:
    out = []
    skipped: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r["status"] == "skipped":
            skipped.setdefault((r["targets"], r["reason"]), []).append(r["model"])
    for (targets, reason), names in skipped.items():
        out.append(f"- skipped {targets} for {len(names)} model(s): {reason}")
    for r in rows:
        if r["status"] == "failed":
            out.append(f"- **FAILED** {r['key']}: {r['error']}")
    return out + ([""] if out else [])
