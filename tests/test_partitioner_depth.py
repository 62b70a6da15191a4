"""Partitioner depth: several tiers, objectives, limits, return flows, sweeps — each checked
against brute force (every placement priced by the shared evaluator) or the min-cut."""

from __future__ import annotations

import glob
import os
import random

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitc.partition.problem import fixed
from splitc.tools import zoo
from splitc.partition.baselines import brute_force, solve_mincut
from splitc.compiler import CompileOptions, annotate, compile_model, import_model, resolve_targets
from splitc.partition.costgraph import CNode, CostGraph, CTensor, CWeight, evaluate
from splitc.errors import SplitcError
from splitc.partition.optimizer import Goal, Infeasible, solve
from splitc.partition.passes.partition import build_cost_graph
from splitc.codegen.plan import recompute_total
from splitc.runtimes import SplitModel
from splitc.runtimes.ort import session, synthetic_inputs
from splitc.partition.sweep import _at, sweep_bandwidth
from splitc.cost.targets import Link, parse_link, parse_links

RADIO = parse_link("wifi").radio


def random_graph(seed: int, n: int, k: int, allow_return: bool = False, structured: bool = True) -> CostGraph:
    r = random.Random(seed)
    nodes = tuple(CNode(f"n{i}", "Op", tuple(r.uniform(1e-4, 0.05) / (1 + 20 * r.random() * t) for t in range(k))) for i in range(n))
    tensors = [CTensor("in", None, tuple(sorted(r.sample(range(n), r.randint(1, min(2, n))))), False, 150_000, r.choice([150_000, 40_000]))]
    for i in range(n):
        cons = tuple(sorted({j for j in range(i + 1, n) if r.random() < 0.3}))
        if structured and i < n - 1 and not cons:
            cons = (i + 1,)
        size = r.randint(100, 400_000)
        out = (structured and i == n - 1) or r.random() < 0.15
        tensors.append(CTensor(f"t{i}", i, cons, out, size, size // r.choice([1, 4]), "x", size if out else None))
    weights = tuple(CWeight(f"w{i}", r.randint(1_000, 3_000_000), (i,)) for i in range(n) if r.random() < 0.6)
    links = tuple(Link(f"l{j}", r.choice([2e6, 20e6, 200e6]), r.choice([10e6, 100e6]), r.choice([0.001, 0.02]), radio=RADIO)
                  for j in range(k - 1))
    return CostGraph(tuple(f"t{t}" for t in range(k)), nodes, tuple(tensors), links, tuple([2e8] + [2e9] * (k - 1)),
                     tuple([3e8] + [3e9] * (k - 1)), (), weights, tuple([6.0] + [50.0] * (k - 1)), allow_return,
                     tuple([r.choice([0.0, 2.7, 6.0])] + [20.0] * (k - 1)))  # idle power: none, a Pi's, = busy


def assert_same_optimum(cg: CostGraph, goal: Goal):
    try:
        best = brute_force(cg, goal=goal)
    except Infeasible:
        with pytest.raises(Infeasible):
            solve(cg, goal)
        return None
    got = solve(cg, goal)
    assert got.cost.feasible and goal.met_by(got.cost)
    want = best.cost.metric(goal.objective)
    assert got.cost.metric(goal.objective) == pytest.approx(want, rel=1e-7, abs=1e-12)
    return got


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 7), k=st.sampled_from([2, 3]),
       objective=st.sampled_from(["latency", "energy", "throughput"]), structured=st.booleans())
def test_each_objective_matches_brute_force(seed, n, k, objective, structured):
    assert_same_optimum(random_graph(seed, n, k, structured=structured), Goal(objective))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(2, 7), k=st.sampled_from([2, 3]),
       limit=st.sampled_from(["deadline_s", "max_energy_j", "max_device_memory", "max_cloud_s"]),
       objective=st.sampled_from(["latency", "energy", "throughput"]), quantile=st.floats(0.05, 0.95))
