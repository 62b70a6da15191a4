"""cluster.toml (splitc/cost/cluster.py): the documented example parses to the devices, slots, rates and server tier
it says; every bad field is one line naming it."""

from __future__ import annotations

from importlib import resources

import pytest

from splitc.cost.cluster import load_cluster, parse_rate
from splitc.errors import SplitcError

EXAMPLE = """
objective = "throughput"
deadline_ms = 500
[network]
kind = "star"
rate = "200mbit"
rtt_ms = 2.0
[[device]]
name = "pi"
profile = "rpi4"
count = 4
memory_mb = 1024
[[device]]
name = "nano"
profile = "mine.toml"
memory_mb = 2048
cpu_share = 0.5
rate = "500kbit"
hub = true
worker = false
[server]
profile = "cloud"
link = "4g"
"""


def write(tmp_path, text: str):
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def test_the_documented_example(tmp_path):
    rpi4 = (resources.files("splitc") / "profiles" / "rpi4.toml").read_text()
    (tmp_path / "mine.toml").write_text(rpi4.replace('name = "rpi4"', 'name = "mine"'))  # relative to the cluster file
    spec = load_cluster(write(tmp_path, EXAMPLE))
    assert spec.objective == "throughput" and spec.deadline_s == pytest.approx(0.5)
    assert (spec.network, spec.rate_bps, spec.rtt_s) == ("star", 200e6, pytest.approx(2e-3))
    pi, nano = spec.groups
    assert (pi.count, pi.memory_bytes, pi.cpu_share, pi.rate_bps, pi.hub, pi.worker) == (4, 1024 * 10**6, 1.0, 200e6, False, True)
    assert (nano.profile.name, nano.cpu_share, nano.rate_bps, nano.hub, nano.worker) == ("mine", 0.5, 500e3, True, False)
    assert spec.hub == "nano/0" and spec.slots() == ("pi/0", "pi/1", "pi/2", "pi/3", "nano/0", "server/0")
    assert spec.server.name == "cloud" and spec.server_link.name == "4g"
    assert [p.name for p in spec.profiles] == ["rpi4", "mine", "cloud"]


def test_defaults_first_group_is_the_hub(tmp_path):
    spec = load_cluster(write(tmp_path, '[[device]]\nname = "a"\nprofile = "rpi4"\nmemory_mb = 512\n'
                                        '[[device]]\nname = "b"\nprofile = "jetson-nano"\nmemory_mb = 512\n'))
    assert spec.hub == "a/0" and spec.objective == "latency" and spec.network == "lan"
    assert (spec.rate_bps, spec.rtt_s, spec.deadline_s, spec.server) == (100e6, 1e-3, None, None)


def test_rates():
    assert parse_rate("200mbit", "x") == 200e6 and parse_rate("500kbit", "x") == 500e3
    assert parse_rate("1gbit", "x") == 1e9 and parse_rate("10Mbps", "x") == 10e6
    for bad in ("fast", "200", "-5mbit", "0mbit", 200, "1e99gbit"):
        with pytest.raises(SplitcError):
            parse_rate(bad, "rate")


DEVICE = '[[device]]\nname = "pi"\nprofile = "rpi4"\nmemory_mb = 512\n'


@pytest.mark.parametrize("text, message", [
    ('[[device]]\nname = "pi"\nprofile = "rpi5"\nmemory_mb = 512\n', r"device 'pi': field 'profile': unknown target 'rpi5'"),
    ('[[device]]\nname = "pi"\nprofile = "no/such.toml"\nmemory_mb = 512\n', r"field 'profile': no profile file"),
    ('objective = "latency"\n', r"no device; add a \[\[device\]\] table"),
    ('[[device]]\nname = "pi"\nprofile = "rpi4"\nmemory_mb = 0\n', r"device 'pi': field 'memory_mb' must be positive"),
    ('[[device]]\nname = "pi"\nprofile = "rpi4"\nmemory_mb = -5\n', r"device 'pi': field 'memory_mb' must not be negative"),
    ('[[device]]\nname = "pi"\nprofile = "rpi4"\n', r"device 'pi': missing field 'memory_mb'"),
    ('[network]\nrate = "fast"\n' + DEVICE, r"\[network\]: field 'rate': bad rate 'fast'"),
    ('[network]\nrate = "0kbit"\n' + DEVICE, r"\[network\]: field 'rate'.*must be positive"),
    (DEVICE + 'hub = true\n' + DEVICE.replace('"pi"', '"pj"') + 'hub = true\n', r"field 'hub': two hubs \('pi' and 'pj'\)"),
    (DEVICE + 'colour = "red"\n', r"device 'pi': unknown key 'colour'; known: count, cpu_share"),
    ('speed = 3\n' + DEVICE, r"unknown key 'speed'"),
    ('[network]\nlatency = 3\n' + DEVICE, r"\[network\]: unknown key 'latency'"),
    ('deadline_ms = 100\n' + DEVICE, r"field 'deadline_ms' bounds a frame's latency under objective = \"throughput\""),
    ('objective = "fastest"\n' + DEVICE, r"field 'objective' must be \"latency\" or \"throughput\""),
    (DEVICE + 'rate = "10mbit"\n', r"device 'pi': field 'rate' needs \[network\] kind = \"star\""),
    (DEVICE + 'count = 0\n', r"device 'pi': field 'count' must be between 1 and 32"),
    (DEVICE + 'cpu_share = 1.5\n', r"device 'pi': field 'cpu_share' must be between"),
    (DEVICE + 'worker = false\n', r"device 'pi': field 'worker' = false leaves no device to compute"),
    (DEVICE + DEVICE, r"two \[\[device\]\] groups are named 'pi'"),
    (DEVICE.replace('"pi"', '"a/b"'), r"field 'name' 'a/b'"),
    (DEVICE + '[server]\nprofile = "cloud"\nlink = "5g"\n', r"\[server\]: field 'link': unknown link '5g'"),
    (DEVICE + '[server]\nprofile = "cloud"\n', r"\[server\]: fields 'profile' and 'link' are needed"),
    ('objective = [\n', r"not valid TOML"),
])
def test_bad_fields_are_one_line_naming_the_field(tmp_path, text, message):
    with pytest.raises(SplitcError, match=message) as err:
        load_cluster(write(tmp_path, text))
    assert "\n" not in str(err.value) and str(err.value).startswith(str(tmp_path / "cluster.toml"))


def test_missing_file(tmp_path):
    with pytest.raises(SplitcError, match="no such file"):
        load_cluster(tmp_path / "nope.toml")
