"""Deployment files for the server stages: a container build file that runs ``splitc serve`` and a KServe
``InferenceService`` that runs that image (``splitc serve OUT/ --write-deploy DIR [--image NAME]``).

DIR gets ``Containerfile``, ``inferenceservice.yaml`` and ``plan/`` (the compiled folder: plan.json and its parts, the
sweep variants too; no report). Build it with ``podman build -t NAME DIR`` (or docker) and apply the manifest with
``kubectl apply -f DIR/inferenceservice.yaml`` after creating the token secret it names. DIR is written whole or not.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from splitc.errors import SplitcError

HTTP_PORT = 8080  # KServe's conventional container port
GRPC_PORT = 8081

CONTAINERFILE = """\
# The server stages of a splitc plan, under the Open Inference Protocol v2 (splitc serve, KServe's model server).
# SPLITC_SPEC: what pip installs, e.g. a wheel copied next to this file: --build-arg SPLITC_SPEC=./splitc-0.1.0-py3-none-any.whl
FROM python:3.11-slim
ARG SPLITC_SPEC="splitc[serve]"
COPY . /deploy
WORKDIR /deploy
RUN pip install --no-cache-dir "$SPLITC_SPEC" && useradd --uid 10001 --no-create-home splitc
USER 10001
EXPOSE {http} {grpc}
ENTRYPOINT ["splitc", "serve", "/deploy/plan", "--host", "0.0.0.0", "--port", "{http}", "--grpc-port", "{grpc}"]
# with a bearer token (recommended): mount it and append: --token-file /var/run/splitc/token
"""


def manifest(name: str, image: str, token_secret: str | None) -> dict:
    args = ["--token-file", "/var/run/splitc/token"] if token_secret else []
    container = {
        "name": "kserve-container",
        "image": image,
        "args": args,
        "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": HTTP_PORT}},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": HTTP_PORT}},
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
    }
    predictor = {"containers": [container]}
    if token_secret:
        container["volumeMounts"] = [{"name": "splitc-token", "mountPath": "/var/run/splitc", "readOnly": True}]
        predictor["volumes"] = [{"name": "splitc-token", "secret": {"secretName": token_secret}}]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": {"serving.kserve.io/enable-prometheus-scraping": "true",
                                                   "prometheus.kserve.io/port": str(HTTP_PORT),
                                                   "prometheus.kserve.io/path": "/metrics"}},
        "spec": {"predictor": predictor},
    }


def write_deploy(out: Path, dest: Path, models: list, image: str, token_secret: str | None = "splitc-token") -> list[str]:
    """Write DIR (see the module docstring); ``models``: the SplitStages loaded from ``out``. Returns the files written."""
    if dest.exists():
        raise SplitcError(f"--write-deploy {dest}: already exists; give a new directory")
    if not dest.parent.resolve().is_dir():
        raise SplitcError(f"--write-deploy {dest}: its parent directory does not exist")
    name = models[0].name if len(models) == 1 else f"splitc-{out.resolve().name}".lower()[:63].strip("-")
    doc = manifest(name, image, token_secret)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        shutil.copytree(out, tmp / "plan", ignore=shutil.ignore_patterns("report*", "*.html", "*.png"), symlinks=False)
        (tmp / "Containerfile").write_text(CONTAINERFILE.format(http=HTTP_PORT, grpc=GRPC_PORT))
        # JSON is YAML: no YAML writer needed, and every loader reads it
        (tmp / "inferenceservice.yaml").write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ["Containerfile", "inferenceservice.yaml", "plan/"]
