"""splitc's command line. Errors are one line and a non-zero exit; --json is for scripts."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import warnings

from splitc.errors import EXIT_INTERNAL, EXIT_USAGE, SplitcError, SplitcWarning
from splitc.partition.problem import OBJECTIVES
from splitc.tools.bench import DEFAULT_BASELINE

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

several edge devices (README: Clusters):
  splitc compile vgg.onnx --cluster cluster.toml -o out/   # a cluster.toml lists devices, network, objective
  splitc run out/                                          # local worker processes, checked against the original
  splitc run out/ --workers pi/0=10.0.0.2:7000,pi/1=10.0.0.3:7000   # workers started on the devices
"""


_EPILOG_BENCH = f"""\
examples:
  splitc bench                                  # the whole suite, markdown tables per link on stdout
  splitc bench --check {DEFAULT_BASELINE}   # CI: exit 3 naming each case that got worse or failed
  splitc bench --update                         # accept the current plans as the new baseline
  splitc bench --quick --links 4g -o out/bench  # zoo + light models on rpi4,cloud; writes bench.md, bench.json

suite: splitc.tools.zoo, the onnx wheel's light_*.onnx, ../shared/models (shapes from its MANIFEST.md);
targets rpi4,cloud, jetson-nano,cloud and rpi4,jetson-nano,cloud (rpi4 -> jetson-nano over wifi);
links 3g, 4g, wifi. Cases whose targets this build cannot compile are skipped with the reason.
"""


