"""ModelNet40 12-view render import: layout, pixels, splits, errors, CLI."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slimedge.cli import main
from slimedge.data.container import SPLITS, load_dataset
from slimedge.data.modelnet import import_modelnet
from slimedge.data.splits import VAL, carve_val, n_val_for
from slimedge.errors import DatasetError

# class -> (train objects, test objects); numbering runs on from train into test, as ModelNet's
CLASSES = {"airplane": (5, 2), "chair": (8, 2), "night_stand": (3, 1)}
SIZE = (37, 29)  # odd, not square: stretched to the square output


def gray_of(number: int, view: int) -> int:
    """The uniform gray level written into an object's view, so order can be checked."""
    return 20 * view + number % 20


def view_name(cls: str, number: int, view: int) -> str:
    return f"{cls}_{number:04d}.obj.shaded_v{view:03d}.png"


def write_tree(root: Path, classes: dict[str, tuple[int, int]] = CLASSES, views: int = 12) -> Path:
    for cls, (n_train, n_test) in classes.items():
        for number in range(1, n_train + n_test + 1):
            split = "train" if number <= n_train else "test"
            folder = root / cls / split
            folder.mkdir(parents=True, exist_ok=True)
            for v in range(1, views + 1):
                g = gray_of(number, v)
                Image.new("RGB", SIZE, (g, g, g)).save(folder / view_name(cls, number, v))
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tree(tmp_path_factory.mktemp("modelnet") / "modelnet40_images_new_12x")


def expected_order() -> list[tuple[str, str, int]]:
    order = []
    for cls in sorted(CLASSES):
        n_train, n_test = CLASSES[cls]
        order += [(cls, "train", n) for n in range(1, n_train + 1)]
        order += [(cls, "test", n) for n in range(n_train + 1, n_train + n_test + 1)]
    return order


def test_import_shapes_labels_names_cameras(tree: Path) -> None:
    ds = import_modelnet(tree, image_size=16, progress=False)
    order = expected_order()
    assert ds.images.shape == (len(order), 12, 16, 16, 1) and ds.images.dtype == np.uint8
    assert ds.class_names == ["airplane", "chair", "night_stand"]
    assert ds.object_names == [f"{c}_{n:04d}" for c, _, n in order]
    assert ds.labels.tolist() == [ds.class_names.index(c) for c, _, _ in order]
    for i, (_, _, n) in enumerate(order):  # view v of the file lands at index v-1, every pixel
        for v in range(1, 13):
            assert (ds.images[i, v - 1] == gray_of(n, v)).all()
    assert [round(c["azimuth"]) for c in ds.cameras] == list(range(0, 360, 30))
    assert all(c["elevation"] == 30.0 for c in ds.cameras)
    p = ds.params
    assert p["source"] == "modelnet" and p["image_size"] == 16 and p["skipped_incomplete"] == 0
    assert p["root"] == str(tree.resolve()) and p["val_fraction"] == 0.15 and p["seed"] == 0


def test_val_is_carved_from_train_stratified_and_seeded(tree: Path) -> None:
    ds = import_modelnet(tree, image_size=8, val_fraction=0.5, seed=3, progress=False)
    order = expected_order()
    source = np.array([SPLITS.index(s) for _, s, _ in order])
    val = ds.split == VAL
    assert (source[val] == SPLITS.index("train")).all()  # val only from train
    assert (ds.split[source == SPLITS.index("test")] == SPLITS.index("test")).all()
    for c, cls in enumerate(ds.class_names):  # stratified: each class gives its own share
        assert int((val & (ds.labels == c)).sum()) == n_val_for(CLASSES[cls][0], 0.5)
    again = import_modelnet(tree, image_size=8, val_fraction=0.5, seed=3, progress=False)
    assert (again.split == ds.split).all()
    others = [
        import_modelnet(tree, image_size=8, val_fraction=0.5, seed=s, progress=False).split
        for s in (4, 5, 6)
    ]
    assert any((o != ds.split).any() for o in others)  # the seed matters


def test_val_carve_of_a_class_ignores_other_classes() -> None:
    split = np.zeros(20, dtype=np.uint8)
    labels = np.repeat([0, 1], 10)
    a = carve_val(split, labels, ["cup", "mug"], 0.3, seed=1)
    b = carve_val(split[10:], labels[10:] - 1, ["mug"], 0.3, seed=1)
    assert (a[10:] == b).all()  # adding 'cup' did not reshuffle 'mug'
    assert n_val_for(1, 0.5) == 0 and n_val_for(2, 0.01) == 1 and n_val_for(10, 0.99) == 9
    with pytest.raises(DatasetError, match="val_fraction"):
        carve_val(split, labels, ["cup", "mug"], 1.0, seed=1)


