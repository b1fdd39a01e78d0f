"""Import the public ModelNet40 12-view renders (MVCNN layout) into a dataset container.

Layout read:

    <root>/<class>/<split>/<class>_<NNNN>.obj.shaded_v<VVV>.png    split in {train, test}
                                                                   VVV = 001 ... 012 (one-based)

The older MVCNN release names views `<class>_<NNNN>_<VVV>.png`; both forms are accepted.

Rules (each breach is a DatasetError naming the path):
- Class folders are the sub-folders of the root; their sorted names are the class names.
- Inside a class folder only `train/` and `test/` folders may appear.
- Every PNG must sit in `<class>/<split>/` and follow the name pattern with the class folder's
  name as prefix; files that are not PNGs (lists, READMEs) are ignored, and so are hidden
  entries (names starting with "."), e.g. macOS `._*` resource forks.
- Each object must have exactly the views 1..V, once each (or be skipped with a warning when
  `skip_incomplete`).
- The validation split is carved from train, stratified per class and seeded (`splits.py`).

Pixels: each PNG is decoded with Pillow and made grayscale with the ITU-R 601-2 luma transform
(L = 0.299 R + 0.587 G + 0.114 B); images with alpha are first composited over white (the
renders' background), 16-bit images are scaled to 8 bits. Images are then resized to
image_size x image_size (stretched if not square) with the Lanczos filter, which antialiases
when shrinking.
"""

from __future__ import annotations

import argparse
import os
import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from slimedge.data.container import SPLITS, Dataset
from slimedge.data.splits import carve_val, check_val_fraction
from slimedge.errors import DatasetError
from slimedge.parallel import map_ordered, resolve_workers

SOURCE_SPLITS = ("train", "test")  # the folders a source tree may hold; val is carved from train
RESAMPLE = Image.Resampling.LANCZOS
# Below this many tasks, starting worker processes costs more than it saves (auto mode only).
MIN_PARALLEL_TASKS = 64

_NEW_NAME = re.compile(r"^(?P<object>.+_(?P<number>\d+))\.obj\.shaded_v(?P<view>\d+)\.png$", re.I)
_OLD_NAME = re.compile(r"^(?P<object>.+_(?P<number>\d+))_(?P<view>\d{3})\.png$", re.I)


# -- tree scanning (shared with the mesh importer) -----------------------------------------------
def visible_entries(folder: Path) -> list[os.DirEntry]:
    """Entries of `folder` sorted by name, hidden ones (".*") left out."""
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if not e.name.startswith(".")]
    except OSError as exc:
        raise DatasetError(f"{folder}: cannot list folder ({exc.strerror or exc})") from exc
    return sorted(entries, key=lambda e: e.name)