_EPILOG_PROFILE = """\
examples:
  splitc profile resnet.onnx mobilenet.onnx --name mypi -o mypi.toml --threads 4
  splitc compile model.onnx --target mypi.toml,cloud --link 4g -o out/

run it on the machine to be profiled, with the onnxruntime settings the deployment uses. Each model runs
--warmup + --runs times with onnxruntime's profiler on, alternating with a plain session; every kernel's time
in a typical run (the mean over the runs between the quartiles), plus the model's own share per kernel of the
plain run that falls between kernels, is mapped back to the ONNX
nodes it computes (fused kernels as a unit), and per-op-class models (fixed overhead per kernel, FLOPs, bytes
moved, 1x1 vs k x k convolution, depthwise vs dense) are fitted to them. Built-in calibration graphs add the
standalone memory-bound ops (elementwise, layout, reductions, norms, pooling, resize) and MatMuls that a CNN
fuses away; convolutions come from your models, so give models like the ones you will deploy. The profile
predicts other models too; an op class with no data falls back to analytical numbers fitted to the same runs.
"""


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
                   help="a chain of tiers, device first: device,server or device,edge,server; built-in profiles"
                        " (see 'splitc targets') or .toml files (default: %(default)s)")
    c.add_argument("--link", default="4g",
                   help="3g, 4g, wifi, or up=10Mbps,down=50Mbps,rtt=40ms[,radio=4g]; one for every adjacent pair, or one per"
                        " pair: wifi,4g (custom links separated by ';') (default: %(default)s)")
    c.add_argument("--cluster", metavar="CLUSTER.toml",
                   help="plan for several edge devices instead of --target/--link: the file lists the devices (profile, count,"
                        " memory), the network and the objective; pipeline stages, data-parallel replicas, fused-layer tiles and"
                        " channel splits are mixed per block, exactly; one plan per set of devices (README: Clusters)")
    g = c.add_argument_group("optimization (exact: an ILP over the whole graph)")
    g.add_argument("--objective", choices=OBJECTIVES, default="latency",
                   help="latency: one frame end to end; energy: device joules per frame (compute + idle while waiting + radio);"
                        " throughput: frames/s of a pipelined stream (default: %(default)s)")
    g.add_argument("--deadline", metavar="TIME", help="a plan's latency must not exceed this, e.g. 100ms")
    g.add_argument("--max-energy", metavar="ENERGY", help="device energy per frame must not exceed this, e.g. 2J or 500mJ")
    g.add_argument("--max-device-memory", metavar="SIZE", help="weights + peak live activations on the device, e.g. 512MB")
    g.add_argument("--max-cloud-time", metavar="TIME", help="compute on the last tier must not exceed this, e.g. 5ms")
    g.add_argument("--allow-return", action="store_true",
                   help="let tensors flow back toward the device (device -> cloud -> device schedules)")
    g.add_argument("--sweep-bandwidth", metavar="LO:HI", help="find the exact bandwidth intervals (of the device's uplink,"
                                                              " downlink in proportion) where each plan is optimal, e.g. 0.5:200Mbps;"
                                                              " emits every distinct plan")
    g.add_argument("--time-limit", metavar="SECONDS", type=float, help="stop the solver after this long and report its gap")
    c.add_argument("--input-shape", action="append", metavar="NAME=DxD..",
                   help="fix an input's symbolic dims, e.g. x=1x3x640x640 (repeat, or separate by commas)")
    c.add_argument("--boundary", default="int8", metavar="CODEC",
                   help="codec for tensors crossing the cut: int8 (per-frame range + zstd), fp32 (lossless), a calibrated"
                        " int<8|4|2>[-channel][-static][-mse|-pct|-minmax|-step<f>][+zstd|+lz4|+ans|+ctx] (e.g. int4-channel;"
                        " int8-channel-step0.5+ans: uniform steps of 0.5 x each channel's std, ANS-coded with per-channel tables;"
                        " +ctx: ANS that also codes a sparse map's zeros with their neighbours as context, smaller on post-ReLU"
                        " maps, slower to code, priced as measured), or auto (per tensor, the smallest codec meeting"
                        " --accuracy-budget) (default: %(default)s)")
    c.add_argument("--bottleneck", metavar="learned[:C]",
                   help="a trained bottleneck on every 4-D tensor that crosses: a 3x3 Conv to C channels (default 16) ends the"
                        " sending part, a decoder starts the receiving one; the code is quantized with --boundary when it is a"
                        " static codec, else int8-channel-step0.25+ans; trained on the --calibrate data (needs pip install 'splitc[train]')")
    c.add_argument("--calibrate", metavar="DIR|FILE.npz",
                   help="calibration data for calibrated codecs: a directory of images (cropped, flipped, resized to the input"
                        " and normalized per --calibrate-norm) or an .npz with one array per input (samples on axis 0)")
    c.add_argument("--calibrate-norm", default="imagenet", choices=("imagenet", "unit", "raw", "raw-bgr"),
                   help="images to inputs: imagenet mean/std, unit [0,1], raw [0,255] RGB, raw-bgr (default: %(default)s)")
    c.add_argument("--input-codec", metavar="CODEC",
                   help="how an image input (1 or 3 channels, NCHW or NHWC) crosses a link when a plan cuts at the input, as a"
                        " camera would send it: jpeg[:Q], webp[:Q], png, or raw (the tensor, through --boundary); default jpeg:90,"
                        " or with --calibrate images the first of jpeg:95, jpeg:98, png meeting the accuracy budget when it misses")
    c.add_argument("--input-norm", metavar="NORM",
                   help="how the image input is made from 8-bit pixels: imagenet, unit (x/255), raw (0..255), raw-bgr, or"
                        " mean=M[,M,M],std=S[,S,S][,scale=255][,bgr] (tensor = (pixels/scale - mean)/std; PP-OCR:"
                        " mean=0.5,std=0.5); also used for --calibrate images (default: --calibrate-norm)")
    c.add_argument("--calibrate-samples", type=int, default=48, metavar="N",
                   help="image crops to draw for calibration: 2 to as many as fit in 1 GiB of inputs (default: %(default)s)")
    c.add_argument("--accuracy-budget", metavar="METRIC=X",
                   help="what --boundary auto must keep per tensor, vs the original on calibration data: top1=0.99,"
                        " cosine=0.999, or prob=0.99 (that share of samples keeps top-1 and every class probability"
                        " within 0.01: for scorers whose top-1 rarely changes) (default for auto: cosine=0.999)")
    c.add_argument("--emit", default="onnx", metavar="KINDS",
                   help="onnx, or onnx,tvm to also compile every part with Apache TVM for its tier's hardware"
                        " (needs pip install 'splitc[tvm]') (default: %(default)s)")
    c.add_argument("--device-target", default="auto", metavar="TARGET",
                   help="with --emit tvm, the device's TVM target: auto (from its profile: rpi4 -> aarch64 Cortex-A72 NEON,"
                        " jetson-nano -> aarch64 Cortex-A57), host (this machine), a target name, or a JSON target dict"
                        " (default: %(default)s)")
    c.add_argument("--cloud-target", default="llvm", metavar="TARGET",
                   help="with --emit tvm, the server's TVM target: llvm (x86-64 with AVX2), cuda, host, or a JSON target dict"
                        " (default: %(default)s)")
    c.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory (written whole or not at all)")
    c.add_argument("--force", action="store_true",
                   help="replace DIR if splitc wrote it (its plan.json) and it holds neither the model, the current"
                        " directory nor a file splitc did not write; anything else (a symlink, a file, another folder) is refused")
    c.add_argument("--json", action="store_true", help="print a JSON summary on stdout instead of tables")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress, no tables")
    c.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write DIR/report.html with PNGs: per-node latency and output size, the cut, the baselines, the partitioned graph (default: on)")

    r = sub.add_parser("run", help="run head -> boundary -> tail and check against the original model",
                       epilog="examples: splitc run out/ --input photos/ (a verdict on real frames); splitc run out/ --input batch.npz;"
                              " splitc run out/ --samples 8 (synthetic inputs: runs, no verdict)")
    r.add_argument("dir", help="a directory written by 'splitc compile'")
    r.add_argument("--input", action="append", metavar="DIR|IMAGE|FILE.npz|[NAME=]FILE.npy",
                   help="real data to judge the plan on: a folder of images or one image (fitted to the input and normalized"
                        " as plan.json's input_codec says), an .npz batch (one array per input, samples on axis 0), or"
                        " [NAME=]FILE.npy tensors (repeat per input); default: synthetic N(0,1) inputs of the plan's shapes,"
                        " which show the parts run but give no accuracy verdict")
    r.add_argument("--model", help="the original model to compare with (default: the path recorded in plan.json)")
    r.add_argument("--no-compare", action="store_true", help="run the parts without comparing with the original model")
    r.add_argument("--samples", type=int, default=4, help="synthetic samples to run when no --input (default: %(default)s)")
    r.add_argument("--optimization", choices=("disable", "basic", "extended", "all"), default="all",
                   help="onnxruntime graph optimization level for parts and original (default: %(default)s)")
    r.add_argument("--runtime", choices=("ort", "tvm"), default="ort",
                   help="run the ONNX parts in onnxruntime, or the TVM libraries of --emit onnx,tvm (then also checked"
                        " against the ONNX parts in onnxruntime) (default: %(default)s)")
    r.add_argument("--stream", action="store_true",
                   help="treat the samples as successive frames of a stream: send each hop with inter-frame delta coding")
    r.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    r.add_argument("-q", "--quiet", action="store_true", help="no tables: only the last line (the verdict)")
    r.add_argument("--remote", metavar="URL", help="run the server stages at URL (http(s)://HOST:PORT, a 'splitc serve');"
                   " a frame the server cannot answer is computed here in full and counted")
    r.add_argument("--timeout", default="2s", help="--remote: per-request connect/read timeout (default: %(default)s)")
    r.add_argument("--token-file", metavar="F", help="--remote: file holding the server's bearer token")
    r.add_argument("--ca", metavar="F", help="--remote over https: CA certificate file to verify the server with")
    r.add_argument("--workers", action="append", metavar="SLOT=HOST:PORT,..",
                   help="a cluster plan: the workers already started on the devices (python -m splitc.runtimes.cluster_worker"
                        " --listen HOST:PORT --dir OUT); default: one local worker process per device")
    r.add_argument("--threads", type=int, default=0, help="a cluster plan: onnxruntime threads per local worker (default 1)")
    r.add_argument("--inflight", type=int, default=4, help="--remote --stream: frames in flight at once (default: %(default)s)")

    sv = sub.add_parser("serve", help="serve the server stages of a compiled plan (and its sweep variants) under the"
                        " Open Inference Protocol v2 (KServe)",
                        epilog="example: splitc serve out/ --port 8000 --token-file token.txt; then on the device:"
                               " splitc run out/ --remote http://SERVER:8000 --token-file token.txt")
    sv.add_argument("dir", help="a directory written by 'splitc compile'")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s; 0.0.0.0 for every interface)")
    sv.add_argument("--port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    sv.add_argument("--grpc-port", type=int, default=8001, help="gRPC port; 0 turns gRPC off (default: %(default)s)")
    sv.add_argument("--token-file", metavar="F", help="require 'Authorization: Bearer <token>' with the token in F (401 without)")
    sv.add_argument("--tls-cert", metavar="F", help="serve HTTPS (and gRPC over TLS) with this certificate (PEM)")
    sv.add_argument("--tls-key", metavar="F", help="the certificate's private key (PEM)")
    sv.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads per model; 0 = its default")
    sv.add_argument("--write-deploy", metavar="DIR", help="instead of serving, write DIR/Containerfile (an image running"
                    " splitc serve on this plan), DIR/inferenceservice.yaml (a KServe InferenceService for it) and DIR/plan/")
    sv.add_argument("--image", help="--write-deploy: the image name the manifest runs (default: the model name)")

    i = sub.add_parser("inspect", help="per-node table: op, FLOPs, output bytes, latency on each target",
                       epilog="example: splitc inspect model.onnx --target rpi4,cloud --sort latency --top 20")
    i.add_argument("model")
    i.add_argument("--target", default="rpi4,cloud", help="targets to cost on (default: %(default)s)")
    i.add_argument("--input-shape", action="append", metavar="NAME=DxD..")
    i.add_argument("--sort", choices=("order", "latency", "bytes", "flops"), default="order",
                   help="row order (default: topological)")
    i.add_argument("--top", type=int, default=0, help="show only the first N rows")
    i.add_argument("--json", action="store_true")

    t = sub.add_parser("targets", help="list the built-in device profiles and links with their numbers and sources",
                       epilog="example: splitc targets mypi.toml   (also shows a measured profile's fitted per-class models)")
    t.add_argument("profiles", nargs="*", metavar="PROFILE.toml",
                   help="profile files to validate and show too (e.g. written by 'splitc profile')")

    # -- splitc profile (splitc/tools/profiler.py, splitc/cost/fit.py) ------------------------------------------------
    pr = sub.add_parser("profile", help="measure this machine in onnxruntime and write a device profile (.toml)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG_PROFILE)
    pr.add_argument("models", nargs="+", metavar="MODEL.onnx", help="models to measure (two or more different ones generalize best)")
    pr.add_argument("--name", help="the profile's name, as plans and --target will show it (default: the -o file's name:"
                                   " mine for -o mine.toml)")
    pr.add_argument("-o", "--output", required=True, metavar="FILE.toml", help="where to write the profile")
    pr.add_argument("--input-shape", action="append", metavar="NAME=DxD..",
                    help="fix symbolic input dims: NAME=DxD.. applies to every model that has an input NAME (an error"
                         " if none has it); MODEL.onnx:NAME=DxD.. to that model only (as given, or its file name), e.g."
                         " --input-shape a.onnx:x=1x3x224x224 --input-shape b.onnx:x=1x3x640x640")
    pr.add_argument("--optimization", choices=("disable", "basic", "extended", "all"), default="all",
                    help="onnxruntime graph optimization level the deployment uses (default: %(default)s)")
    pr.add_argument("--threads", type=int, default=0,
                    help="onnxruntime intra-op threads the deployment uses; 0 = onnxruntime's default (default: %(default)s)")
    pr.add_argument("--spinning", action="store_true",
                    help="let idle intra-op threads spin for work between parallel sections, as onnxruntime does by"
                         " default (default: they sleep; no pool spins once a run returns, so a busy or shared machine"
                         " and the interleaved measurements stay fair)")
    pr.add_argument("--warmup", type=int, default=5, help="unmeasured runs per model first (default: %(default)s)")
    pr.add_argument("--runs", type=int, default=30, help="measured runs per model; kernels are averaged over the runs between the quartiles (default: %(default)s)")
    pr.add_argument("--no-calibration", dest="calibration", action="store_false",
                    help="measure only the given models; op classes they lack fall back to the analytical model"
                         " (default: also measure the built-in calibration graphs: standalone elementwise, layout,"
                         " reduction, norm, pooling, resize and MatMul ops, about 10 seconds)")
    pr.add_argument("--description", default="", help="a line describing the device")
    pr.add_argument("--force", action="store_true", help="replace FILE.toml if it exists")
    pr.add_argument("--json", action="store_true", help="print a JSON summary on stdout instead of tables")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress, no tables")

    b = sub.add_parser("bench", help="partition quality over a suite of models, targets and links; --check gates CI",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG_BENCH)
    b.add_argument("--quick", action="store_true", help="zoo and light models only, rpi4,cloud only")
    b.add_argument("--models", metavar="PATTERNS", help="only models matching these comma-separated patterns, e.g. 'resnet*,bottlenet'")
    b.add_argument("--links", default="3g,4g,wifi", help="links to the cloud, from 3g,4g,wifi (default: %(default)s)")
    b.add_argument("--shared", metavar="DIR", help="trained models with a MANIFEST.md (default: ../shared/models when present)")
    b.add_argument("--check", nargs="?", const=str(DEFAULT_BASELINE), metavar="BASELINE",
                   help=f"fail (exit 3), naming the cases, on a predicted cost >0.1%% worse than BASELINE or a failed case (default: {DEFAULT_BASELINE})")
    b.add_argument("--update", nargs="?", const="", metavar="BASELINE",
                   help=f"rewrite BASELINE from this run (default: the --check file, else {DEFAULT_BASELINE})")
    b.add_argument("-o", "--output", metavar="DIR", help="also write DIR/bench.md and DIR/bench.json")
    b.add_argument("--json", action="store_true", help="print the JSON report on stdout instead of markdown")
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP, raised where the program is, like Ctrl-C, so that the same cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, _frame):
    raise Terminated(signum)


@contextlib.contextmanager
def _terminate_like_interrupt():
    """While a command runs, SIGTERM and SIGHUP raise :class:`Terminated` (only possible in the main thread)."""
    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            with contextlib.suppress(ValueError):  # not the main thread: leave the default
                previous[getattr(signal, name)] = signal.signal(getattr(signal, name), _raise_terminated)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def main(argv: list[str] | None = None) -> int:
    with _terminate_like_interrupt():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
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
        from splitc.cli import commands

        return getattr(commands, f"cmd_{args.command}")(args)
    except SplitcError as e:
        print(f"splitc: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as e:
        if e.name in {"onnx", "onnx_ir", "pulp", "networkx", "rich", "highspy", "matplotlib"}:
            print(f"splitc: error: '{args.command}' needs the compiler ({e.name} is missing): pip install 'splitc[compiler]'",
                  file=sys.stderr)
            return EXIT_USAGE
        raise
    except Terminated as e:
        print(f"splitc: terminated by {signal.Signals(e.signum).name}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("splitc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `splitc ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # the file system said no (permissions, full disk, a file where a folder should be)
        if os.environ.get("SPLITC_DEBUG"):
            raise
        why = e.strerror or (str(e).splitlines() or [type(e).__name__])[0]
        print(f"splitc: error: {f'{e.filename}: ' if e.filename else ''}{why}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001  - a bug in splitc, not a user mistake
        if os.environ.get("SPLITC_DEBUG"):
            raise
        print(f"splitc: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
              " (a bug in splitc; rerun with SPLITC_DEBUG=1 for a traceback and report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