def test_grayscale_of_every_png_mode_on_known_pixels(tmp_path: Path) -> None:
    folder = tmp_path / "cup" / "train"
    folder.mkdir(parents=True)
    rgb = Image.new("RGB", (16, 16), (255, 255, 255))
    rgb.putpixel((3, 5), (200, 100, 50))  # luma 0.299*200 + 0.587*100 + 0.114*50 = 124.2
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # transparent -> white background
    rgba.putpixel((3, 5), (255, 0, 0, 255))  # opaque red: luma 76.2
    rgba.putpixel((4, 5), (0, 0, 0, 128))  # half-transparent black over white: 127
    gray = Image.new("L", (16, 16), 77)
    deep = Image.fromarray(np.full((16, 16), 257 * 90, dtype=np.uint16))  # 16-bit: 90
    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([0, 0, 255] + [0] * 765)  # blue: luma 29.07
    modes = [rgb, rgba, gray, deep, pal] + [gray] * 7
    for v, im in enumerate(modes, start=1):
        im.save(folder / view_name("cup", 1, v))
    ds = import_modelnet(tmp_path, image_size=16, val_fraction=0.0, progress=False)
    im = ds.images[0, ..., 0]
    assert im[0, 5, 3] == 124 and im[0, 0, 0] == 255
    assert im[1, 5, 3] == 76 and im[1, 0, 0] == 255 and abs(int(im[1, 5, 4]) - 127) <= 1
    assert (im[2] == 77).all() and (im[3] == 90).all() and (im[4] == 29).all()


def test_old_mvcnn_view_names_are_accepted(tmp_path: Path) -> None:
    folder = tmp_path / "lamp" / "test"
    folder.mkdir(parents=True)
    for v in range(1, 13):
        Image.new("L", (8, 8), 10 * v).save(folder / f"lamp_0007_{v:03d}.png")
    ds = import_modelnet(tmp_path, image_size=8, progress=False)
    assert ds.object_names == ["lamp_0007"] and ds.images[0, 11, 0, 0, 0] == 120


def _small_tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "root", {"chair": (4, 1), "desk": (2, 1)})


def test_missing_views_name_object_and_views(tmp_path: Path) -> None:
    root = _small_tree(tmp_path)
    for v in (5, 11):
        (root / "chair" / "train" / view_name("chair", 3, v)).unlink()
    message = r"chair/train/chair_0003: views 5, 11 missing of 1\.\.12"
    with pytest.raises(DatasetError, match=message):
        import_modelnet(root, image_size=8, progress=False)


def test_extra_view_is_an_error(tmp_path: Path) -> None:
    root = _small_tree(tmp_path)
    Image.new("RGB", SIZE).save(root / "desk" / "test" / view_name("desk", 3, 13))
    with pytest.raises(DatasetError, match=r"desk/test/desk_0003: view 13 extra of 1\.\.12"):
        import_modelnet(root, image_size=8, progress=False)


def test_skip_incomplete_warns_drops_and_records(tmp_path: Path) -> None:
    root = _small_tree(tmp_path)
    (root / "chair" / "train" / view_name("chair", 2, 7)).unlink()
    with pytest.warns(UserWarning, match=r"skipped 1 incomplete object.*chair_0002: view 7"):
        ds = import_modelnet(root, image_size=8, skip_incomplete=True, progress=False)
    assert "chair_0002" not in ds.object_names and ds.n_objects == 7
    assert ds.params["skipped_incomplete"] == 1
    assert ds.params["skipped_objects"] == ["chair/train/chair_0002"]
    assert ds.params["objects_found"] == 8 and ds.params["skip_incomplete"] is True


def test_skip_that_empties_a_class_is_an_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", {"chair": (2, 0), "desk": (1, 0)})
    (root / "desk" / "train" / view_name("desk", 1, 1)).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DatasetError, match="no complete object left in class 'desk'"):
            import_modelnet(root, image_size=8, skip_incomplete=True, progress=False)


def test_truncated_png_names_the_file(tmp_path: Path) -> None:
    root = _small_tree(tmp_path)
    bad = root / "chair" / "test" / view_name("chair", 5, 4)
    bad.write_bytes(bad.read_bytes()[:-30])
    with pytest.raises(DatasetError, match=re.escape(f"{bad}: unreadable PNG")):
        import_modelnet(root, image_size=8, workers=1, progress=False)


