"""Frame sources of the agent: replay order, image conversion, plug-ins, and the errors that
name what is wrong; the bounded drop-oldest queue between them and the link."""

from __future__ import annotations

import sys
import threading
import types

import numpy as np
import pytest

from slimedge.data.container import Dataset
from slimedge.runtime.bounded import DropOldestQueue
from slimedge.runtime.sources import SourceError, fit_image, open_source


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 3, 8, 8, 1), dtype=np.uint8)
    split = np.array([2, 0, 2, 1, 2, 2], np.uint8)  # test objects 0, 2, 4, 5
    Dataset(images=images, labels=np.zeros(6, np.int32), class_names=["a"],
            split=split).save(tmp_path / "dataset")
    return tmp_path, images


def test_replay_reads_view_v_of_test_object_i_as_frame_i(dataset):
    root, images = dataset
    src = open_source("replay", view=2, image_shape=(8, 8, 1), deploy_dir=root / "deploy")
    got = list(src)
    assert [i for i, _ in got] == [0, 1, 2, 3] and src.length == 4
    for (_, image), obj in zip(got, (0, 2, 4, 5), strict=True):
        assert np.array_equal(image, images[obj, 2])
    explicit = open_source(f"replay:{root / 'dataset'}", view=0, image_shape=(8, 8, 1),
                           deploy_dir=root)
    assert "test split, 4 objects, view 0" in explicit.describe


@pytest.mark.parametrize("spec, kw, match", [
    ("replay", dict(view=3), "has 3 views, this device sees view 3"),
    ("replay", dict(image_shape=(16, 16, 1)), r"holds \(8, 8, 1\) images, the branch takes"),
    ("replay:/nowhere", {}, "no such dataset"),
    ("camera", {}, "expected replay"),
    ("folder:", {}, "no folder given"),
    ("folder:/nowhere", {}, "no such folder"),
    ("plugin:os", {}, "expected plugin:MODULE:CLASS"),
    ("plugin:no_such_module_x:Cam", {}, "cannot import no_such_module_x"),
    ("plugin:os:NoSuchCamera", {}, "os has no NoSuchCamera"),
])
def test_bad_sources_are_named(dataset, spec, kw, match):
    root, _ = dataset
    args = dict(view=0, image_shape=(8, 8, 1), deploy_dir=root / "deploy") | kw
    with pytest.raises(SourceError, match=match):
        open_source(spec, **args)


def test_plugins_must_read_and_may_fail_cleanly(monkeypatch):
    mod = types.ModuleType("cams_for_test")

    class NoRead:
        def __init__(self, image_shape, view):
            pass

    class Broken:
        def __init__(self, image_shape, view):
            raise OSError("no /dev/video0")

    class Tiny:
        def __init__(self, image_shape, view):
            self.n = 0

        def read(self):
            self.n += 1
            return None if self.n > 2 else np.full((4, 4), 200, np.uint8)

    mod.NoRead, mod.Broken, mod.Tiny = NoRead, Broken, Tiny
    monkeypatch.setitem(sys.modules, "cams_for_test", mod)
    kw = dict(view=0, image_shape=(8, 8, 1), deploy_dir=None)
    with pytest.raises(SourceError, match="NoRead has no read"):
        open_source("plugin:cams_for_test:NoRead", **kw)
    with pytest.raises(SourceError, match=r"Broken\(image_shape=\(8, 8, 1\), view=0\) failed: "
                                          "no /dev/video0"):
        open_source("plugin:cams_for_test:Broken", **kw)
    frames = list(open_source("plugin:cams_for_test:Tiny", **kw))
    assert [i for i, _ in frames] == [0, 1]
    assert frames[0][1].shape == (8, 8, 1) and np.all(frames[0][1] == 200)


def test_fit_image_converts_size_and_channels():
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 255
    grey = fit_image(rgb, (5, 6, 1), where="x")
    assert grey.shape == (5, 6, 1) and grey.dtype == np.uint8
    assert np.all(grey == round(0.587 * 255))  # ITU-R 601 luma of pure green, as PIL
    same = np.ones((4, 4, 1), np.uint8)
    assert fit_image(same, (4, 4, 1), where="x") is same
    assert fit_image(np.ones((4, 4), np.uint8), (4, 4, 3), where="x").shape == (4, 4, 3)
    with pytest.raises(SourceError, match="cam: expected uint8 pixels"):
        fit_image(np.ones((4, 4), np.float32), (4, 4, 1), where="cam")
    with pytest.raises(SourceError, match="expected an image"):
        fit_image(np.ones((4, 4, 2), np.uint8), (4, 4, 1), where="cam")


def test_drop_oldest_queue_keeps_the_newest_and_counts():
    q: DropOldestQueue[int] = DropOldestQueue(3)
    assert [q.put(i) for i in range(5)] == [True, True, True, False, False]
    assert q.dropped == 2 and len(q) == 3
    assert [q.get_nowait() for _ in range(4)] == [2, 3, 4, None]
    assert q.get(timeout=0.01) is None
    threading.Timer(0.05, q.put, args=(9,)).start()
    assert q.get(timeout=5) == 9  # a waiting reader wakes on put
    with pytest.raises(ValueError, match="maxsize"):
        DropOldestQueue(0)
