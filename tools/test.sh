#!/usr/bin/env bash
# The README's test command: installs what the tests need and runs them all.
#   system packages (Debian): cross compilers + qemu-user for the ARM builds
#   a virtualenv .venv with the package (editable, C++ extension built) and its host/device/test extras
#   ruff; the Python tests (pytest, slow ones excluded); the C++ tests under ctest, native and
#   cross-built for aarch64/armhf under qemu; the TensorFlow-free `device` install
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(cmake g++ g++-aarch64-linux-gnu g++-arm-linux-gnueabihf qemu-user ninja-build chromium mosquitto)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "[test] installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[host,device,test]'

echo "[test] ruff"
.venv/bin/ruff check slimedge tests tools

echo "[test] pytest"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "[test] pytest collected no tests: failing" >&2
  exit 1
fi
[ $rc -eq 0 ] || exit $rc

echo "[test] C++ core: native, aarch64 and armhf (qemu) presets; device-only install"
PYTHON=.venv/bin/python bash tools/cross_test.sh
echo "[test] all passed"