def test_non_png_content_with_png_name_is_an_error(tmp_path: Path) -> None:
    root = _small_tree(tmp_path)
    bad = root / "desk" / "train" / view_name("desk", 1, 2)
    Image.new("RGB", (8, 8)).save(bad, format="JPEG")
    with pytest.raises(DatasetError, match=re.escape(f"{bad}: not a PNG file")):
        import_modelnet(root, image_size=8, progress=False)


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda r: r / "nope", "no such folder"),
        (lambda r: (r / "empty").mkdir() or r / "empty", "no class folders"),
        (lambda r: (r / "chair" / "train").mkdir(parents=True) or r, "no PNG renders found"),
        (lambda r: (r / "chair" / "validation").mkdir(parents=True) or r,
         "'validation' is not a split folder"),
    ],
)
def test_bad_roots(tmp_path: Path, setup, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        import_modelnet(setup(tmp_path), progress=False)


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = _small_tree(tmp_path)
    (root / "lamp" / "train").mkdir(parents=True)
    message = re.escape(f"{root / 'lamp'}: class folder holds no objects")
    with pytest.raises(DatasetError, match=message):
        import_modelnet(root, image_size=8, progress=False)


def test_name_rules(tmp_path: Path) -> None:
    root = _small_tree(tmp_path)
    (root / "chair" / "train" / "README.txt").write_text("not a render")  # ignored
    (root / "chair" / "train" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored
    (root / "list.txt").write_text("ignored")
    assert import_modelnet(root, image_size=8, progress=False).n_objects == 8
    stray = root / "chair" / "train" / view_name("desk", 9, 1)  # other class's prefix
    Image.new("L", (8, 8)).save(stray)
    with pytest.raises(DatasetError, match=re.escape(f"{stray}: name does not follow")):
        import_modelnet(root, image_size=8, progress=False)


def test_same_object_in_train_and_test_is_an_error(tmp_path: Path) -> None:
    root = _small_tree(tmp_path)
    for v in range(1, 13):
        Image.new("L", (8, 8)).save(root / "desk" / "test" / view_name("desk", 1, v))
    with pytest.raises(DatasetError, match="both train/ and test/: desk_0001"):
        import_modelnet(root, image_size=8, progress=False)


def test_bad_arguments(tree: Path) -> None:
    for kwargs, field in [({"image_size": 4}, "image_size"), ({"val_fraction": -0.1},
                          "val_fraction"), ({"workers": 0}, "workers"), ({"views": 0}, "views")]:
        with pytest.raises(DatasetError, match=field):
            import_modelnet(tree, progress=False, **kwargs)


def test_parallel_decode_matches_serial(tree: Path) -> None:
    serial = import_modelnet(tree, image_size=12, workers=1, progress=False)
    parallel = import_modelnet(tree, image_size=12, workers=2, progress=False)
    assert parallel.content_hash() == serial.content_hash()
    assert parallel.object_names == serial.object_names


def test_cli_round_trip(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    argv = ["data", "import-modelnet", str(tree), "--out", str(out), "--image-size", "20",
            "--val-fraction", "0.3", "--seed", "2", "--workers", "1", "--json"]
    assert main(argv) == 0
    made = json.loads(capsys.readouterr().out)
    assert main(["data", "info", str(out), "--json", "--verify"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["objects"] == sum(a + b for a, b in CLASSES.values()) and info["views"] == 12
    assert info["classes"] == sorted(CLASSES) and info["image_size"] == [20, 20]
    assert info["content_hash"] == made["content_hash"] and info["verified"] is True
    assert info["params"]["seed"] == 2 and info["params"]["val_fraction"] == 0.3
    assert info["splits"]["val"] == sum(n_val_for(a, 0.3) for a, _ in CLASSES.values())
    ds = load_dataset(out)
    assert ds.object_names[0] == "airplane_0001" and len(ds.cameras) == 12


def test_cli_error_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _small_tree(tmp_path)
    (root / "desk" / "train" / view_name("desk", 2, 12)).unlink()
    out = tmp_path / "ds"
    assert main(["data", "import-modelnet", str(root), "--out", str(out), "--json"]) == 2
    err = capsys.readouterr().err
    assert "desk/train/desk_0002: view 12 missing of 1..12" in err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".ds")]
