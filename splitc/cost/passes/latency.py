"""Annotate every node with its predicted latency on each target, from the device profiles."""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from splitc.ir import metadata as ann
from splitc.cost.fit import conv_kernel
from splitc.cost.targets import DeviceProfile


@dataclass(frozen=True)
class LatencyPass(ir.passes.InPlacePass):
    targets: tuple[DeviceProfile, ...] = ()

    def requires(self, model: ir.Model) -> None:
        for node in model.graph:
            ann.get(node, ann.COST, ann.NodeCost)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for node in model.graph:
            cost = ann.get(node, ann.COST, ann.NodeCost)
            if cost.rule == "replicable" or cost.rule.startswith("fused_into:"):
                # folded at load time / computed inside the kernel it is fused into
                seconds = tuple((t.name, 0.0) for t in self.targets)
            else:
                kernel = conv_kernel(node)  # fitted profiles cost 1x1 and k x k convolutions apart
                seconds = tuple((t.name, t.latency(cost.flops, cost.bytes_moved, cost.op_class, kernel)) for t in self.targets)
            node.meta[ann.LATENCY] = ann.NodeLatency(seconds)
        return ir.passes.PassResult(model, False)
