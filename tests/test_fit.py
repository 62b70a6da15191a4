"""Fitting per-class latency models (splitc/cost/fit.py), the [fit.<class>] profile tables and their validation."""

from __future__ import annotations

import itertools
import subprocess
import sys
import tomllib

import numpy as np
import pytest

from splitc.ir import metadata as ann
from splitc.compiler import annotate, import_model
from splitc.errors import SplitcError
from splitc.cost.fit import (
    MIN_SAMPLES,
    NodeFeatures,
    build_profile,
    fit_groups,
    nnls,
    node_features,
    profile_to_toml,
)
from splitc.cost.targets import OP_CLASSES, ClassFit, DeviceProfile, load_target, parse_profile

# --------------------------------------------------------------------------------------------- NNLS


def _brute_nnls(a, b):
    """The exact optimum: the best unconstrained least-squares fit over every support whose solution is >= 0."""
    best, best_x = np.inf, np.zeros(a.shape[1])
    for k in range(a.shape[1] + 1):
        for support in itertools.combinations(range(a.shape[1]), k):
            x = np.zeros(a.shape[1])
            if support:
                x[list(support)] = np.linalg.lstsq(a[:, support], b, rcond=None)[0]
            if (x >= -1e-12).all():
                r = np.linalg.norm(a @ np.maximum(x, 0) - b)
                if r < best - 1e-12:
                    best, best_x = r, np.maximum(x, 0)
    return best_x, best


@pytest.mark.parametrize("seed", range(12))
def test_nnls_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    m, n = rng.integers(3, 9), rng.integers(1, 5)
    a = rng.standard_normal((m, n))
    b = rng.standard_normal(m)
    x = nnls(a, b)
    assert (x >= 0).all()
    _, best = _brute_nnls(a, b)
    assert np.linalg.norm(a @ x - b) == pytest.approx(best, rel=1e-7, abs=1e-10)


def test_nnls_recovers_a_nonnegative_solution_exactly():
    rng = np.random.default_rng(1)
    a = rng.random((20, 4))
    truth = np.array([0.0, 2.0, 0.5, 0.0])
    np.testing.assert_allclose(nnls(a, a @ truth), truth, atol=1e-10)


# --------------------------------------------------------------------------------------------- fitting

TRUTH = {
    "conv": ClassFit(4e-6, 1e-11, 2e-11, 2e-11),  # 1x1 convs run at half the k x k rate
    "depthwise": ClassFit(6e-6, 3e-11, 8e-11),
    "elementwise": ClassFit(2e-6, 0.0, 1e-10),
}


def _synthetic_rows(rng, n=40, fuse=True):
    rows = []
    for i in range(n):
        flops = float(rng.uniform(1e6, 5e8))
        conv = NodeFeatures("conv", flops, float(rng.uniform(1e4, 5e6)), 1 if i % 2 else 9)
        dw = NodeFeatures("depthwise", float(rng.uniform(1e5, 1e7)), float(rng.uniform(1e4, 3e6)), 9)
        add = NodeFeatures("elementwise", float(rng.uniform(1e3, 1e6)), float(rng.uniform(1e4, 3e6)))
        for group in ([conv, add] if fuse and i % 3 == 0 else [conv], [dw], [add]):
            rows.append((sum(TRUTH[f.op_class].latency(f.flops, f.bytes, f.kernel) for f in group), group))
    return rows


def test_fit_recovers_per_class_models_from_fused_groups():
    rows = _synthetic_rows(np.random.default_rng(0))
    result = fit_groups(rows, ridge=1e-6)
    assert result.split_conv
    assert set(result.fits) == {"conv", "depthwise", "elementwise"}
    for cls, truth in TRUTH.items():
        got = result.fits[cls]
        for t, fs in rows[:30]:
            assert sum(result.latency(f) for f in fs) == pytest.approx(t, rel=0.02)
        assert got.s_per_flop == pytest.approx(truth.s_per_flop, rel=0.05, abs=1e-14)
        assert got.s_per_byte == pytest.approx(truth.s_per_byte, rel=0.05, abs=1e-14)
    assert result.fits["conv"].s_per_flop_1x1 == pytest.approx(2e-11, rel=0.05)
    assert result.fits["conv"].samples == 40 and result.samples["elementwise"] == 40 + 14


def test_fit_without_kernel_split_when_one_kind_is_rare():
    rows = [(TRUTH["conv"].latency(f, 1e5, 9), [NodeFeatures("conv", f, 1e5, 9)]) for f in np.linspace(1e6, 1e9, 10)]
    rows.append((1e-3, [NodeFeatures("conv", 1e8, 1e5, 1)]))
    result = fit_groups(rows)
    assert not result.split_conv
    assert result.fits["conv"].s_per_flop_1x1 is None


