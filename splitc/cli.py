"""splitc's command line. Errors are one line and a non-zero exit; --json is for scripts."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from splitc.errors import SplitcError, SplitcWarning

EXIT_USAGE = 2
EXIT_CHECK_FAILED = 3
EXIT_INTERNAL = 70

_EPILOG_COMPILE = """\
examples:
  splitc compile model.onnx --target rpi4,cloud --link 4g -o out/
  splitc compile det.onnx --target jetson-nano,cloud --link wifi --input-shape images=1x3x416x416 -o out/
  splitc compile enc.onnx --link up=10Mbps,down=50Mbps,rtt=40ms --boundary fp32 -o out/ --force

what it does:
  1. imports the model (shape inference; symbolic dims fixed by --input-shape)
  2. costs every node on each target (FLOPs, bytes, device profile) and every tensor (bytes)
  3. finds the exact latency-optimal placement of every node (ILP over the whole graph;
     a tensor is sent once however many nodes read it; constants and shape arithmetic are
     recomputed, never sent)
  4. writes out/head.onnx (device), out/tail.onnx (server) and out/plan.json; the boundary op
     quantizes each crossing tensor to uint8 in the head and dequantizes it in the tail
then check it with: splitc run out/
"""


def _shapes(values):
    from splitc.frontend import parse_input_shapes

    return parse_input_shapes(values)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="splitc",
        description="Split an ONNX model between an edge device and a server, exactly and deployably.",
        epilog="start with: splitc compile MODEL.onnx --target rpi4,cloud --link 4g -o out/   (splitc COMMAND --help for more)",
    )
    from splitc import __version__

    p.add_argument("--version", action="version", version=f"splitc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("compile", help="partition a model and emit head/tail artifacts + plan.json",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG_COMPILE)
    c.add_argument("model", help="the ONNX model file")
    c.add_argument("--target", default="rpi4,cloud",
                   help="device,server: built-in profiles (see 'splitc targets') or .toml files (default: %(default)s)")
    c.add_argument("--link", default="4g", help="3g, 4g, wifi, or up=10Mbps,down=50Mbps,rtt=40ms (default: %(default)s)")
    c.add_argument("--input-shape", action="append", metavar="NAME=DxD..",
                   help="fix an input's symbolic dims, e.g. x=1x3x640x640 (repeat, or separate by commas)")
    c.add_argument("--boundary", choices=("int8", "fp32"), default="int8",
                   help="codec for tensors crossing the cut: int8 (quantize + zstd) or fp32 (lossless) (default: %(default)s)")
    c.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory (written whole or not at all)")
    c.add_argument("--force", action="store_true", help="replace DIR if it exists")
    c.add_argument("--json", action="store_true", help="print a JSON summary on stdout instead of tables")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress, no tables")

    r = sub.add_parser("run", help="run head -> boundary -> tail and check against the original model",
                       epilog="example: splitc run out/ --input x=frame.npy --samples 8")
    r.add_argument("dir", help="a directory written by 'splitc compile'")
    r.add_argument("--input", action="append", metavar="[NAME=]FILE.npy",
                   help="input tensor(s) as .npy (default: synthetic inputs of the plan's shapes)")
    r.add_argument("--model", help="the original model to compare with (default: the path recorded in plan.json)")
    r.add_argument("--samples", type=int, default=4, help="synthetic samples to run when no --input (default: %(default)s)")
    r.add_argument("--optimization", choices=("disable", "basic", "extended", "all"), default="all",
                   help="onnxruntime graph optimization level for parts and original (default: %(default)s)")
    r.add_argument("--json", action="store_true", help="print a JSON report on stdout")

    i = sub.add_parser("inspect", help="per-node table: op, FLOPs, output bytes, latency on each target",
                       epilog="example: splitc inspect model.onnx --target rpi4,cloud --sort latency --top 20")
    i.add_argument("model")
    i.add_argument("--target", default="rpi4,cloud", help="targets to cost on (default: %(default)s)")
    i.add_argument("--input-shape", action="append", metavar="NAME=DxD..")
    i.add_argument("--sort", choices=("order", "latency", "bytes", "flops"), default="order",
                   help="row order (default: topological)")
    i.add_argument("--top", type=int, default=0, help="show only the first N rows")
    i.add_argument("--json", action="store_true")

    sub.add_parser("targets", help="list the built-in device profiles and links with their numbers and sources")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    shown: set[str] = set()

    def show_warning(message, category, *_a, **_k):
        text = str(message)
        if text not in shown:
            shown.add(text)
            prefix = "warning" if issubclass(category, SplitcWarning) else f"warning ({category.__name__})"
            print(f"splitc: {prefix}: {text.splitlines()[0]}", file=sys.stderr)

    warnings.showwarning = show_warning
    try:
        from splitc import commands

        return getattr(commands, f"cmd_{args.command}")(args)
    except SplitcError as e:
        print(f"splitc: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as e:
        if e.name in {"onnx", "onnx_ir", "pulp", "networkx", "rich", "highspy"}:
            print(f"splitc: error: '{args.command}' needs the compiler ({e.name} is missing): pip install 'splitc[compiler]'",
                  file=sys.stderr)
            return EXIT_USAGE
        raise
    except KeyboardInterrupt:
        print("splitc: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  - a bug in splitc, not a user mistake
        if os.environ.get("SPLITC_DEBUG"):
            raise
        print(f"splitc: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
              " (a bug in splitc; rerun with SPLITC_DEBUG=1 for a traceback and report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
