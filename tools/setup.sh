#!/usr/bin/env bash
# Set up everything robolearn needs on a fresh machine, then exit 0; `make` runs it before every
# target. Idempotent and quick when nothing is missing.
#   1. System packages (Debian/Ubuntu): as root installs them with apt-get; otherwise prints the
#      one command to run and stops (a half-working set-up would fail later, less clearly).
#   2. uv (from PyPI, with pip), when it is not on PATH or in ~/.local/bin.
#   3. Python 3.12 (zarr 3 and lerobot >= 0.5 need it): python3.12 on PATH or pyenv's; else uv
#      installs a managed one.
#   4. The locked environment: `uv sync --frozen --all-extras` into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "robolearn setup: $*" >&2; }

# What each package is for: ffmpeg -> FFmpeg's shared libraries for lerobot's video decoder
# (torchcodec); libosmesa6 -> headless MuJoCo rendering on CPU (cameras, videos); libegl1/libgl1 ->
# headless rendering on a GPU machine (EGL) and the GL dispatch that OSMesa's PyOpenGL loads;
# make, gcc-avr, avr-libc -> the RC car's firmware; simavr, libsimavr-dev, gcc -> its simulated
# board (firmware in the loop); clang and libclang-rt-dev -> libFuzzer for the firmware's frame
# parser (libclang-rt-dev holds the fuzzer and ASan runtimes; clang only recommends it, and
# --no-install-recommends left the fuzz test unable to link on a fresh Debian 12).
# openssl -> the self-signed certificate of the actor-learner link's TLS test.
PKGS=(ffmpeg libosmesa6 libegl1 libgl1 make gcc-avr avr-libc simavr libsimavr-dev gcc clang openssl)
# libclang-rt-dev exists from Debian 12 (and Ubuntu 23.04) on; older releases ship the runtimes
# in clang's own libclang-common-*-dev
if apt-cache show libclang-rt-dev >/dev/null 2>&1 || { [ -r /etc/debian_version ] \
    && [ "$(cut -d. -f1 /etc/debian_version)" -ge 12 ] 2>/dev/null; }; then
  PKGS+=(libclang-rt-dev)
fi
if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing system packages: ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      say "missing system packages: ${missing[*]}; run once: sudo apt-get install -y ${missing[*]}"
      exit 1
    fi
  fi
else
  say "not a Debian/Ubuntu system: install FFmpeg and OSMesa (or EGL) with your package manager"
fi

UV="$(command -v uv 2>/dev/null || echo "$HOME/.local/bin/uv")"
if [ ! -x "$UV" ]; then
  say "installing uv from PyPI (pip install --user uv)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
    else
      say "python3 has no pip; run once: sudo apt-get install -y python3-pip"; exit 1
    fi
  fi
  python3 -m pip install --quiet --user --force-reinstall 'uv>=0.5,<1' 2>/dev/null \
    || python3 -m pip install --quiet --user --force-reinstall --break-system-packages 'uv>=0.5,<1'
  UV="$(python3 -c 'import uv; print(uv.find_uv_bin())')"  # wherever pip put its binary
fi

PY=""
for p in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 \
         /usr/bin/python3.12; do
  if "$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    PY="$(command -v "$p" || echo "$p")"; break
  fi
done
if [ -z "$PY" ]; then
  say "no Python 3.12 found: uv installs a managed one"
  "$UV" python install 3.12
  PY=3.12
fi

if [ ! -f .venv/.synced ] || [ pyproject.toml -nt .venv/.synced ] || [ uv.lock -nt .venv/.synced ]; then
  "$UV" sync --frozen --all-extras --python "$PY"
  touch .venv/.synced
fi