def test_each_limit_matches_brute_force(seed, n, k, limit, objective, quantile):
    cg = random_graph(seed, n, k)
    # a bound somewhere inside the range the placements span, so it binds sometimes
    x = (np.arange(k ** n)[:, None] // k ** np.arange(n)) % k
    from splitc.partition.costgraph import evaluate_many

    r = evaluate_many(cg, x)
    values = {"deadline_s": r["total"], "max_energy_j": r["energy"], "max_device_memory": r["memory"],
              "max_cloud_s": r["compute"][-1]}[limit][r["feasible"]]
    bound = float(np.quantile(values, quantile))
    if limit == "max_device_memory":
        bound = int(bound)
    if bound <= 0:
        return
    assert_same_optimum(cg, Goal(objective, **{limit: bound}))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 7), k=st.sampled_from([2, 3]),
       objective=st.sampled_from(["latency", "energy"]))
def test_return_flows_match_brute_force(seed, n, k, objective):
    cg = random_graph(seed, n, k, allow_return=True)
    forward = random_graph(seed, n, k, allow_return=False)
    got = assert_same_optimum(cg, Goal(objective))
    # allowing return flows can only help
    assert got.cost.metric(objective) <= solve(forward, Goal(objective)).cost.metric(objective) * (1 + 1e-9)


def test_return_flow_runs_first_and_last_layers_on_the_device():
    """JointDNN's mobile-cloud-mobile schedule: a large output made from a small code stays local."""
    slow_dev = (0.05, 0.001)
    nodes = (CNode("enc", "Conv", (0.001, 0.0001)), CNode("mid", "Conv", slow_dev), CNode("dec", "Conv", (0.002, 0.0001)))
    tensors = (
        CTensor("x", None, (0,), False, 400_000, 400_000),
        CTensor("code", 0, (1,), False, 2_000, 2_000),
        CTensor("hidden", 1, (2,), False, 2_000, 2_000),
        CTensor("image", 2, (), True, 4_000_000, 4_000_000, "raw", 4_000_000),
    )
    cg = CostGraph(("dev", "cloud"), nodes, tensors, (Link("l", 10e6, 10e6, 0.005),), (1e9, 1e9), (1e9, 1e9))
    from dataclasses import replace

    forward = solve(cg)
    back = solve(replace(cg, allow_return=True))
    assert back.placement == (0, 1, 0)
    assert back.cost.total_s < forward.cost.total_s


def test_infeasible_names_the_binding_limit_and_the_smallest_feasible_value():
    cg = random_graph(7, 6, 2)
    fastest = solve(cg).cost.total_s
    with pytest.raises(Infeasible) as err:
        solve(cg, Goal(deadline_s=fastest * 0.5))
    message = str(err.value)
    assert "--deadline" in message and "smallest feasible value" in message and "\n" not in message
    value_ms = float(message.rsplit(" is ", 1)[1].split("ms")[0])
    assert value_ms == pytest.approx(fastest * 1e3, rel=1e-3)
    assert solve(cg, Goal(deadline_s=value_ms / 1e3 * 1.0001)).cost.total_s <= value_ms / 1e3 * 1.0001
    smallest_memory = brute_force(cg, goal=Goal()).cost.device_memory_bytes
    with pytest.raises(Infeasible, match="--max-device-memory"):
        solve(cg, Goal(max_device_memory=1))
    assert smallest_memory > 1