def test_a_class_without_spread_leans_on_the_pooled_model():
    # every norm sample has the same size: its three coefficients are not identifiable from them alone
    rng = np.random.default_rng(3)
    rows = [(TRUTH["conv"].latency(f, b, 9), [NodeFeatures("conv", f, b, 9)])
            for f, b in zip(rng.uniform(1e6, 1e9, 30), rng.uniform(1e4, 1e7, 30))]
    rows += [(2e-5, [NodeFeatures("norm", 2e5, 2e5)])] * 4
    result = fit_groups(rows)
    norm = result.fits["norm"]
    assert norm.latency(2e5, 2e5) == pytest.approx(2e-5, rel=0.1)  # the data is honoured
    # and it grows with size rather than being a constant (the pooled model has a slope)
    assert norm.latency(2e6, 2e6) > 2 * norm.latency(2e5, 2e5)


def test_classes_with_too_few_samples_get_no_table():
    rows = [(1e-4 + f * 1e-11, [NodeFeatures("conv", f, 1e5, 9)]) for f in np.linspace(1e6, 1e9, 10)]
    rows += [(5e-5, [NodeFeatures("matmul", 1e6, 4e6)])] * (MIN_SAMPLES - 1)
    rows.append((1e-3, []))  # a group with no costed node: nothing to fit it to
    result = fit_groups(rows)
    assert "matmul" not in result.fits and "conv" in result.fits
    assert result.dropped_s == pytest.approx(1e-3)
    assert any("matmul" in n for n in result.notes)
    profile = build_profile("p", result)
    assert profile.fit("matmul") is None
    # the analytical fallback: matmul borrows the fitted conv rate; overhead and bandwidth from the pooled fit
    assert profile.rate("matmul") == pytest.approx(1 / result.fits["conv"].s_per_flop)
    assert profile.op_overhead_s == pytest.approx(result.pooled.overhead_s)
    assert profile.latency(1e6, 4e6, "matmul") == pytest.approx(
        profile.op_overhead_s + max(1e6 / profile.rate("matmul"), 4e6 / profile.memory_bytes_per_s))


def test_fit_refuses_no_data():
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_groups([(1e-3, [])])


# --------------------------------------------------------------------------------------------- the profile file


def _fitted_profile() -> DeviceProfile:
    result = fit_groups(_synthetic_rows(np.random.default_rng(5)))
    return build_profile("edge-box", result, description="a test box", sources=("unit test",),
                         encode_bytes_per_s=3e8, decode_bytes_per_s=9e8,
                         cluster_encode_bytes_per_s=7e8, cluster_decode_bytes_per_s=2e9,
                         measured={"machine": "test", "threads": 2, "models": {"a.onnx": {"wall_s": 0.01}}})


def test_profile_toml_round_trips_exactly():
    profile = _fitted_profile()
    text = profile_to_toml(profile, "header line")
    assert text.startswith("# header line\n")
    back = parse_profile(tomllib.loads(text), "edge-box.toml")
    assert back == profile  # every coefficient, rate and field, bit for bit
    assert back.measured["models"]["a.onnx"]["wall_s"] == 0.01
    assert (back.cluster_encode_bytes_per_s, back.cluster_decode_bytes_per_s) == (7e8, 2e9)  # the cluster link codec
    assert back.fit("conv").s_per_flop_1x1 is not None and back.fit("conv").samples > 0


def test_profile_latency_uses_the_fit_and_the_kernel_size():
    profile = _fitted_profile()
    conv = profile.fit("conv")
    assert profile.latency(1e8, 1e6, "conv", 9) == pytest.approx(conv.overhead_s + 1e8 * conv.s_per_flop + 1e6 * conv.s_per_byte)
    assert profile.latency(1e8, 1e6, "conv", 1) == pytest.approx(conv.overhead_s + 1e8 * conv.s_per_flop_1x1 + 1e6 * conv.s_per_byte)
    analytical = load_target("rpi4")
    assert analytical.fits == ()
    assert analytical.latency(1e8, 1e6, "conv", 1) == analytical.latency(1e8, 1e6, "conv")


def test_latency_pass_costs_1x1_and_kxk_convolutions_apart(tmp_path):
    from splitc.tools import zoo

    path = tmp_path / "m.onnx"
    import onnx

    onnx.save(zoo.mobilenet_v2(64), str(path))
    profile = _fitted_profile()
    model = annotate(import_model(path), (profile,))
    conv = profile.fit("conv")
    seen = set()
    for node in model.graph:
        f = node_features(node)
        if f is None or f.op_class != "conv":
            continue
        rate = conv.s_per_flop_1x1 if f.kernel == 1 else conv.s_per_flop
        expected = conv.overhead_s + f.flops * rate + f.bytes * conv.s_per_byte
        assert ann.get(node, ann.LATENCY, ann.NodeLatency).on("edge-box") == pytest.approx(expected)
        seen.add(f.kernel)
    assert seen == {1, 9}


