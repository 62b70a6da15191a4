"""`splitc serve` and `splitc run --remote`: the split across a network (splitc/serving/, splitc/runtimes/remote.py)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from splitc.errors import EXIT_CHECK_FAILED, SplitcError
from splitc.ui import fmt_bytes


def parse_seconds(text: str, option: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*", text)
    if not m or float(m.group(1)) <= 0 or float(m.group(1)) > 3600:
        raise SplitcError(f"{option} {text!r}: give a duration like 2s or 500ms (more than 0, at most an hour)")
    return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def read_token(path: str | None, option: str = "--token-file") -> str | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise SplitcError(f"{option} {path}: no such file")
    token = p.read_text().strip()
    if not token or len(token) > 4096 or not token.isprintable() or " " in token:
        raise SplitcError(f"{option} {path}: the file must hold one token (printable, no spaces, at most 4096 characters)")
    return token


def cmd_serve(args) -> int:
    from splitc.serving.server import serve

    if args.write_deploy:
        from splitc.serving.deploy import write_deploy
        from splitc.serving.server import load_models

        models, _ = load_models(Path(args.dir))
        image = args.image or f"{models[0].name}:latest"
        files = write_deploy(Path(args.dir), Path(args.write_deploy), models, image)
        print(f"wrote {args.write_deploy}/ ({', '.join(files)}): podman build -t {image} {args.write_deploy};"
              f" kubectl create secret generic splitc-token --from-file=token=TOKEN_FILE;"
              f" kubectl apply -f {args.write_deploy}/inferenceservice.yaml")
        return 0
    token = read_token(args.token_file)
    if args.host not in ("127.0.0.1", "localhost", "::1") and token is None:
        print(f"splitc: warning: serving on {args.host} without --token-file: anyone who reaches it can use it", file=sys.stderr)
    return serve(Path(args.dir), host=args.host, port=args.port, grpc_port=args.grpc_port or None,
                 token=token.encode() if token else None, tls_cert=args.tls_cert, tls_key=args.tls_key,
                 threads=args.threads, echo=lambda line: print(line, flush=True))


def cmd_run_remote(args, samples: list[dict], reference, frames: list[dict] | None = None) -> int:
    """The frames through the server at --remote; each frame the server cannot answer is computed here. ``frames``:
    the camera's uint8 frames of --input images (sent as they are, compressed per plan.json), one per sample."""
    from splitc.runtimes.ort import compare_outputs
    from splitc.runtimes.remote import RemoteSplitModel

    kw = dict(timeout=parse_seconds(args.timeout, "--timeout"), token=read_token(args.token_file), ca=args.ca,
              optimization=args.optimization, inflight=args.inflight)
    adaptive = bool(json.loads((Path(args.dir) / "plan.json").read_text()).get("sweep"))
    if adaptive:  # a --sweep-bandwidth plan: each frame on the variant for the bandwidth measured so far
        from splitc.runtimes.adaptive import AdaptiveRemote

        model = AdaptiveRemote(args.dir, args.remote, **kw)
    else:
        model = RemoteSplitModel(args.dir, args.remote, **kw)
    runs, same = [], True
    try:
        if args.stream:
            pairs = []  # (an adaptive stream's model.last: the plan that frame ran on)
            for i, r in enumerate(model.stream(samples)):
                runs.append(r)
                pairs.append((samples[i], r, model.last))
        else:
            pairs = []
            for k, feeds in enumerate(samples):
                runs.append(model.run_image(frames[k]) if frames else model.run(feeds))
                pairs.append((frames[k] if frames else feeds, runs[-1], model.last))
    finally:
        model.close()
    # the network must not change a thing: every frame the server answered equals the in-process split run
    same = all(np.array_equal(r.outputs[k], v) for x, r, used in pairs if "round_trip" in r.seconds
               for k, v in (used.local.run_image(x) if frames else used.local.run(x)).outputs.items())
    checks = []
    if reference is not None:
        names = [o.name for o in reference.get_outputs()]
        checks = [compare_outputs(dict(zip(names, reference.run(None, feeds))), r.outputs) for feeds, r in zip(samples, runs)]
    from splitc.cli.run_data import lossless as is_lossless

    lossless = is_lossless(model.plan)  # the rule of `splitc run`: fp32, or a plan sending only raw tensors
    outputs, ok = [], True
    for j, name in enumerate(c.name for c in (checks[0] if checks else [])):
        per = [c[j] for c in checks]
        max_abs, max_ref, cosine = max(c.max_abs for c in per), max(c.max_ref for c in per), min(c.cosine for c in per)
        passed = max_abs <= 1e-5 * max(1.0, max_ref) if lossless else None  # a lossy plan: `splitc run --input` judges it
        ok &= passed is not False
        outputs.append({"name": name, "max_abs_error": max_abs, "cosine": cosine, "pass": passed})
    ok &= same
    st = model.stats
    ms = (lambda xs: float(np.median(xs)) * 1e3 if xs else None)
    report = {"dir": str(args.dir), "remote": args.remote, "model": model.last.segment.name, "frames": len(runs),
              "switches": [{k: v for k, v in s.items() if k != "t"} for s in model.switches] if adaptive else None,
              "via_server": st.remote, "computed_locally": st.local, "lost": len(samples) - len(runs),
              "failures": dict(st.failures), "failure_reasons": st.first, "round_trip_ms_median": ms(st.round_trip_s),
              "server_ms_median": ms(st.server_s), "fallback_ms_median": ms(st.fallback_s),
              "bytes_up": int(np.median([r.bytes_up for r in runs])), "bytes_down": int(np.median([r.bytes_down for r in runs])),
              "same_as_in_process": same, "outputs": outputs, "pass": ok}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0 if ok else EXIT_CHECK_FAILED
    plan = model.plan
    parts = " -> ".join(f"{file} on {target}" + (f" at {args.remote}" if target != model.last.segment.device else "")
                        for target, file in plan["artifacts"].items())
    print(f"ran {parts} ({model.last.segment.name}) on {len(runs)} frame(s){' streamed, ' + str(args.inflight) + ' in flight' if args.stream else ''}:"
          f" sent {fmt_bytes(report['bytes_up'])} up, {fmt_bytes(report['bytes_down'])} down per frame")
    if st.remote:
        print(f"round trip {report['round_trip_ms_median']:.1f} ms median (server decode+compute+encode"
              f" {report['server_ms_median']:.1f} ms); predicted end to end {plan['predicted']['total_s'] * 1e3:.1f} ms")
    for line in st.lines() + (model.lines() if adaptive else []):
        print(line)
    if st.fallback_s:
        print(f"local fallback {report['fallback_ms_median']:.1f} ms median per frame")
    print("outputs of the frames the server answered: " + ("identical to the in-process split run" if same else
          "DIFFER from the in-process split run (FAIL)"))
    for o in outputs:
        print(f"output {o['name']}: max abs error {o['max_abs_error']:.3g}, cosine {o['cosine']:.6f} vs the original"
              + {True: ": PASS", False: ": FAIL", None: " (lossy plan: judged by splitc run --input on real data)"}[o["pass"]])
    if not checks:
        print("original model not found: outputs not compared with it (pass --model)")
    return 0 if ok else EXIT_CHECK_FAILED