def class_folders(root: str | os.PathLike, what: str) -> tuple[Path, list[Path]]:
    """Check the root and return it with its class folders (sorted); `what` names the layout."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected {what})")
    classes = [Path(e.path) for e in visible_entries(root) if e.is_dir()]
    if not classes:
        raise DatasetError(f"{root}: no class folders (expected {what})")
    return root, classes


def split_folders(class_dir: Path, what: str) -> list[tuple[str, Path]]:
    """The train/test folders of a class folder; any other folder is an error."""
    found = []
    for e in visible_entries(class_dir):
        if not e.is_dir():
            continue
        if e.name not in SOURCE_SPLITS:
            raise DatasetError(
                f"{e.path}: '{e.name}' is not a split folder (expected train/ or test/ inside "
                f"each class folder; layout {what} -- is the root one level too high?)"
            )
        found.append((e.name, Path(e.path)))
    return sorted(found, key=lambda s: SOURCE_SPLITS.index(s[0]))


def check_disjoint_splits(class_dir: Path, names_by_split: dict[str, dict[str, Any]]) -> None:
    """An object name may appear in one split only (the same object in train and test leaks)."""
    train = names_by_split.get("train", {})
    both = sorted(set(train) & set(names_by_split.get("test", {})))
    if both:
        shown = ", ".join(both[:5]) + (" ..." if len(both) > 5 else "")
        raise DatasetError(
            f"{class_dir}: {len(both)} object name(s) appear in both train/ and test/: {shown}"
        )


# -- pixels --------------------------------------------------------------------------------------
def to_gray(im: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit grayscale ("L"); alpha composited over white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit PNG grayscale: Pillow's own conversion clips rather than scales.
        a = np.asarray(im, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        return white.convert("L")
    return im if im.mode == "L" else im.convert("L")


def load_png(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """Decode one PNG fully (so truncation is caught) to uint8 (image_size, image_size)."""
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise DatasetError(f"{path}: not a PNG file (its content is {im.format})")
            im.load()
            gray = to_gray(im)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error,
            Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: unreadable PNG ({exc})") from exc
    if gray.size != (image_size, image_size):
        gray = gray.resize((image_size, image_size), RESAMPLE)
    return np.asarray(gray, dtype=np.uint8)


def _load_object(task: tuple[tuple[str, ...], int]) -> np.ndarray:
    paths, image_size = task
    return np.stack([load_png(p, image_size) for p in paths])


# -- scanning the render tree ---------------------------------------------------------------------
@dataclass
class _Object:
    class_index: int
    split: str
    name: str  # e.g. airplane_0001
    number: int
    where: str  # "airplane/train/airplane_0001", for messages
    views: dict[int, Path]


def _scan_class(class_dir: Path, class_index: int) -> list[_Object]:
    cls = class_dir.name
    names_by_split: dict[str, dict[str, _Object]] = {}
    for e in visible_entries(class_dir):  # PNGs directly in the class folder are misplaced
        if e.is_file() and e.name.lower().endswith(".png"):
            raise DatasetError(f"{e.path}: PNG outside a split folder (expected {cls}/train/ "
                               f"or {cls}/test/)")
    for split, split_dir in split_folders(class_dir, "<root>/<class>/<split>/*.png"):
        objects: dict[str, _Object] = {}
        for e in visible_entries(split_dir):
            if e.is_dir():
                raise DatasetError(f"{e.path}: unexpected folder inside a split folder")
            if not e.name.lower().endswith(".png"):
                continue  # lists, READMEs: not part of the layout
            m = _NEW_NAME.match(e.name) or _OLD_NAME.match(e.name)
            if m is None or m["object"][: -len(m["number"]) - 1] != cls:
                raise DatasetError(
                    f"{e.path}: name does not follow '{cls}_<NNNN>.obj.shaded_v<VVV>.png' "
                    f"(nor '{cls}_<NNNN>_<VVV>.png')"
                )
            name, view = m["object"], int(m["view"])
            obj = objects.get(name)
            if obj is None:
                obj = objects[name] = _Object(
                    class_index, split, name, int(m["number"]), f"{cls}/{split}/{name}", {}
                )
            if view in obj.views:
                raise DatasetError(
                    f"{e.path}: view {view} of {obj.where} also given by {obj.views[view].name}"
                )
            obj.views[view] = Path(e.path)
        names_by_split[split] = objects
    check_disjoint_splits(class_dir, names_by_split)
    return [
        obj
        for split in SOURCE_SPLITS
        for obj in sorted(names_by_split.get(split, {}).values(), key=lambda o: (o.number, o.name))
    ]


def _view_problem(obj: _Object, views: int) -> str | None:
    expected = set(range(1, views + 1))
    missing = sorted(expected - obj.views.keys())
    extra = sorted(obj.views.keys() - expected)
    parts = []
    if missing:
        parts.append(f"view{'s' if len(missing) > 1 else ''} "
                     f"{', '.join(map(str, missing))} missing")
    if extra:
        parts.append(f"view{'s' if len(extra) > 1 else ''} {', '.join(map(str, extra))} extra")
    if not parts:
        return None
    return f"{obj.where}: {'; '.join(parts)} of 1..{views}"


# -- cameras --------------------------------------------------------------------------------------
def mvcnn_ring(views: int) -> list[dict[str, float]]:
    """The camera ring the MVCNN renders were made with: 30 deg elevation, even azimuths."""
    from slimedge.data.cameras import camera_ring

    return camera_ring(azimuths=views, elevations=(30.0,))


# -- the importer ---------------------------------------------------------------------------------
def check_image_size(image_size: int) -> int:
    if int(image_size) != image_size or not 8 <= int(image_size) <= 1024:
        raise DatasetError(f"image_size: must be an integer in 8..1024, got {image_size}")
    return int(image_size)


def import_modelnet(
    root: str | os.PathLike,
    *,
    image_size: int = 48,
    skip_incomplete: bool = False,
    val_fraction: float = 0.15,
    seed: int = 0,
    views: int = 12,
    workers: int | None = None,
    progress: bool = True,
) -> Dataset:
    """Read a ModelNet40 12-view render tree into an in-memory Dataset (nothing is written)."""
    image_size = check_image_size(image_size)
    val_fraction = check_val_fraction(val_fraction)
    if int(views) < 1:
        raise DatasetError(f"views: must be at least 1, got {views}")
    views = int(views)
    root, classes = class_folders(root, "<root>/<class>/{train,test}/*.png")
    class_names = [c.name for c in classes]

    per_class = [_scan_class(class_dir, ci) for ci, class_dir in enumerate(classes)]
    if not any(per_class):
        raise DatasetError(f"{root}: no PNG renders found in any class folder (expected "
                           f"<root>/<class>/{{train,test}}/<class>_<NNNN>.obj.shaded_v<VVV>.png)")
    for class_dir, found_here in zip(classes, per_class, strict=True):
        if not found_here:
            raise DatasetError(f"{class_dir}: class folder holds no objects (no PNG renders in "
                               f"train/ or test/)")
    objects = [obj for found_here in per_class for obj in found_here]
    found = len(objects)

    problems = [(obj, p) for obj in objects if (p := _view_problem(obj, views)) is not None]
    skipped: list[str] = []
    if problems:
        if not skip_incomplete:
            shown = "\n  ".join(p for _, p in problems[:10])
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise DatasetError(
                f"{root}: {len(problems)} object(s) with missing or extra views "
                f"(pass skip_incomplete / --skip-incomplete to drop them):\n  {shown}{more}"
            )
        bad = {id(obj) for obj, _ in problems}
        skipped = [obj.where for obj, _ in problems]
        objects = [obj for obj in objects if id(obj) not in bad]
        warnings.warn(
            f"{root}: skipped {len(skipped)} incomplete object(s) (missing or extra views), "
            f"e.g. {problems[0][1]}",
            stacklevel=2,
        )
        kept = {obj.class_index for obj in objects}
        empty = [class_names[c] for c in range(len(class_names)) if c not in kept]
        if empty:
            raise DatasetError(
                f"{root / empty[0]}: no complete object left in class '{empty[0]}' after "
                f"skipping incomplete ones"
            )

    tasks = [
        (tuple(str(obj.views[v]) for v in range(1, views + 1)), image_size) for obj in objects
    ]
    images = np.empty((len(objects), views, image_size, image_size, 1), dtype=np.uint8)
    n_workers = resolve_workers(workers, len(tasks), min_parallel=MIN_PARALLEL_TASKS,
                                error=DatasetError)
    results = map_ordered(_load_object, tasks, workers=n_workers, progress=progress,
                          desc="decode renders", chunksize=16)
    for i, stack in enumerate(results):
        images[i, ..., 0] = stack

    labels = np.array([obj.class_index for obj in objects], dtype=np.int32)
    split = np.array([SPLITS.index(obj.split) for obj in objects], dtype=np.uint8)
    split = carve_val(split, labels, class_names, val_fraction, seed)
    params = {
        "source": "modelnet",
        "root": str(root.resolve()),
        "image_size": image_size,
        "views": views,
        "skip_incomplete": bool(skip_incomplete),
        "val_fraction": val_fraction,
        "seed": int(seed),
        "objects_found": found,
        "skipped_incomplete": len(skipped),
        "skipped_objects": skipped,
        "grayscale": "ITU-R 601-2 luma, alpha over white",
        "resample": "lanczos",
    }
    return Dataset(
        images=images,
        labels=labels,
        class_names=class_names,
        split=split,
        params=params,
        cameras=mvcnn_ring(views),
        object_names=[obj.name for obj in objects],
    )


# -- CLI ------------------------------------------------------------------------------------------
def add_cli_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-size", type=int, default=48,
                   help="square side in pixels the renders are resized to (default 48)")
    p.add_argument("--skip-incomplete", action="store_true",
                   help="drop objects with missing or extra views (with a warning) "
                        "instead of failing")
    p.add_argument("--val-fraction", type=float, default=0.15,
                   help="share of each class's train objects moved to val (default 0.15)")
    p.add_argument("--seed", type=int, default=0, help="seed of the val carve (default 0)")
    p.add_argument("--views", type=int, default=12,
                   help="views per object, numbered 1..V, on a 30 deg elevation ring (default 12)")
    p.add_argument("--workers", type=int, default=None,
                   help="decode processes (default: all cores for large trees)")


def import_from_args(args: argparse.Namespace, progress: bool) -> Dataset:
    return import_modelnet(
        args.root,
        image_size=args.image_size,
        skip_incomplete=args.skip_incomplete,
        val_fraction=args.val_fraction,
        seed=args.seed,
        views=args.views,
        workers=args.workers,
        progress=progress,
    )
