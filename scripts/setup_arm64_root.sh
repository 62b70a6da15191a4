#!/usr/bin/env bash
# An emulated Raspberry Pi 4 userland for the aarch64 TVM check (tests/test_tvm.py, slow):
# a Debian arm64 root (its Python 3.11) plus the aarch64 wheels of numpy, zstandard and apache-tvm,
# run with qemu user-mode emulation (qemu-aarch64-static -cpu cortex-a72 -L ROOT/rootfs ...).
#
#   scripts/setup_arm64_root.sh [DIR]      # default: $SPLITC_ARM64_ROOT or /var/cache/splitc-arm64
#
# Needs root (debootstrap), network to deb.debian.org and PyPI, and ~400 MB under DIR; about a
# minute. Nothing runs under emulation while building it: debootstrap's first stage downloads the
# packages, they are unpacked with dpkg -x, and pip installs the aarch64 wheels with --platform.
# Idempotent: a ready DIR (stamp file for this apache-tvm version) is left as it is.
set -euo pipefail

DIR=${1:-${SPLITC_ARM64_ROOT:-/var/cache/splitc-arm64}}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$HERE/.venv/bin/python}
SUITE=${SUITE:-bookworm}  # its python3.11 matches the cp311 wheels below
MIRROR=${MIRROR:-http://deb.debian.org/debian}
TVM_VERSION=${TVM_VERSION:-$("$PYTHON" -c 'import tvm; print(tvm.__version__)' 2>/dev/null || echo 0.27.0.post1)}
STAMP="$DIR/.ready-apache-tvm-$TVM_VERSION"

if [[ -f "$STAMP" ]]; then
  echo "arm64 root ready: $DIR (apache-tvm $TVM_VERSION)"
  exit 0
fi
missing=()
for tool in debootstrap qemu-aarch64-static dpkg; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-user-static >/dev/null
  else
    echo "setup_arm64_root: missing ${missing[*]}: apt-get install debootstrap qemu-user-static (as root)" >&2
    exit 1
  fi
fi
[[ $(id -u) == 0 ]] || { echo "setup_arm64_root: debootstrap needs root" >&2; exit 1; }

[[ "$DIR" != "/" && "$DIR" != "$HOME" ]] || { echo "setup_arm64_root: refusing DIR=$DIR" >&2; exit 1; }
mkdir -p "$DIR"
rm -rf "$DIR/rootfs" "$DIR/site" "$DIR"/.ready-*
echo "arm64 root: debootstrap $SUITE (first stage) into $DIR/rootfs"
debootstrap --foreign --arch=arm64 --variant=minbase \
  --include=python3.11-minimal,libpython3.11-stdlib,libstdc++6 "$SUITE" "$DIR/rootfs" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 \
  || { tail -20 "$DIR/debootstrap.log" >&2; echo "setup_arm64_root: debootstrap failed (log: $DIR/debootstrap.log)" >&2; exit 1; }
# The second stage would run maintainer scripts under emulation; unpacking is all Python needs.
for deb in "$DIR"/rootfs/var/cache/apt/archives/*.deb; do dpkg -x "$deb" "$DIR/rootfs"; done
rm -f "$DIR"/rootfs/var/cache/apt/archives/*.deb

echo "arm64 root: aarch64 wheels (apache-tvm $TVM_VERSION, numpy, zstandard) into $DIR/site"
"$PYTHON" -m pip install -q --disable-pip-version-check --target "$DIR/site" --only-binary=:all: \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
  --python-version 3.11 --implementation cp --abi cp311 \
  "apache-tvm==$TVM_VERSION" numpy zstandard
# Only the runtime is loaded there (TVM_USE_RUNTIME_LIB=1): drop the 240 MB compiler library.
rm -f "$DIR"/site/tvm/lib/libtvm_compiler.so

echo "arm64 root: smoke test under qemu-aarch64"
PYTHONPATH="$DIR/site" TVM_USE_RUNTIME_LIB=1 qemu-aarch64-static -cpu cortex-a72 -L "$DIR/rootfs" \
  "$DIR/rootfs/usr/bin/python3.11" -c 'import platform, numpy, zstandard, tvm; print(platform.machine(), "tvm", tvm.__version__)'
touch "$STAMP"
echo "arm64 root ready: $DIR"
