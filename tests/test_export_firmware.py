"""MCU firmware bundle: the generated C++ compiles with g++, and a program linked against it
writes back exactly the .tflite bytes, 16-byte aligned; the arena header and the op resolver
match the model."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from slimedge.export import ExportError
from slimedge.export.firmware import TFLM_RESOLVER_METHODS, camel, write_firmware_bundle
from slimedge.export.tflite_ops import read_tflite

GXX = shutil.which("g++")
needs_gxx = pytest.mark.skipif(GXX is None, reason="g++ not installed")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from slimedge.convert import to_tflite

    keras.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("firmware-models")
    rep = np.random.default_rng(0).random((8, 16, 16, 1), dtype=np.float32)
    branch = keras.Sequential([
        keras.Input((16, 16, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.DepthwiseConv2D(3, padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(8),
    ])
    # TOPK_V2: a TFLite builtin that TFLite Micro has no kernel for.
    inp = keras.Input((8,), batch_size=1)
    topk = keras.Model(inp, keras.layers.Lambda(
        lambda t: tf.math.top_k(t, k=3).values)(keras.layers.Dense(8)(inp)))
    paths = {"int8": out / "branch_int8.tflite", "topk": out / "topk.tflite"}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        paths["int8"].write_bytes(to_tflite(branch, "int8", rep))
    paths["topk"].write_bytes(to_tflite(topk, "float32"))
    return paths


@pytest.fixture(scope="module")
def bundle(models, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bundle")
    summary = write_firmware_bundle(models["int8"], out, name="cam00", arena_bytes=5001,
                                    board_id="esp32s3")
    return out, summary


def test_bundle_files_and_summary(models, bundle):
    out, summary = bundle
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cam00_arena.h", "cam00_model.cc", "cam00_model.h", "cam00_ops.h"]
    assert [f["path"] for f in summary["files"]] == [
        "cam00_model.h", "cam00_model.cc", "cam00_arena.h", "cam00_ops.h"]
    from slimedge.artifacts import sha256_file

    for f in summary["files"]:
        assert sha256_file(out / f["path"]) == f["sha256"]
        assert (out / f["path"]).stat().st_size == f["bytes"]
    assert summary["model_bytes"] == models["int8"].stat().st_size
    assert summary["model_sha256"] == sha256_file(models["int8"])
    assert summary["arena_bytes"] == 5008 and summary["measured_arena_bytes"] == 5001
    assert summary["board"] == "esp32s3"


@needs_gxx
def test_model_source_compiles(bundle, tmp_path):
    out, _ = bundle
    done = subprocess.run([GXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-c",
                           str(out / "cam00_model.cc"), "-o", str(tmp_path / "model.o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


PROGRAM = r"""
#include <cstdint>
#include <cstdio>
#include "cam00_arena.h"
#include "cam00_model.h"

static_assert(kCam00ArenaSize % 16 == 0, "arena size not a multiple of 16");

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  if (reinterpret_cast<std::uintptr_t>(cam00_model) % 16 != 0) {
    std::puts("model array not 16-byte aligned");
    return 3;
  }
  std::FILE* f = std::fopen(argv[1], "wb");
  if (f == nullptr) return 4;
  std::size_t n = std::fwrite(cam00_model, 1, cam00_model_len, f);
  std::fclose(f);
  std::printf("len=%u arena=%zu\n", cam00_model_len, static_cast<std::size_t>(kCam00ArenaSize));
  return n == cam00_model_len ? 0 : 1;
}
"""


@needs_gxx
def test_linked_array_equals_the_tflite_bytes(models, bundle, tmp_path):
    out, _ = bundle
    (tmp_path / "main.cc").write_text(PROGRAM)
    exe = tmp_path / "dump"
    done = subprocess.run([GXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{out}",
                           str(tmp_path / "main.cc"), str(out / "cam00_model.cc"), "-o", str(exe)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run = subprocess.run([str(exe), str(tmp_path / "dumped.tflite")], capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    expected = models["int8"].read_bytes()
    assert (tmp_path / "dumped.tflite").read_bytes() == expected
    assert run.stdout.strip() == f"len={len(expected)} arena=5008"


def test_ops_header_registers_exactly_the_models_ops(models, bundle):
    out, summary = bundle
    text = (out / "cam00_ops.h").read_text()
    ops = read_tflite(models["int8"]).distinct_ops()
    assert summary["ops"] == ops and summary["resolver_size"] == len(ops) == 5
    calls = re.findall(r"resolver\.(Add\w+)\(\)", text)
    assert calls == [TFLM_RESOLVER_METHODS[op] for op in ops]
    assert calls == ["AddConv2D", "AddDepthwiseConv2D", "AddMaxPool2D", "AddMean",
                     "AddFullyConnected"]
    assert "constexpr unsigned int kCam00OpCount = 5;" in text
    assert "tflite::MicroMutableOpResolver<kCam00OpCount>" in text
    assert "inline TfLiteStatus RegisterCam00Ops(Cam00OpResolver& resolver)" in text
    assert '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"' in text


def _resolver_standin() -> str:
    """A stand-in for tflite-micro's micro_mutable_op_resolver.h (not installable here): the
    same class template and method names, recording registrations up to its capacity. It
    checks the generated header's C++ and resolver size, not TFLite Micro itself."""
    methods = "\n".join(
        f'  TfLiteStatus {m}() {{ return Add("{m}"); }}'
        for m in sorted(set(TFLM_RESOLVER_METHODS.values())))
    return (
        "#pragma once\n"
        "typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;\n"
        "namespace tflite {\n"
        "template <unsigned int tOpCount> class MicroMutableOpResolver {\n"
        " public:\n"
        "  const char* names[tOpCount];\n"
        "  unsigned int count = 0;\n"
        "  TfLiteStatus Add(const char* n) {\n"
        "    if (count >= tOpCount) return kTfLiteError;\n"
        "    names[count++] = n;\n"
        "    return kTfLiteOk;\n"
        "  }\n"
        f"{methods}\n"
        "};\n"
        "}  // namespace tflite\n"
    )


