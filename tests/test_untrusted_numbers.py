"""Numbers from profiles, links and the command line (issue 11): NaN, infinities, denormals and absurd magnitudes
are refused with one line naming the field, before they reach the solver."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from splitc.cli.main import main
from splitc.cost.targets import load_target, parse_link, parse_quantity
from splitc.errors import SplitcError

RPI4 = (Path(__file__).parents[1] / "splitc" / "profiles" / "rpi4.toml").read_text()


def _profile(tmp_path, table: str, key: str, value: str, name: str = "mine") -> Path:
    """rpi4's profile named ``name`` with ``key = value`` written into ``[table]`` (replacing it if there)."""
    out, section = [], None
    for line in RPI4.splitlines():
        m = re.match(r"\s*\[([^\]]+)\]", line)
        if m:
            if section == table and not any(l.startswith(f"{key} =") for l in out[start:]):
                out.append(f"{key} = {value}")
            section, start = m.group(1), len(out) + 1
        elif line.startswith("name ="):
            line = f'name = "{name}"'
        elif section == table and re.match(rf"{re.escape(key)}\s*=", line):
            line = f"{key} = {value}"
        out.append(line)
    if section == table and not any(l.startswith(f"{key} =") for l in out[start:]):
        out.append(f"{key} = {value}")
    if table not in {m for m in re.findall(r"^\[([^\]]+)\]", RPI4, re.M)}:
        out += [f"[{table}]", f"{key} = {value}"]
    path = tmp_path / f"{name.replace('/', '_')}.toml"
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.mark.parametrize("table,key,value,says", [
    ("compute", "conv", "nan", "must be a finite number"),
    ("compute", "matmul", "inf", "must be a finite number"),
    ("compute", "conv", "1e-320", "must be between 1 and"),
    ("compute", "op_overhead_s", "1e308", "must be between 0 and 3600"),
    ("compute", "memory_bytes_per_s", "1e308", "must be between 1 and 1e+18"),
    ("codec", "encode_bytes_per_s", "-inf", "must be a finite number"),
    ("power", "busy_w", "nan", "must be a finite number"),
    ("fit.conv", "s_per_flop", "1e-320\noverhead_s = 1e-5\ns_per_byte = 0.0", "vanishingly small"),
])
def test_a_profile_number_that_is_not_finite_or_sane_is_named(tmp_path, table, key, value, says):
    with pytest.raises(SplitcError, match=rf"\[{re.escape(table)}\]: field '{key}' .*{re.escape(says)}"):
        load_target(str(_profile(tmp_path, table, key, value)))


def test_the_profile_helper_writes_what_it_says(tmp_path):
    """The fixture above edits the TOML it is given (else the refusals would prove nothing)."""
    profile = load_target(str(_profile(tmp_path, "compute", "conv", "123.0")))
    assert profile.name == "mine" and profile.rate("conv") == 123.0


@pytest.mark.parametrize("spec,field", [
    ("up=1e-320bps,down=50Mbps,rtt=40ms", "up"),
    ("up=10Mbps,down=1e400Mbps,rtt=40ms", "down"),
    ("up=10Mbps,down=50Mbps,rtt=1e308s", "rtt"),
    ("up=0.001bps,down=50Mbps,rtt=40ms", "up"),
])
def test_a_link_number_out_of_range_is_named(spec, field):
    with pytest.raises(SplitcError, match=rf"^link '{re.escape(spec)}': {field} "):
        parse_link(spec)
    assert parse_link("up=10Mbps,down=50Mbps,rtt=0s").rtt_s == 0.0  # a zero RTT is fine


@pytest.mark.parametrize("text,kind", [("1e400MB", "bytes"), ("1e-320s", "time"), ("1e308s", "time"), ("1e20J", "energy")])
def test_a_limit_out_of_range_is_named(text, kind):
    with pytest.raises(SplitcError, match=rf"^--flag '{re.escape(text)}'"):
        parse_quantity(text, kind, "--flag")


def _model(tmp_path) -> Path:
    f = onnx.TensorProto.FLOAT
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
                              [helper.make_tensor_value_info("x", f, [1, 8])], [helper.make_tensor_value_info("y", f, [1, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    return tmp_path / "m.onnx"


@pytest.mark.parametrize("option", [["--time-limit", "nan"], ["--time-limit", "inf"], ["--time-limit", "-1"],
                                    ["--time-limit", "0"], ["--max-device-memory", "1e400MB"], ["--deadline", "1e-320s"]])
def test_cli_numbers_are_checked_before_any_work(tmp_path, capsys, option):
    assert main(["compile", str(_model(tmp_path)), "-o", str(tmp_path / "o"), "-q", *option]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"splitc: error: {option[0]} ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_a_solver_that_stops_without_a_time_limit_is_one_line(monkeypatch):
    """HiGHS's "Not Solved" without --time-limit used to format None with :g (a TypeError)."""
    from splitc.partition import optimizer
    from splitc.partition.synth import synthetic_dag

    real = optimizer._run
    monkeypatch.setattr(optimizer, "_run", lambda *a, **k: (lambda r: (r[0], "timeout", *r[2:]))(real(*a, **k)))
    with pytest.raises(SplitcError, match=r"the solver \(\w+\) stopped without a plan"):
        optimizer.solve(synthetic_dag(6), time_limit_s=None)


def test_a_profile_named_like_a_built_in_tier_is_refused(tmp_path, capsys):
    cloud = _profile(tmp_path, "compute", "conv", "1e9", name="cloud")
    assert main(["compile", str(_model(tmp_path)), "--target", f"{cloud},cloud", "-o", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "tiers 1 and 2 are both named 'cloud'" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["../up", "a/b", "..", "tab\\there"])
def test_a_profile_name_that_cannot_name_a_file_is_refused(tmp_path, name):
    with pytest.raises(SplitcError, match="field 'name' .* cannot name files"):
        load_target(str(_profile(tmp_path, "compute", "conv", "1e9", name=name)))
