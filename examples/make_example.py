"""Write the demo model: ``python examples/make_example.py OUT.onnx``.

The model is ``splitc.tools.zoo.bottlenet()``: a 224x224 camera classifier whose cheap stem squeezes
the frame into a 12-channel 28x28 bottleneck before a heavy backbone. Over 4G, splitc runs the
stem on a Raspberry Pi 4 and the backbone in the cloud. See examples/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx

from splitc.tools import zoo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the splitc demo model (zoo.bottlenet) to OUT.onnx")
    parser.add_argument("out", type=Path, help="where to write the model, e.g. examples/bottlenet.onnx")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    args = parser.parse_args(argv)
    model = zoo.bottlenet(seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(args.out))
    onnx.checker.check_model(str(args.out))
    print(f"wrote {args.out}: bottlenet, {len(model.graph.node)} nodes, input image 1x3x224x224,"
          f" {args.out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
