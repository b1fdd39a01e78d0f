#!/usr/bin/env bash
# Cross builds of the C++ core: configure, build and test the native (x86-64), aarch64 and
# armhf presets (ARM tests run under qemu-user), run slimedge_aggregate on the same inputs
# on all three targets and require byte-identical reports (also identical to what the Python
# module slimedge._core computes, when a Python with slimedge is given), then install the
# `device` extra in a throwaway venv and run the device smoke check with TensorFlow blocked.
#
# Needs (Debian): cmake g++ g++-aarch64-linux-gnu g++-arm-linux-gnueabihf qemu-user; ninja
# is used when installed.
#
# Environment:
#   PYTHON          Python with slimedge (and TensorFlow) installed, used to compare with
#                   slimedge._core and to make the smoke test's .tflite
#                   (default: .venv/bin/python when present)
#   SKIP_DEVICE_VENV=1   skip the device-venv step
#   DEVICE_VENV_PIP_ARGS extra arguments for its `pip install` (e.g. --find-links)
# Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PRESETS=(native aarch64 armhf)
CASES=(weighted_table max_renormalize mean_table)
PYTHON=${PYTHON:-}
if [[ -z "$PYTHON" && -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; fi
if command -v ninja >/dev/null 2>&1; then export CMAKE_GENERATOR=${CMAKE_GENERATOR:-Ninja}; fi
export CTEST_PARALLEL_LEVEL=${CTEST_PARALLEL_LEVEL:-2}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}

TIMINGS=()
step() {  # step NAME COMMAND...: runs and times one step; any failure ends the script.
    local name=$1
    shift
    echo
    echo "=== $name"
    local t0=$SECONDS
    "$@"
    TIMINGS+=("$(printf '%-40s %4ds' "$name" $((SECONDS - t0)))")
}

for tool in cmake ctest aarch64-linux-gnu-g++ arm-linux-gnueabihf-g++ qemu-aarch64 qemu-arm; do
    command -v "$tool" >/dev/null || {
        echo "cross_test: '$tool' not found; install: apt-get install -y cmake" \
             "g++-aarch64-linux-gnu g++-arm-linux-gnueabihf qemu-user ninja-build" >&2
        exit 1
    }
done
echo "cmake: $(cmake --version | head -1); qemu: $(qemu-aarch64 --version | head -1)"

build_preset() {
    local p=$1
    # A fresh configure each time: a stale cache from another toolchain must not leak in.
    rm -rf "build/$p"
    cmake --preset "$p" >"build/cross-logs/configure-$p.log" 2>&1 ||
        { cat "build/cross-logs/configure-$p.log"; return 1; }
    cmake --build --preset "$p"
    ctest --preset "$p"
}
mkdir -p build/cross-logs
for p in "${PRESETS[@]}"; do
    step "$p: configure + build + ctest" build_preset "$p"
done

echo
echo "=== built binaries"
for p in "${PRESETS[@]}"; do
    file "build/$p/slimedge_aggregate" "build/$p/test_core"
done

run_on() {  # run_on PRESET ARGS...: the preset's slimedge_aggregate, under qemu for ARM.
    local p=$1
    shift
    case $p in
        native) "build/native/slimedge_aggregate" "$@" ;;
        aarch64) qemu-aarch64 -L /usr/aarch64-linux-gnu build/aarch64/slimedge_aggregate "$@" ;;
        armhf) qemu-arm -L /usr/arm-linux-gnueabihf build/armhf/slimedge_aggregate "$@" ;;
    esac
}

compare_targets() {
    local out=build/cross-compare
    rm -rf "$out"
    mkdir -p "$out"
    local c p f verdict status=0
    for c in "${CASES[@]}"; do
        for p in "${PRESETS[@]}"; do
            run_on "$p" "cpp/tools/testdata/$c.bin" >"$out/$c.$p.txt"
        done
        if [[ -n "$PYTHON" ]]; then
            "$PYTHON" - "cpp/tools/testdata/$c.bin" >"$out/$c.python-core.txt" <<'EOF'
import sys
from slimedge.runtime import frames
sys.stdout.write(frames.aggregate_report(frames.read_aggregate_input(sys.argv[1])))
EOF
        fi
        verdict=identical
        for f in "$out/$c".*.txt; do
            if ! cmp -s "$out/$c.native.txt" "$f"; then
                echo "DIFFERENT: $f vs $out/$c.native.txt" >&2
                diff "$out/$c.native.txt" "$f" | head -20 >&2 || true
                verdict=DIFFERENT
                status=1
            fi
        done
        echo "$c: $(cd "$out" && sha256sum "$c".*.txt | awk '{printf "%s=%.16s ", $2, $1}')-> $verdict"
    done
    # Bad input: every target refuses it with the same message and a non-zero status.
    for p in "${PRESETS[@]}"; do
        if run_on "$p" cpp/tools/testdata/truncated.bin >/dev/null 2>"$out/truncated.$p.err"; then
            echo "$p: truncated input was accepted" >&2
            status=1
        fi
        if ! cmp -s "$out/truncated.native.err" "$out/truncated.$p.err"; then
            echo "$p: a different error for truncated.bin: $(cat "$out/truncated.$p.err")" >&2
            status=1
        fi
    done
    echo "truncated.bin on every target: $(cat "$out/truncated.native.err")"
    echo
    echo "--- ${CASES[0]} report (the same bytes on every target), first 14 lines:"
    head -14 "$out/${CASES[0]}.native.txt"
    return $status
}
step "compare outputs across targets" compare_targets

device_venv() {
    local venv=$ROOT/build/device-venv model=$ROOT/build/device-smoke-model
    rm -rf "$venv"
    python3 -m venv "$venv"
    # Its own CMake build folder: the default one belongs to the development install.
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        -C build-dir="$ROOT/build/device-wheel" ${DEVICE_VENV_PIP_ARGS:-} "$ROOT[device]"
    local listed
    listed=$("$venv/bin/pip" list --format=freeze --disable-pip-version-check)
    if grep -iE '^(tensorflow|keras|tf[-_]keras|tf[-_]nightly)([-_.][a-z0-9_.-]*)?==' <<<"$listed"; then
        echo "the device extra pulled in TensorFlow/Keras" >&2
        return 1
    fi
    echo "device venv: $(wc -l <<<"$listed") packages, none of them TensorFlow or Keras:"
    tr '\n' ' ' <<<"$listed"
    echo
    local args=()
    if [[ -n "$PYTHON" ]] && "$PYTHON" -c "import tensorflow" >/dev/null 2>&1; then
        rm -rf "$model"
        TF_CPP_MIN_LOG_LEVEL=2 "$PYTHON" tools/device_smoke.py make-model "$model" >/dev/null 2>&1
        args=(--model-dir "$model")
    else
        echo "no Python with TensorFlow: the smoke check skips the branch model"
    fi
    # From outside the source tree, so the installed package (not ./slimedge) is imported.
    (cd "$venv" && bin/python "$ROOT/tools/device_smoke.py" check "${args[@]}")
}
if [[ "${SKIP_DEVICE_VENV:-0}" != 1 ]]; then
    step "device venv: pip install .[device] + smoke" device_venv
fi

echo
echo "=== timings"
printf '%s\n' "${TIMINGS[@]}"
echo "cross_test: all passed"
