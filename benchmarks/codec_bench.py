"""Boundary codec benchmark: bytes per frame, top-1 agreement, encode/decode MB/s per core, delta coding.

    .venv/bin/python benchmarks/codec_bench.py [--model mobilenetv2|yolox-nano] [--samples 210] [--cut TENSOR]
        [--codecs fp32,int8-static,pca8+int8-channel-static,...] [--no-timing] [--no-delta] [--out results.json]

MobileNetV2 (../shared/models/mobilenet_v2_trained_imagenet.onnx) cut at one tensor (default the output of
features.6, 1x32x28x28: every later layer depends on it alone); samples are crops and flips of
../shared/images. Calibration (clip ranges) uses a disjoint set of crops (another seed). For each codec:

- bytes/frame: the runtime wire payload (v2: header + bit-packed symbols, zstd level 3), mean over samples;
- x fp32: raw fp32 bytes of the tensor / bytes per frame; JPEG q90 and PNG: the 224x224 RGB input encoded by
  Pillow (the cloud-only baselines), mean bytes;
- top-1 agreement: argmax of the split model's logits (quantize-dequantize in numpy, the graph's arithmetic;
  tail in onnxruntime) vs the original's;
- encode MB/s: MB of fp32 tensor per second on one core for the in-graph quantize (onnxruntime, 1 thread:
  QuantizeLinear [+ Min]) + runtime encode (bit-pack + zstd); decode the same for runtime decode + DequantizeLinear.

PCA codecs (``pca<k>+int<b>...``): the basis, mean and clip ranges are fitted on the calibration crops (all spatial
positions), evaluated on the benchmark crops.

YOLOX-Nano (``--model yolox-nano --cut TENSOR``; 416x416 raw 0-255 BGR input): instead of top-1, the agreement
of the top-scoring anchor (objectness x best class score) and its class, and the fraction of the original's
confident anchors (score > 0.3; pooled over all samples) that the split model also scores > 0.3 with the same class; cosine of the
1x3549x85 output.

Delta: a 60-frame "video" of a 224 window sliding 2 px per frame over one photo; the DeltaEncoder (key frame
every 30) vs independent frames, same codec.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from splitc.cost import quantizers as C  # noqa: E402
from splitc.cost.calibrate import augmented_crops, payload as codec_payload, to_input  # noqa: E402
from splitc.runtimes.ans import AnsModel  # noqa: E402
from splitc.runtimes.wire import decode, encode  # noqa: E402
from splitc.runtimes.delta import DeltaDecoder, DeltaEncoder  # noqa: E402
from splitc.runtimes.ort import session  # noqa: E402

MODELS = REPO.parent / "shared" / "models"
IMAGES = REPO.parent / "shared" / "images"
CODECS = ["fp32", "int8", "int8-static", "int8-channel", "int4", "int4-channel", "int2-channel"]


def crops(n: int, seed: int, hw: tuple[int, int] = (224, 224)) -> list[np.ndarray]:
    files = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    rng = np.random.default_rng(seed)
    per = -(-n // len(files))
    out = []
    for f in files:
        with Image.open(f) as im:
            out += augmented_crops(im, hw, per, rng)
    return out[:n]


def sub_models(path: Path, cut: str, tmp: Path) -> tuple[Path, Path]:
    head, tail = tmp / "head.onnx", tmp / "tail.onnx"
    m = onnx.load(str(path))
    onnx.utils.extract_model(str(path), str(head), [i.name for i in m.graph.input], [cut])
    onnx.utils.extract_model(str(path), str(tail), [cut], [o.name for o in m.graph.output])
    return head, tail


def quant_graphs(tc: C.TensorCodec | None, shape: tuple[int, ...]):
    """onnxruntime sessions (1 thread) of the boundary ops as the compiler emits them (opset 17)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    wshape = tc.wire_shape(shape) if tc is not None else shape
    q = helper.make_tensor_value_info("q", TensorProto.UINT8, wshape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    if tc is None:  # dynamic int8
        enc = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])], "e", [x],
                                [q, helper.make_tensor_value_info("s", TensorProto.FLOAT, []), helper.make_tensor_value_info("z", TensorProto.UINT8, [])])
        dec = helper.make_graph([helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "d",
                                [q, helper.make_tensor_value_info("s", TensorProto.FLOAT, []), helper.make_tensor_value_info("z", TensorProto.UINT8, [])], [y])
    else:
        axis = {"axis": 1} if tc.axis is not None else {}
        cshape = [tc.scale.size] if tc.axis is not None else []
        inits = [helper.make_tensor("s", TensorProto.FLOAT, cshape, tc.scale.ravel().tolist()),
                 helper.make_tensor("z", TensorProto.UINT8, cshape, tc.zero_point.ravel().tolist())]
        nodes, src = [], "x"
        dnodes, dinits = [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **axis)], inits[:2]
        if tc.basis is not None:  # PCA: 1x1 Conv onto the k components / back (as splitc.codegen.passes.boundary emits)
            b = tc.basis.astype(np.float32)
            inits += [onnx.numpy_helper.from_array(b[:, :, None, None], "pw"),
                      onnx.numpy_helper.from_array((-(b.astype(np.float64) @ tc.mean)).astype(np.float32), "pb")]
            nodes.append(helper.make_node("Conv", ["x", "pw", "pb"], ["xp"], kernel_shape=[1, 1]))
            src = "xp"
            dinits = inits[:2] + [onnx.numpy_helper.from_array(np.ascontiguousarray(b.T)[:, :, None, None], "iw"),
                                  onnx.numpy_helper.from_array(tc.mean.astype(np.float32), "ib")]
            dnodes = [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["yp"], **axis),
                      helper.make_node("Conv", ["yp", "iw", "ib"], ["y"], kernel_shape=[1, 1])]
        if tc.bits < 8:
            hi = ((1 << tc.bits) - 1 - tc.zero_point.astype(np.float64)) * tc.scale
            bshape = tc.broadcast_shape(len(shape))
            inits.append(helper.make_tensor("hi", TensorProto.FLOAT, list(bshape), np.asarray(hi, np.float32).ravel().tolist()))
            nodes.append(helper.make_node("Min", [src, "hi"], ["xc"]))
            src = "xc"
        nodes.append(helper.make_node("QuantizeLinear", [src, "s", "z"], ["q"], **axis))
        enc = helper.make_graph(nodes, "e", [x], [q], initializer=inits)
        dec = helper.make_graph(dnodes, "d", [q], [y], initializer=dinits)
    mk = lambda g: session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString(), "all", threads=1)  # noqa: E731
    return mk(enc), mk(dec)