# --------------------------------------------------------------------------------------------- validation

BASE = {
    "name": "box",
    "compute": {**{c: 1e9 for c in OP_CLASSES}, "memory_bytes_per_s": 1e9, "op_overhead_s": 1e-5},
    "codec": {"encode_bytes_per_s": 1e8, "decode_bytes_per_s": 1e8},
    "fit": {"conv": {"overhead_s": 1e-6, "s_per_flop": 1e-11, "s_per_byte": 1e-10, "samples": 3}},
}


def _with(path: tuple, value, base=BASE) -> dict:
    import copy

    data = copy.deepcopy(base)
    table = data
    for key in path[:-1]:
        table = table.setdefault(key, {})
    if value is KeyError:
        del table[path[-1]]
    else:
        table[path[-1]] = value
    return data


BAD = [
    (("fit", "conv", "s_per_flop"), -1e-11, "[fit.conv]: field 's_per_flop' must not be negative"),
    (("fit", "conv", "s_per_byte"), "fast", "[fit.conv]: field 's_per_byte' must be"),
    (("fit", "conv", "overhead_s"), KeyError, "[fit.conv]: missing field 'overhead_s'"),
    (("fit", "conv", "s_per_flops"), 1e-11, "[fit.conv]: unknown field(s) ['s_per_flops']"),
    (("fit", "convolution"), {"overhead_s": 0.0, "s_per_flop": 0.0, "s_per_byte": 0.0}, "[fit.convolution]: unknown op class 'convolution'"),
    (("fit", "matmul"), {"overhead_s": 0.0, "s_per_flop": 0.0, "s_per_byte": 0.0, "s_per_flop_1x1": 1e-11},
     "[fit.matmul]: field 's_per_flop_1x1' is only for [fit.conv]"),
    (("fit", "conv", "samples"), 2.5, "[fit.conv]: field 'samples' must be int"),
    (("fit", "conv"), 3, "[fit.conv]: must be a table"),
    (("fit",), [1, 2], "[fit] must be a table"),
    (("compute", "depthwise"), 0, "[compute]: field 'depthwise' must be positive"),
    (("compute", "conv"), KeyError, "[compute]: missing field 'conv'"),
    (("compute", "dense"), 1e9, "[compute]: unknown field(s) ['dense']"),
    (("codec", "decode_bytes_per_s"), 0, "[codec]: field 'decode_bytes_per_s' must be positive"),
    (("codec", "encode_bytes_per_s"), KeyError, "[codec]: missing field 'encode_bytes_per_s'"),
    (("codec", "cluster_encode_bytes_per_s"), 0.5, "[codec]: field 'cluster_encode_bytes_per_s' must be between 1 and"),
    (("codec", "cluster_decode_bytes"), 1e9, "[codec]: unknown field(s) ['cluster_decode_bytes']"),
    (("name",), "", "field 'name' must be a non-empty string"),
    (("name",), KeyError, "missing field 'name'"),
    (("sources",), "one string", "field 'sources' must be a list of strings"),
    (("compte",), {}, "unknown field(s) ['compte']"),
    (("power", "busy_w"), -3, "[power]: field 'busy_w' must not be negative"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[m.split(": ")[-1][:40] for _, _, m in BAD])
def test_validation_names_the_bad_field_in_one_line(path, value, message):
    with pytest.raises(SplitcError) as e:
        parse_profile(_with(path, value), "box.toml")
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith("box.toml")
    assert message in text, text


def test_good_profile_with_fit_loads():
    profile = parse_profile(BASE, "box.toml")
    assert profile.fit("conv") == ClassFit(1e-6, 1e-11, 1e-10, None, 3)
    assert profile.fit("depthwise") is None


def test_cli_rejects_a_bad_profile_file_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    good = tomllib.loads(profile_to_toml(_fitted_profile()))
    text = profile_to_toml(_fitted_profile()).replace(f"s_per_byte = {good['fit']['depthwise']['s_per_byte']!r}", "s_per_byte = -1.0")
    bad.write_text(text)
    import onnx

    from splitc.tools import zoo

    model = tmp_path / "chain.onnx"
    onnx.save(zoo.chain(), str(model))
    for args in (["targets", str(bad)], ["inspect", str(model), "--target", f"{bad},cloud"]):
        proc = subprocess.run([sys.executable, "-m", "splitc", *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("splitc: error")]
        assert errors == [f"splitc: error: {bad} [fit.depthwise]: field 's_per_byte' must not be negative, got -1.0"]
        assert "Traceback" not in proc.stderr
