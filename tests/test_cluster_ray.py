"""The Ray engine of the cluster runtime on a local one-node Ray cluster whose node offers every slot's resource
(each part an actor pinned by its device's resource); skipped without ray (pip install 'splitc[ray]')."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from splitc.errors import SplitcError
from splitc.runtimes.cluster import ClusterRunner

try:
    import cluster_fixture as cf
except ImportError:  # pragma: no cover - run from the repository root
    from tests import cluster_fixture as cf

ray = pytest.importorskip("ray")
from splitc.runtimes.cluster_ray import RayEngine, resource

pytestmark = pytest.mark.slow  # Ray starts in ~7 s on 2 cores


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, resources={resource(f"pi/{k}"): 1 for k in range(3)}, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_engine_runs_the_plan_survives_an_actor_death_and_a_rejoin(local_ray, tmp_path, caplog):
    out = cf.write(tmp_path)
    frames = cf.frames(24, seed=4)
    want = cf.reference(frames)
    caplog.set_level(logging.WARNING, logger="splitc.cluster")
    engine = RayEngine(out)
    with ClusterRunner(out, engine=engine) as runner:
        assert sorted(engine.actors) == sorted([("pi/0", "parts/pool.onnx"), ("pi/1", "parts/tile0.onnx"), ("pi/1", "parts/fc0.onnx"),
                                                ("pi/2", "parts/tile1.onnx"), ("pi/2", "parts/fc1.onnx")])
        assert np.abs(runner.run(frames[0])["y"] - want[0]).max() <= 1e-5
        held = {d: 1 - ray.available_resources().get(resource(d), 0) for d in ("pi/0", "pi/1", "pi/2")}
        assert held == pytest.approx({"pi/0": 0.01, "pi/1": 0.02, "pi/2": 0.02})  # each actor pinned by its device's resource
        got = []
        for i, result in enumerate(runner.stream(frames, max_in_flight=4)):
            got.append(result)
            if i == 5:
                for actor in engine.actors_of("pi/1"):  # the device leaves: its actors die
                    ray.kill(actor)
        assert runner.state.binding == {"pi/0": "pi/0", "pi/1": "pi/2"} and len(runner.switches) == 1
        assert {d for d, _ in engine.actors} == {"pi/0", "pi/2"}  # the 2-device plan's whole-model actors, pi/1's gone
        runner.join("pi/1")  # its node offers splitc/pi/1 again: new actors for the 3-device plan's parts there
        assert len(runner.state.plan["devices"]) == 3 and ("pi/1", "parts/fc0.onnx") in engine.actors
        assert np.abs(runner.run(frames[1])["y"] - want[1]).max() <= 1e-5
    assert max(float(np.abs(g["y"] - w).max()) for g, w in zip(got, want)) <= 1e-5 and len(got) == 24
    lines = [r.getMessage() for r in caplog.records if r.name == "splitc.cluster"]
    assert len(lines) == 2 and "pi/1 lost" in lines[0] and "Ray actor died" in lines[0] and "pi/1 joined" in lines[1]


def test_ray_engine_needs_every_slot_resource(local_ray, tmp_path):
    section = cf.section()
    section["devices"].append({"slot": "pi/3", "group": "pi", "profile": "rpi4", "memory_bytes": 1 << 30})
    out = cf.write(tmp_path, section)
    with pytest.raises(SplitcError, match=r"no Ray node offers the resource 'splitc/pi/3' of device pi/3"):
        ClusterRunner(out, engine=RayEngine(out))


def test_ray_part_outside_the_folder_is_refused_by_the_actor(local_ray, tmp_path):
    out = cf.write(tmp_path / "out")
    engine = RayEngine(out)
    engine.start(["pi/0"])
    with pytest.raises(SplitcError, match="leaves the output folder"):
        engine.load("pi/0", "../elsewhere.onnx").result(timeout=60)
    engine.close()


def test_ray_engine_codes_int8_parts_as_the_tcp_engine_does(local_ray, tmp_path):
    """Parts marked codec "int8" (not the hub's pi/0) get their tensors as int8 wire payloads: close, not exact."""
    section = cf.section()
    for plan in section["plans"]:
        for stage in plan["stages"]:
            for p in stage["parts"]:
                p["codec"] = "int8" if p["slot"] != "pi/0" else "fp32"
    out = cf.write(tmp_path, section)
    frames = cf.frames(3, seed=5)
    want = cf.reference(frames)
    with ClusterRunner(out, engine=RayEngine(out)) as ray_runner:
        got = [ray_runner.run(f)["y"] for f in frames]
    with ClusterRunner(out, spawn=True) as tcp_runner:
        tcp = [tcp_runner.run(f)["y"] for f in frames]
    for g, w, t in zip(got, want, tcp):
        assert np.array_equal(g, t)  # the same codec on both engines
        assert 0 < np.abs(g - w).max() <= 0.05 * np.abs(w).max()  # coded (not exact), within a few int8 steps