def timeit(fn, reps: int = 30) -> float:
    fn()
    best = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        best.append((time.perf_counter() - t) / reps)
    return min(best)


MODEL_CONFIGS = {
    "mobilenetv2": {"file": "mobilenet_v2_trained_imagenet.onnx", "input": "input", "hw": (224, 224), "norm": "imagenet",
                    "cut": "/features/features.6/Add_output_0"},
    "yolox-nano": {"file": "yolox_nano_coco.onnx", "input": "images", "hw": (416, 416), "norm": "raw-bgr", "cut": None},
    "resnet50-thin": {"file": "resnet50thin_opennsfw.onnx", "input": "input:0", "hw": (224, 224), "norm": "raw-bgr", "nhwc": True,
                      "cut": "Relu_21:0"},
}


def detection_agreement(out: np.ndarray, ref: np.ndarray, thr: float = 0.3) -> tuple[int, int, int]:
    """YOLOX (1, anchors, 5 + classes), sigmoid objectness and class scores as the model outputs them: (top anchor
    and its class equal: 0/1, how many of the original's confident anchors (obj * best class score > thr) the split
    model also scores > thr with the same class, how many confident anchors the original has)."""
    def scores(o):
        o = o.reshape(-1, o.shape[-1])
        cls = o[:, 5:]
        return o[:, 4] * cls.max(axis=1), cls.argmax(axis=1)
    s_r, c_r = scores(ref)
    s_o, c_o = scores(out)
    top = int(np.argmax(s_r) == np.argmax(s_o) and c_r[np.argmax(s_r)] == c_o[np.argmax(s_o)])
    conf = s_r > thr
    return top, int(np.sum((s_o[conf] > thr) & (c_o[conf] == c_r[conf]))), int(conf.sum())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(MODEL_CONFIGS), default="mobilenetv2")
    ap.add_argument("--samples", type=int, default=210)
    ap.add_argument("--calib", type=int, default=48)
    ap.add_argument("--cut", default=None, help="tensor to cut at (default: the model's, see MODEL_CONFIGS)")
    ap.add_argument("--codecs", default=",".join(CODECS), help="comma-separated --boundary names, e.g. pca8+int8-channel-static")
    ap.add_argument("--no-timing", action="store_true", help="skip the encode/decode MB/s measurements")
    ap.add_argument("--no-delta", action="store_true", help="skip the delta-coding video")
    ap.add_argument("--learned-training", choices=["distillation", "reconstruction"], default="distillation",
                    help="learned<k> codecs: distil through the tail (onnx2torch) or feature reconstruction")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import tempfile

    cfg = MODEL_CONFIGS[args.model]
    args.cut = args.cut or cfg["cut"]
    if args.cut is None:
        raise SystemExit(f"--model {args.model}: give --cut TENSOR")
    tmp = Path(tempfile.mkdtemp())
    model = MODELS / cfg["file"]
    head_p, tail_p = sub_models(model, args.cut, tmp)
    full, head, tail = session(model), session(head_p), session(tail_p)
    iname, hw = cfg["input"], cfg["hw"]
    spec = {"name": iname, "dtype": "float", "shape": [1, *hw, 3] if cfg.get("nhwc") else [1, 3, *hw]}
    imgs = crops(args.samples, seed=1, hw=hw)
    calib = crops(args.calib, seed=2, hw=hw)
    jpeg, png = [], []
    for rgb in imgs:
        for fmt, out, kw in (("JPEG", jpeg, {"quality": 90}), ("PNG", png, {})):
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, fmt, **kw)
            out.append(len(buf.getvalue()))
    feeds = [{iname: to_input(rgb, spec, cfg["norm"])} for rgb in imgs]
    ref = [full.run(None, f)[0] for f in feeds]
    acts = [head.run(None, f)[0] for f in feeds]
    cal = [head.run(None, {iname: to_input(rgb, spec, cfg["norm"])})[0] for rgb in calib]
    shape = acts[0].shape
    raw = acts[0].nbytes
    tname = tail.get_inputs()[0].name
    detect = args.model == "yolox-nano"
    rows = []
    for name in [c.strip() for c in args.codecs.split(",") if c.strip()]:
        cs = C.parse_codec(name)
        torch_tail = None
        if cs.learned is not None:
            from splitc.cost.bottleneck import tail_module

            torch_tail = (tail_module(onnx.load(str(model)), args.cut) if args.learned_training == "distillation"
                    else (None, "--learned-training reconstruction"))
        tc = C.fit(cs, cal, tail=torch_tail) if cs.kind == "static" else None
        if tc is not None and tc.training:
            print(f"{name}: trained by {tc.training}", flush=True)
        models = {"q": AnsModel(tc.ans)} if tc is not None and tc.ans is not None else None
        sizes, agree, cos, kept, syms = [], [], [], [], []
        for x, r in zip(acts, ref):
            if cs.kind == "fp32":
                payload, y = encode({"x": x}), x
            elif cs.kind == "dynamic":
                lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
                s = np.float32((hi - lo) / 255 or 1.0)
                z = np.uint8(np.clip(np.rint(-lo / s), 0, 255))
                q = np.clip(np.rint(x / s) + z, 0, 255).astype(np.uint8)
                payload = encode({"x__q": q, "x__scale": s, "x__zero_point": z})
                y = (q.astype(np.float32) - z) * s
            else:
                q = C.quantize(x, tc)
                payload = codec_payload(q, tc, models)
                y = C.dequantize(q, tc)
                if models is not None:
                    syms.append(q)
            sizes.append(len(payload))
            out = tail.run(None, {tname: y})[0]
            if detect:
                top, k, n = detection_agreement(out, r)
                agree.append(top)
                kept.append((k, n))
            else:
                agree.append(int(np.argmax(out) == np.argmax(r)))
            a, b = out.ravel().astype(np.float64), r.ravel().astype(np.float64)
            cos.append(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        row = {"codec": name, "bytes": float(np.mean(sizes)), "x_fp32": raw / float(np.mean(sizes)),
               "top1": float(np.mean(agree)), "cosine": float(np.mean(cos))}
        if tc is not None and tc.training:
            row["training"] = tc.training
        if tc is not None and tc.basis is not None:
            row.update(k=int(tc.basis.shape[0]), explained=float(tc.explained))
        if syms:  # the coder vs the order-0 entropy of each channel's symbols over all benchmark frames
            qs = np.stack(syms)
            rows_ = np.moveaxis(qs, 2, 0).reshape(qs.shape[2], -1) if models["q"].axis == 1 else qs.reshape(1, -1)
            ent = 0.0
            for r_ in rows_:
                pr = np.bincount(r_, minlength=256) / r_.size
                pr = pr[pr > 0]
                ent -= float((pr * np.log2(pr)).sum()) * r_.size
            header = len(codec_payload(np.zeros_like(syms[0]), tc, models)) - len(models["q"].encode(np.zeros_like(syms[0])))
            coded = float(np.mean(sizes)) - header
            row.update(entropy_bytes=ent / 8 / len(syms), coded_bytes=coded, vs_entropy=coded / (ent / 8 / len(syms)),
                       bits_per_value=8 * coded / syms[0].size)
        if detect:
            row["confident_kept"] = sum(k for k, _ in kept) / max(1, sum(n for _, n in kept))
            row["confident_anchors"] = sum(n for _, n in kept)
        if args.no_timing:
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
            continue
        # timing on one core: in-graph op (onnxruntime, 1 thread) + runtime codec
        x = acts[0]
        if cs.kind == "fp32":
            enc_s = timeit(lambda: encode({"x": x}))
            p = encode({"x": x})
            dec_s = timeit(lambda: decode(p, {"x": ("float32", shape)}))
        else:
            qe, qd = quant_graphs(tc, shape)
            bits = tc.bits if tc is not None else 8
            wire = {"q": ("uint8", tc.wire_shape(shape) if tc is not None else shape, bits)}
            if tc is None:
                enc_s = timeit(lambda: encode(dict(zip(("q", "s", "z"), qe.run(None, {"x": x})))))
                q, s, z = qe.run(None, {"x": x})
                p = encode({"q": q, "s": s, "z": z})
                wire = {"q": ("uint8", shape), "s": ("float32", ()), "z": ("uint8", ())}
                dec_s = timeit(lambda: qd.run(None, decode(p, wire)))
            else:
                bb = {"q": bits} if bits < 8 else None
                ent = tc.spec.entropy
                enc_s = timeit(lambda: encode({"q": qe.run(None, {"x": x})[0]}, bits=bb, entropy=ent, models=models))
                p = encode({"q": qe.run(None, {"x": x})[0]}, bits=bb, entropy=ent, models=models)
                dec_s = timeit(lambda: qd.run(None, {"q": decode(p, wire, models=models)["q"]}))
        rows.append({**row, "enc_MBps": raw / enc_s / 1e6, "dec_MBps": raw / dec_s / 1e6})
        print(json.dumps(rows[-1]), flush=True)
    # delta coding on a sliding-crop video
    delta = {}
    if args.no_delta or detect:
        vacts = []
    else:
        with Image.open(IMAGES / "astronaut.png") as im:
            big = np.asarray(im.convert("RGB").resize((352, 352), Image.BILINEAR))
        frames = [big[40:264, 2 * t:2 * t + 224] for t in range(60)]
        vacts = [head.run(None, {iname: to_input(np.ascontiguousarray(f), spec, "imagenet")})[0] for f in frames]
        for name in ("int8-channel", "int4-channel", "int2-channel"):
            tc = C.fit(C.parse_codec(name), cal)
            bb = {"q": tc.bits} if tc.bits < 8 else None
            indep = [len(encode({"q": C.quantize(a, tc)}, bits=bb)) for a in vacts]
            enc, dec = DeltaEncoder(bits=bb, key_interval=30), DeltaDecoder({"q": ("uint8", shape, tc.bits)})
            dsz = []
            for a in vacts:
                q = C.quantize(a, tc)
                p = enc.encode({"q": q})
                dsz.append(len(p))
                assert np.array_equal(dec.decode(p)["q"], q)
            delta[name] = {"independent": float(np.mean(indep)), "delta": float(np.mean(dsz)), "gain": float(np.mean(indep) / np.mean(dsz))}
            print(name, json.dumps(delta[name]), flush=True)
    result = {"cut": args.cut, "shape": list(shape), "raw_fp32_bytes": raw, "samples": len(imgs), "calibration_samples": len(calib),
              "jpeg90_bytes": float(np.mean(jpeg)), "png_bytes": float(np.mean(png)), "input_fp32_bytes": 3 * hw[0] * hw[1] * 4, "model": args.model,
              "codecs": rows, "delta": delta}
    print(f"\n{len(imgs)} samples, cut {args.cut} {list(shape)} ({raw} B fp32); input as JPEG q90 {np.mean(jpeg):.0f} B, PNG {np.mean(png):.0f} B\n")
    agree_col = "top anchor+class agree | confident kept" if detect else "top-1 agree"
    print(f"| codec | bytes/frame | x smaller than fp32 | vs JPEG q90 | vs PNG | {agree_col} | mean cosine | encode MB/s/core | decode MB/s/core |")
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if detect else ""))
    for r in rows:
        kept = f" {r['confident_kept'] * 100:.1f}% |" if detect else ""
        speed = f" {r['enc_MBps']:.0f} | {r['dec_MBps']:.0f} |" if "enc_MBps" in r else " - | - |"
        print(f"| {r['codec']} | {r['bytes']:.0f} | {r['x_fp32']:.1f}x | {np.mean(jpeg) / r['bytes']:.1f}x | {np.mean(png) / r['bytes']:.1f}x |"
              f" {r['top1'] * 100:.1f}% |{kept} {r['cosine']:.5f} |{speed}")
    for k, v in delta.items():
        print(f"delta {k}: {v['independent']:.0f} -> {v['delta']:.0f} B/frame ({v['gain']:.2f}x)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