def test_energy_needs_a_radio_model():
    cg = random_graph(1, 4, 2)
    from dataclasses import replace

    bare = replace(cg, links=(Link("custom", 1e6, 1e6, 0.01),))
    with pytest.raises(SplitcError, match="radio=3g\\|4g\\|wifi"):
        solve(bare, Goal("energy"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(2, 9), objective=st.sampled_from(["latency", "energy"]))
def test_bandwidth_sweep_is_exact(seed, n, objective):
    cg = random_graph(seed, n, 2)
    goal = Goal(objective)
    intervals = sweep_bandwidth(cg, goal, 0.2e6, 500e6)
    assert intervals[0].lo_bps == pytest.approx(0.2e6) and intervals[-1].hi_bps == pytest.approx(500e6)
    for a, b in zip(intervals, intervals[1:]):
        assert a.hi_bps == pytest.approx(b.lo_bps) and a.solution.placement != b.solution.placement
        # at a break-even point both plans cost the same
        assert evaluate(_at(cg, a.hi_bps), a.solution.placement).metric(objective) == pytest.approx(
            evaluate(_at(cg, a.hi_bps), b.solution.placement).metric(objective), rel=1e-6)
    for bps in np.geomspace(0.2e6, 500e6, 25):
        chosen = next(i for i in intervals if i.lo_bps * (1 - 1e-9) <= bps <= i.hi_bps * (1 + 1e-9))
        best = solve(_at(cg, bps), goal).cost.metric(objective)
        assert evaluate(_at(cg, bps), chosen.solution.placement).metric(objective) <= best * (1 + 1e-7) + 1e-12


LIGHT = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_*.onnx")))


@pytest.mark.parametrize("source", ["bottlenet", "resnet18", "mobilenet_v2", "inception", "detector_heads"] + LIGHT,
                         ids=lambda s: os.path.basename(s).replace(".onnx", ""))
def test_ilp_equals_mincut_on_suite_models(source, tmp_path):
    if source in zoo.MODELS:
        path = tmp_path / "m.onnx"
        onnx.save(getattr(zoo, source)(), path)
    else:
        path = source
    targets = resolve_targets("rpi4,cloud")
    model = annotate(import_model(path), targets)
    for link in ("3g", "4g", "wifi", "up=100Mbps,down=300Mbps,rtt=2ms"):
        cg = build_cost_graph(model, targets, parse_links(link, 1), "int8")
        ilp, cut = solve(cg), solve_mincut(cg)
        assert ilp.cost.total_s == pytest.approx(cut.cost.total_s, rel=1e-9), link


def test_three_tiers_end_to_end(tmp_path, monkeypatch):
    """A plan using all three tiers runs stage by stage and reproduces the original (fp32)."""
    path = tmp_path / "bottlenet.onnx"
    onnx.save(zoo.bottlenet(), path)

    def assign(cg):
        n = len(cg.nodes)
        return [0] * (n // 3) + [1] * (n // 3) + [2] * (n - 2 * (n // 3))

    result = compile_model(path, tmp_path / "out", CompileOptions(target="rpi4,jetson-nano,cloud", link="wifi,4g", boundary="fp32"),
                           policy=fixed(assign))
    plan = result.plan
    assert [s["target"] for s in plan["stages"]] == ["rpi4", "jetson-nano", "cloud"]
    assert {b["link"] for b in plan["boundary"]} == {0, 1}
    assert recompute_total(plan) == pytest.approx(plan["predicted"]["total_s"], rel=1e-12)
    split = SplitModel(tmp_path / "out", optimization="disable")
    feeds = synthetic_inputs(split.inputs)
    got = split.run(feeds)
    ref = session(path, "disable").run(None, feeds)[0]
    assert np.abs(got.outputs["logits"] - ref).max() <= 1e-5
    assert got.link_bytes[0]["up"] > 0 and got.link_bytes[1]["up"] > 0 and got.link_bytes[1]["down"] > 0


def test_return_flow_end_to_end(tmp_path, monkeypatch):
    """device -> cloud -> device: the device runs the first and last layers; int8 both ways."""
    path = tmp_path / "chain.onnx"
    onnx.save(zoo.chain(), path)

    def assign(cg):
        n = len(cg.nodes)
        return [0] * 2 + [1] * (n - 4) + [0] * 2

    result = compile_model(path, tmp_path / "out", CompileOptions(link="wifi", allow_return=True), policy=fixed(assign))
    stages = result.plan["stages"]
    assert [s["target"] for s in stages] == ["rpi4", "cloud", "rpi4"]
    assert {b["direction"] for b in result.plan["boundary"]} == {"up", "down"}
    split = SplitModel(tmp_path / "out", optimization="disable")
    feeds = synthetic_inputs(split.inputs)
    got = split.run(feeds)
    ref = session(path, "disable").run(None, feeds)[0]
    out = got.outputs[result.plan["model"]["outputs"][0]["name"]]
    cos = float((out.ravel() @ ref.ravel()) / (np.linalg.norm(out) * np.linalg.norm(ref)))
    assert cos > 0.99


def test_compile_options_end_to_end(tmp_path):
    path = tmp_path / "bottlenet.onnx"
    onnx.save(zoo.bottlenet(), path)
    energy = compile_model(path, None, CompileOptions(link="wifi", objective="energy")).plan
    assert energy["predicted"]["energy_j"] <= min(b["energy_j"] for b in energy["baselines"].values()) * (1 + 1e-9)
    thr = compile_model(path, None, CompileOptions(link="wifi", objective="throughput")).plan
    assert thr["predicted"]["period_s"] <= min(b["period_s"] for b in thr["baselines"].values()) * (1 + 1e-9)
    fast = compile_model(path, None, CompileOptions(link="wifi")).plan["predicted"]["total_s"]
    with pytest.raises(Infeasible, match="--deadline"):
        compile_model(path, None, CompileOptions(link="wifi", deadline_s=fast / 2))
    limited = compile_model(path, None, CompileOptions(link="wifi", max_device_memory=3_000_000)).plan
    assert limited["predicted"]["device_memory_bytes"] <= 3_000_000
    sweep = compile_model(path, tmp_path / "sweep", CompileOptions(link="wifi", sweep_bps=(0.5e6, 500e6))).plan["sweep"]
    assert len(sweep["intervals"]) >= 2
    for interval in sweep["intervals"]:
        assert (tmp_path / "sweep" / interval["plan"] / "plan.json").is_file()
    chosen = SplitModel.for_bandwidth(tmp_path / "sweep", 300e6)
    assert chosen.dir.name == sweep["intervals"][-1]["plan"].split("/")[-1]


def test_coarsening_shrinks_real_graphs_and_keeps_the_optimum():
    from splitc.partition.coarsen import coarsen

    path = LIGHT[[os.path.basename(p) for p in LIGHT].index("light_resnet50.onnx")]
    targets = resolve_targets("rpi4,cloud")
    model = annotate(import_model(path), targets)
    for link in ("4g", "up=100Mbps,down=300Mbps,rtt=2ms"):
        cg = build_cost_graph(model, targets, parse_links(link, 1), "int8")
        c = coarsen(cg)
        assert len(c.graph.nodes) <= len(cg.nodes) / 2
        assert sorted(v for g in c.groups for v in g) == list(range(len(cg.nodes)))
        coarse = solve(c.graph, coarsen=False)
        assert evaluate(cg, c.expand(coarse.placement)).total_s == pytest.approx(solve(cg, coarsen=False).cost.total_s, rel=1e-12)


def test_time_limit_reports_status_and_gap():
    from splitc.partition.synth import synthetic_dag

    cg = synthetic_dag(3000, seed=1)
    fastest = solve(cg).cost.total_s
    goal = Goal("throughput", deadline_s=fastest * 1.5)
    full = solve(cg, goal, time_limit_s=300)
    assert full.status == "optimal" and full.gap == 0
    assert full.cost.total_s <= fastest * 1.5 * (1 + 1e-9)
    assert full.bound == pytest.approx(full.cost.period_s, rel=1e-9)  # the dual bound HiGHS proved meets the plan
    # 1 us: HiGHS stops at its first clock check, before presolve ends, on any machine: never a plan, always the error
    with pytest.raises(SplitcError, match=r"^the solver found no plan within --time-limit 1e-06s; raise it \(or drop a limit\)$"):
        solve(cg, goal, time_limit_s=1e-6)