@needs_gxx
def test_ops_header_compiles_against_resolver_interface(bundle, tmp_path):
    out, _ = bundle
    inc = tmp_path / "include" / "tensorflow" / "lite" / "micro"
    inc.mkdir(parents=True)
    (inc / "micro_mutable_op_resolver.h").write_text(_resolver_standin())
    (tmp_path / "main.cc").write_text(
        '#include <cstdio>\n#include "cam00_ops.h"\n'
        "int main() {\n"
        "  Cam00OpResolver resolver;\n"
        "  if (RegisterCam00Ops(resolver) != kTfLiteOk) return 1;\n"
        '  for (unsigned int i = 0; i < resolver.count; ++i) std::printf("%s\\n", '
        "resolver.names[i]);\n"
        "  return 0;\n}\n")
    exe = tmp_path / "ops"
    done = subprocess.run([GXX, "-std=c++17", "-Wall", "-Wextra", "-Werror",
                           f"-I{tmp_path / 'include'}", f"-I{out}", str(tmp_path / "main.cc"),
                           "-o", str(exe)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, "registration overflowed the resolver size"
    assert run.stdout.split() == ["AddConv2D", "AddDepthwiseConv2D", "AddMaxPool2D", "AddMean",
                                  "AddFullyConnected"]


def test_unknown_op_names_op_and_file_and_writes_nothing(models, tmp_path):
    out = tmp_path / "fw"
    with pytest.raises(ExportError, match=r"topk\.tflite: op TOPK_V2 has no known TFLite Micro"):
        write_firmware_bundle(models["topk"], out, name="cam01", arena_bytes=1000,
                              board_id="esp32s3")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "9lives"}, "must be a C identifier"),
    ({"name": "cam-00"}, "must be a C identifier"),
    ({"arena_bytes": 0}, "arena_bytes must be a positive integer"),
    ({"arena_bytes": 12.5}, "arena_bytes must be a positive integer"),
])
def test_bad_arguments(models, tmp_path, kwargs, message):
    args = {"name": "cam00", "arena_bytes": 100, "board_id": "esp32s3", **kwargs}
    with pytest.raises(ExportError, match=message):
        write_firmware_bundle(models["int8"], tmp_path / "fw", **args)
    assert not (tmp_path / "fw").exists()


def test_arena_header_and_names(models, tmp_path):
    summary = write_firmware_bundle(models["int8"], tmp_path, name="view_3_branch",
                                    arena_bytes=4096, board_id="rp2350")
    assert summary["arena_bytes"] == 4096  # already a multiple of 16
    text = (tmp_path / "view_3_branch_arena.h").read_text()
    assert "constexpr size_t kView3BranchArenaSize = 4096;" in text
    assert "board rp2350: 4096 bytes measured" in text
    assert camel("cam00_branch") == "Cam00Branch"
    model_cc = (tmp_path / "view_3_branch_model.cc").read_text()
    assert "alignas(16) const unsigned char view_3_branch_model[] = {" in model_cc
    assert f"const unsigned int view_3_branch_model_len = {summary['model_bytes']};" in model_cc
