"""The ladder's TFLite Micro feature pass over several processes: byte for byte the features
of the one-process pass (and of the ladder's cache), on the session's tiny ladder."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from slimedge.ladder.store import (  # noqa: E402
    TFLM,
    LadderError,
    features_file,
    level_dir,
    load_level_features,
)
from slimedge.ladder.tflm_pass import tflm_features  # noqa: E402


def _views(ds, split):
    images = np.asarray(ds.images[ds.indices(split)])
    return images.reshape((-1,) + images.shape[2:])


def test_two_workers_give_the_one_worker_features_bit_for_bit(tiny_ladder):
    from slimedge.profile.tflm import measure_arena

    root, ds, manifest = tiny_ladder
    ldir = level_dir(root / "ladder", manifest["levels"][-1]["index"])
    path = ldir / "branch_int8.tflite"
    arena = 2 * measure_arena(path)
    images = np.concatenate([_views(ds, "val"), _views(ds, "test")])
    one = tflm_features(path, arena, images, workers=1)
    two = tflm_features(path, arena, images, workers=2)
    assert one.dtype == two.dtype == np.int8
    assert one.shape[0] == len(images) and one.ndim == 2
    np.testing.assert_array_equal(one, two)
    # And what the ladder cached for the test split (its own pass, split by split).
    cached = load_level_features(ldir / features_file(TFLM), "test").features
    n_val = len(_views(ds, "val"))
    np.testing.assert_array_equal(cached.reshape(-1, cached.shape[-1]), two[n_val:])


def test_the_cache_is_the_same_with_one_and_two_workers(tiny_ladder, tmp_path):
    """`_cache_variants` rerun on a copy of a level: every variant's file is byte for byte the
    build's, whatever the worker count of the TFLite Micro pass."""
    import shutil

    from slimedge.ladder.build import _cache_variants

    root, ds, manifest = tiny_ladder
    e = manifest["levels"][0]
    src = level_dir(root / "ladder", e["index"])
    for workers in (1, 2):
        dst = tmp_path / f"w{workers}"
        shutil.copytree(src, dst)
        quant, seconds = _cache_variants(dst, ds, e["tflm_arena_bytes"], workers=workers)
        assert quant == e["feature_quant"]
        assert set(seconds) == set(e["feature_seconds"])
        for variant in seconds:
            assert ((dst / features_file(variant)).read_bytes()
                    == (src / features_file(variant)).read_bytes()), (workers, variant)


def test_a_bad_worker_count_is_refused(tiny_ladder):
    root, ds, manifest = tiny_ladder
    path = level_dir(root / "ladder", 0) / "branch_int8.tflite"
    with pytest.raises(LadderError, match="workers"):
        tflm_features(path, 1 << 20, _views(ds, "test")[:2], workers=0)


def test_a_worker_failure_names_the_file(tmp_path, tiny_ladder):
    """A file TFLite Micro cannot load fails the pass in the worker with the file named."""
    from slimedge.errors import SlimEdgeError

    root, ds, _ = tiny_ladder
    bad = tmp_path / "branch_int8.tflite"
    bad.write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(SlimEdgeError, match="branch_int8.tflite"):
        tflm_features(bad, 1 << 20, _views(ds, "test")[:4], workers=2)
