"""Where an agent's frames come from: a replayed dataset split, a folder of images, or a camera
plug-in. Every source yields `(frame_id, image)` with image uint8 (H, W, C) in the branch's
input shape.

    --source replay[:DATASET_DIR]      view v of object i of the test split is frame i (the
                                       default dataset is <deploy>/../dataset), so every
                                       prediction can be checked against the evaluator
    --source folder:PATH               image files in name order (PNG, JPEG...), frame i = the
                                       i-th file, converted to the branch's size and channels
    --source plugin:MODULE:CLASS       a camera plug-in (the `Camera` protocol below)

A camera plug-in is any class built as `CLASS(image_shape=(H, W, C), view=v)` with::

    read() -> numpy uint8 array (H, W, C), or None once the camera has no more frames
    close() -> None            (optional)

It may return images of another size or channel count: they are converted like folder images.
No TensorFlow anywhere here; datasets load with NumPy only.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from slimedge.errors import SlimEdgeError

__all__ = ["Camera", "FrameSource", "SourceError", "fit_image", "open_source"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")


class SourceError(SlimEdgeError):
    """A frame source that cannot be opened or read (names the source and the problem)."""


@runtime_checkable
class Camera(Protocol):
    """The camera plug-in interface (see the module docstring)."""

    def read(self) -> np.ndarray | None: ...


def fit_image(image: np.ndarray, shape: tuple[int, int, int], *, where: str) -> np.ndarray:
    """`image` as uint8 (H, W, C) = `shape`: channels converted (RGB(A) <-> grey), resized
    with bilinear filtering when the size differs."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise SourceError(f"{where}: expected uint8 pixels, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise SourceError(f"{where}: expected an image (H, W[, 1|3|4]), got shape {arr.shape}")
    if arr.shape == shape:
        return arr
    h, w, c = shape
    pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    pil = pil.convert("L" if c == 1 else "RGB")
    if pil.size != (w, h):
        pil = pil.resize((w, h), Image.BILINEAR)
    out = np.asarray(pil, dtype=np.uint8)
    out = out[:, :, None] if out.ndim == 2 else out
    if out.shape != shape:
        raise SourceError(f"{where}: cannot convert an image of shape {arr.shape} to {shape}")
    return out


@dataclass
class FrameSource:
    """An opened source: iterate for `(frame_id, image)`; `describe` says what it is."""

    describe: str
    _frames: Iterator[tuple[int, np.ndarray]]
    length: int | None = None  # frames available, when known
    _close: object = None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return self._frames

    def close(self) -> None:
        if callable(self._close):
            self._close()


def open_source(spec: str, *, view: int, image_shape: tuple[int, int, int],
                deploy_dir: Path) -> FrameSource:
    """Open `spec` (see the module docstring) for the device that sees `view`."""
    kind, _, rest = spec.partition(":")
    if kind == "replay":
        return _replay(Path(rest) if rest else deploy_dir.parent / "dataset", view, image_shape)
    if kind == "folder":
        if not rest:
            raise SourceError("--source folder:PATH: no folder given")
        return _folder(Path(rest), image_shape)
    if kind == "plugin":
        return _plugin(rest, view, image_shape)
    raise SourceError(f"--source {spec!r}: expected replay[:DATASET], folder:PATH or "
                      "plugin:MODULE:CLASS")


def _replay(path: Path, view: int, shape: tuple[int, int, int]) -> FrameSource:
    from slimedge.data.container import SPLITS, load_dataset
    from slimedge.errors import DatasetError

    try:
        ds = load_dataset(path)
    except DatasetError as e:
        raise SourceError(f"--source replay: {e}") from None
    if not 0 <= view < ds.n_views:
        raise SourceError(f"--source replay: {path} has {ds.n_views} views, this device "
                          f"sees view {view}")
    test = ds.indices(SPLITS[2])
    got = (*ds.image_size, int(ds.images.shape[4]))
    if got != shape:
        raise SourceError(f"--source replay: {path} holds {got} images, the branch takes "
                          f"{shape} (was the deployment built from this dataset?)")

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        for i, obj in enumerate(test):
            yield i, np.asarray(ds.images[obj, view])

    return FrameSource(f"replay of {path} (test split, {len(test)} objects, view {view})",
                       frames(), len(test))


def _folder(path: Path, shape: tuple[int, int, int]) -> FrameSource:
    from PIL import Image, UnidentifiedImageError

    if not path.is_dir():
        raise SourceError(f"--source folder:{path}: no such folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"--source folder:{path}: no image files "
                          f"({', '.join(IMAGE_SUFFIXES)})")

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        for i, f in enumerate(files):
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("L" if shape[2] == 1 else "RGB"))
            except (OSError, UnidentifiedImageError) as e:
                raise SourceError(f"{f}: cannot read the image ({e})") from None
            yield i, fit_image(arr, shape, where=str(f))

    return FrameSource(f"folder {path} ({len(files)} images)", frames(), len(files))


def _plugin(target: str, view: int, shape: tuple[int, int, int]) -> FrameSource:
    module_name, _, class_name = target.partition(":")
    if not module_name or not class_name:
        raise SourceError(f"--source plugin:{target}: expected plugin:MODULE:CLASS")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ImportError as e:
        raise SourceError(f"--source plugin:{target}: cannot import {module_name} ({e})") \
            from None
    except AttributeError:
        raise SourceError(f"--source plugin:{target}: {module_name} has no {class_name}") \
            from None
    try:
        cam = cls(image_shape=shape, view=view)
    except Exception as e:  # noqa: BLE001 - third-party code: report, do not crash
        raise SourceError(f"--source plugin:{target}: {class_name}(image_shape={shape}, "
                          f"view={view}) failed: {e}") from None
    if not isinstance(cam, Camera):
        raise SourceError(f"--source plugin:{target}: {class_name} has no read() method")

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        i = 0
        while (image := cam.read()) is not None:
            yield i, fit_image(image, shape, where=f"camera {target} frame {i}")
            i += 1

    return FrameSource(f"camera plug-in {target}", frames(), None,
                       getattr(cam, "close", None))
