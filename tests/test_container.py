"""The dataset container: round trip, content hash, and clear errors for bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slimedge.cli import main
from slimedge.data.container import FORMAT_VERSION, Dataset, load_dataset
from slimedge.errors import DatasetError


def small_dataset(n: int = 9, views: int = 3, size: int = 4, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(
        images=rng.integers(0, 256, (n, views, size, size, 1), dtype=np.uint8),
        labels=(np.arange(n) % 3).astype(np.int32),
        class_names=["cup", "vase", "bottle"],
        split=(np.arange(n) % 3).astype(np.uint8),
        params={"source": "test"},
        cameras=[{"azimuth": 120.0 * v, "elevation": 30.0} for v in range(views)],
        object_names=[f"obj_{i}" for i in range(n)],
    )


def test_round_trip_and_hash(tmp_path):
    ds = small_dataset()
    digest = ds.save(tmp_path / "ds")
    back = load_dataset(tmp_path / "ds", verify=True)
    np.testing.assert_array_equal(back.images, ds.images)
    assert back.class_names == ds.class_names and back.object_names == ds.object_names
    assert back.content_hash() == digest
    assert back.split_counts() == {"train": 3, "val": 3, "test": 3}
    other = small_dataset(seed=1)
    assert other.content_hash() != digest


def test_info_json(tmp_path, capsys):
    small_dataset().save(tmp_path / "ds")
    assert main(["data", "info", str(tmp_path / "ds"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["objects"] == 9 and info["views"] == 3
    assert info["classes"] == ["cup", "vase", "bottle"]
    assert info["splits"] == {"train": 3, "val": 3, "test": 3}
    assert info["image_size"] == [4, 4]


def test_show_writes_contact_sheet(tmp_path, capsys):
    from PIL import Image

    small_dataset().save(tmp_path / "ds")
    out = tmp_path / "sheet.png"
    assert main(["data", "show", str(tmp_path / "ds"), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["objects"] == 8  # default rows, one class each first
    img = Image.open(out)
    assert img.size[0] > 3 * 8 and img.mode == "L"


def test_missing_path_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nope")]) == 2
    assert "no such dataset (path does not exist)" in capsys.readouterr().err


def test_other_format_version_is_rejected(tmp_path):
    small_dataset().save(tmp_path / "ds")
    meta_path = tmp_path / "ds" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"meta.json: field 'format_version' is 2; this slimedge"):
        load_dataset(tmp_path / "ds")


def test_corrupt_or_changed_files_are_rejected(tmp_path):
    small_dataset().save(tmp_path / "ds")
    (tmp_path / "ds" / "labels.npy").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"labels.npy: unreadable array"):
        load_dataset(tmp_path / "ds")
    small_dataset().save(tmp_path / "ds2")
    np.save(tmp_path / "ds2" / "labels.npy", np.zeros(9, np.int32))
    with pytest.raises(DatasetError, match="content hash does not match"):
        load_dataset(tmp_path / "ds2", verify=True)
    (tmp_path / "ds3").mkdir()
    with pytest.raises(DatasetError, match="not a slimedge dataset directory"):
        load_dataset(tmp_path / "ds3")


def test_inconsistent_arrays_are_rejected():
    ds = small_dataset()
    with pytest.raises(DatasetError, match=r"labels must lie in 0..2"):
        Dataset(ds.images, ds.labels + 5, ds.class_names, ds.split)
    with pytest.raises(DatasetError, match=r"images must be uint8 \(N, V, H, W, 1\)"):
        Dataset(ds.images.astype(np.float32), ds.labels, ds.class_names, ds.split)
    with pytest.raises(DatasetError, match="2 cameras for 3 views"):
        Dataset(ds.images, ds.labels, ds.class_names, ds.split, cameras=[{}, {}])


def test_failed_save_keeps_previous_dataset(tmp_path, monkeypatch):
    good = small_dataset()
    digest = good.save(tmp_path / "ds")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError):
        small_dataset(seed=3).save(tmp_path / "ds")
    monkeypatch.undo()
    assert load_dataset(tmp_path / "ds", verify=True).content_hash() == digest
