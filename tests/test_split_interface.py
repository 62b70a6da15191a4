"""Stage interfaces (splitc.codegen.interface): which tensors each stage reads, receives, keeps and sends.

Pure bookkeeping over a hand-built cost graph and its schedule: no IR, no ONNX."""

from __future__ import annotations

from splitc.codegen.interface import StageInterface, Transfer, stage_interfaces
from splitc.cost.targets import Link
from splitc.partition.costgraph import CNode, CostGraph, CTensor
from splitc.partition.schedule import schedule


def graph(nodes: list[str], tensors: list[tuple], k: int = 2, allow_return: bool = False) -> CostGraph:
    """``tensors``: (name, producer index or None, consumer indices, is_output)."""
    return CostGraph(
        tiers=tuple(f"t{i}" for i in range(k)),
        nodes=tuple(CNode(n, "Op", (1e-3,) * k) for n in nodes),
        tensors=tuple(CTensor(name, p, tuple(c), out, 400, 100) for name, p, c, out in tensors),
        links=tuple(Link(f"l{i}", 1e7, 1e7, 0.001) for i in range(k - 1)),
        encode_bytes_per_s=(1e9,) * k,
        decode_bytes_per_s=(1e9,) * k,
        allow_return=allow_return,
    )


def interfaces(cg: CostGraph, placement, inputs=("x",), outputs=("y",)):
    sched = schedule(cg, placement)
    hops = [(cg.tensors[h.tensor].name, h.src, h.dst) for h in sched.hops]
    return stage_interfaces(cg, sched, inputs, outputs), hops


# x -> a -> ta -> b -> tb -> c -> y, and ta is read by c too (a residual)
RESIDUAL = (["a", "b", "c"], [("x", None, [0], False), ("ta", 0, [1, 2], False), ("tb", 1, [2], False), ("y", 2, [], True)])


def test_two_tiers_one_cut():
    (dev, srv), hops = interfaces(graph(*RESIDUAL), [0, 1, 1])
    assert hops == [("ta", 0, 1), ("y", 1, 0)]
    # ta has two readers on the server: received once
    assert dev == StageInterface(0, 0, ("a",), ("x",), (), (), (), (), (Transfer("ta", 0),))
    assert srv == StageInterface(1, 1, ("b", "c"), (), (Transfer("ta", 0),), (), (), (), (Transfer("y", 1),))


def test_device_only_returns_the_result_and_sends_nothing():
    (dev,), hops = interfaces(graph(*RESIDUAL), [0, 0, 0])
    assert hops == []
    assert dev == StageInterface(0, 0, ("a", "b", "c"), ("x",), (), (), ("y",), (), ())


def test_cloud_only_the_empty_device_stage_sends_the_input():
    (dev, srv), hops = interfaces(graph(*RESIDUAL), [1, 1, 1])
    assert hops == [("x", 0, 1), ("y", 1, 0)]
    assert dev == StageInterface(0, 0, (), ("x",), (), (), (), (), (Transfer("x", 0),))
    assert srv.receives == (Transfer("x", 0),) and srv.inputs == () and srv.sends == (Transfer("y", 1),)


def test_return_flow_keeps_a_tensor_on_the_device_for_a_later_stage():
    # a on the device, b on the server, c back on the device: c reads ta (kept since stage 0) and tb (received)
    cg = graph(*RESIDUAL, allow_return=True)
    (s0, s1, s2), hops = interfaces(cg, [0, 1, 0])
    assert hops == [("ta", 0, 1), ("tb", 1, 0)]
    assert s0 == StageInterface(0, 0, ("a",), ("x",), (), (), (), ("ta",), (Transfer("ta", 0),))
    assert s1 == StageInterface(1, 1, ("b",), (), (Transfer("ta", 0),), (), (), (), (Transfer("tb", 1),))
    assert s2 == StageInterface(2, 0, ("c",), (), (Transfer("tb", 1),), ("ta",), ("y",), (), ())


def test_a_later_device_stage_reads_the_model_input_itself():
    nodes = ["a", "b", "c"]
    tensors = [("x", None, [0, 2], False), ("ta", 0, [1], False), ("tb", 1, [2], False), ("y", 2, [], True)]
    (s0, _s1, s2), _ = interfaces(graph(nodes, tensors, allow_return=True), [0, 1, 0])
    assert s2.inputs == ("x",) and s2.local == () and s2.receives == (Transfer("tb", 1),)
    assert s0.keeps == ()  # x is a model input: never "kept", every device stage takes it as an input


def test_three_tiers_a_relayed_tensor_is_sent_by_its_producer_and_received_at_the_far_end():
    # a on the device, b on the edge, c on the server; c reads ta: it crosses both links
    (s0, s1, s2), hops = interfaces(graph(*RESIDUAL, k=3), [0, 1, 2])
    assert hops == [("ta", 0, 1), ("ta", 1, 2), ("tb", 1, 2), ("y", 2, 1), ("y", 1, 0)]
    assert s0.sends == (Transfer("ta", 0),)  # the edge forwards the second hop: the device stage sends one
    assert s1.receives == (Transfer("ta", 0),) and s1.sends == (Transfer("tb", 2),)
    assert s2.receives == (Transfer("ta", 1), Transfer("tb", 2)) and s2.sends == (Transfer("y", 3),)


def test_results_outside_the_cost_graph_are_the_device_stage_s():
    # "w" is computed from weights alone and "x" passes straight through: neither is a cost-graph tensor
    (dev, srv), _ = interfaces(graph(*RESIDUAL), [1, 1, 1], outputs=("y", "w", "x"))
    assert dev.results == ("w", "x") and dev.inputs == ("x",)
    assert srv.results == ()  # results are produced on the device only
