"""Mesh files (.off, .obj, .stl) and importing a tree of them, rendered with the camera ring.

Layout read by `import_meshes`:

    <root>/<class>/{train,test}/<name>.{off,obj,stl}      (suffix case ignored)

Other files (.mtl materials, textures, READMEs) and hidden entries are ignored; the class,
split and object rules are those of the ModelNet importer (`modelnet.py`). Object names are
`<class>/<name>`. Each mesh is reduced to the vertices its faces use, centred, scaled to the
unit sphere and turned upright (`render.normalize_mesh`), then rendered from every camera of
`cameras.camera_ring(azimuths, elevations)`, giving V = azimuths x len(elevations) views.

The readers are plain NumPy/Python and accept the forms found in the wild:
- OFF: comments, the counts on the header line (`OFF490 518 0`, ModelNet's malformed form),
  polygon faces (fan-triangulated), extra per-vertex and per-face values (colours) ignored.
- OBJ: `v` and `f` records only (others ignored); `f` corners as `v`, `v/vt`, `v//vn`,
  `v/vt/vn`, negative (relative) indices, polygons (fan-triangulated), `\\` line joins.
- STL: binary and ASCII. A file is binary when its size is exactly 84 + 50 x (the triangle
  count at byte 80), even if its header starts with "solid" (many exporters write that).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.data.container import SPLITS, Dataset
from slimedge.data.modelnet import (
    MIN_PARALLEL_TASKS,
    SOURCE_SPLITS,
    check_disjoint_splits,
    check_image_size,
    class_folders,
    split_folders,
    visible_entries,
)
from slimedge.data.splits import carve_val, check_val_fraction
from slimedge.errors import DatasetError
from slimedge.parallel import map_ordered, resolve_workers

MESH_SUFFIXES = (".off", ".obj", ".stl")
LAYOUT = "<root>/<class>/{train,test}/*.{off,obj,stl}"
# Render at 2x and box-filter down: smooth edges, and thin parts (legs, stems) do not vanish.
SUPERSAMPLE = 2


class _FormatError(ValueError):
    """A parse problem; read_mesh prefixes the file name."""


# -- OFF ------------------------------------------------------------------------------------------
_OFF_HEADER = re.compile(r"^(?P<kind>(?:ST)?C?N?4?n?OFF)(?P<rest>.*)$")


def _content_lines(text: str) -> list[tuple[int, list[str]]]:
    """(line number, tokens) of every line with content, comments removed."""
    out = []
    for no, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if line:
            out.append((no, line.split()))
    return out


def _floats(tokens: list[str], no: int, what: str) -> list[float]:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise _FormatError(f"line {no}: {what} is not numeric: {' '.join(tokens)!r}") from None


def _ints(tokens: list[str], no: int, what: str) -> list[int]:
    try:
        return [int(t) for t in tokens]
    except ValueError:
        raise _FormatError(f"line {no}: {what} is not an integer: {' '.join(tokens)!r}") from None


def _fan(polygons: list[list[int]]) -> np.ndarray:
    """Triangles (a, b, c) fanned from each polygon's first corner."""
    tris = [
        (poly[0], poly[k], poly[k + 1]) for poly in polygons for k in range(1, len(poly) - 1)
    ]
    return np.array(tris, dtype=np.int64).reshape(-1, 3)


def parse_off(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = _content_lines(text)
    if not lines:
        raise _FormatError("empty file (no OFF header)")
    no, tokens = lines[0]
    m = _OFF_HEADER.match(tokens[0])
    if m is None:
        raise _FormatError(f"line {no}: no OFF header (file starts with {tokens[0][:20]!r})")
    kind = m["kind"]
    if "4" in kind or "n" in kind:
        raise _FormatError(f"line {no}: {kind} (vertices not in 3-D) is not supported")
    rest = ([m["rest"]] if m["rest"] else []) + tokens[1:]  # OFF490 518 0 -> counts here
    if any(t.upper() == "BINARY" for t in rest):
        raise _FormatError(f"line {no}: binary OFF is not supported (save it as text OFF)")
    pos = 1
    if not rest:
        if len(lines) < 2:
            raise _FormatError("file ends before the vertex/face counts")
        no, rest = lines[1]
        pos = 2
    if len(rest) < 2:
        raise _FormatError(f"line {no}: expected 'vertices faces [edges]' counts, got {rest}")
    nv, nf = _ints(rest[:2], no, "the vertex/face count")
    if nv < 0 or nf < 0:
        raise _FormatError(f"line {no}: negative counts {nv} {nf}")
    if len(lines) < pos + nv + nf:
        got = len(lines) - pos
        raise _FormatError(f"file ends early: header promises {nv} vertices and {nf} faces "
                           f"({nv + nf} lines), found {got} data lines")
    vert_lines = lines[pos : pos + nv]
    verts = np.empty((nv, 3), dtype=np.float64)
    for i, (no, t) in enumerate(vert_lines):
        if len(t) < 3:
            raise _FormatError(f"line {no}: vertex needs 3 coordinates, got {' '.join(t)!r}")
        verts[i] = _floats(t[:3], no, "vertex")  # extra values (colours, normals) ignored
    polygons = []
    for no, t in lines[pos + nv : pos + nv + nf]:
        (n,) = _ints(t[:1], no, "face corner count")
        if n < 3 or len(t) < n + 1:
            raise _FormatError(f"line {no}: face needs a count >= 3 and that many vertex "
                               f"indices, got {' '.join(t)!r}")
        polygons.append(_ints(t[1 : n + 1], no, "face vertex index"))  # colours after: ignored
    return verts, _fan(polygons)


# -- OBJ ------------------------------------------------------------------------------------------
def parse_obj(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
    text = re.sub(r"\\\r?\n", " ", text)  # a trailing backslash continues the record
    verts: list[list[float]] = []
    polygons: list[list[int]] = []
    for no, line in enumerate(text.splitlines(), start=1):
        t = line.split("#", 1)[0].split()
        if not t:
            continue
        if t[0] == "v":
            if len(t) < 4:
                raise _FormatError(f"line {no}: vertex needs 3 coordinates: {line.strip()!r}")
            verts.append(_floats(t[1:4], no, "vertex"))  # w or colour values ignored
        elif t[0] == "f":
            if len(t) < 4:
                raise _FormatError(f"line {no}: face needs at least 3 corners: {line.strip()!r}")
            corners = _ints([c.split("/", 1)[0] for c in t[1:]], no, "face vertex index")
            poly = []
            for c in corners:
                if c == 0:
                    raise _FormatError(f"line {no}: vertex index 0 (OBJ counts from 1)")
                idx = c - 1 if c > 0 else len(verts) + c  # negative: relative to vertices so far
                if idx < 0:
                    raise _FormatError(f"line {no}: relative index {c} points before the first "
                                       f"vertex ({len(verts)} defined so far)")
                poly.append(idx)
            polygons.append(poly)
    return np.array(verts, dtype=np.float64).reshape(-1, 3), _fan(polygons)


# -- STL ------------------------------------------------------------------------------------------
_STL_RECORD = np.dtype([("normal", "<f4", (3,)), ("corners", "<f4", (3, 3)), ("attr", "<u2")])


def _binary_stl_count(data: bytes) -> int | None:
    """Triangle count if `data` has the exact size of a binary STL, else None."""
    if len(data) < 84:
        return None
    n = int(np.frombuffer(data, dtype="<u4", count=1, offset=80)[0])
    return n if len(data) == 84 + 50 * n else None


def _merge_corners(corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """STL repeats each corner per triangle: merge identical corners into shared vertices."""
    flat = corners.reshape(-1, 3).astype(np.float64)
    if flat.size == 0:
        return flat.reshape(0, 3), np.zeros((0, 3), dtype=np.int64)
    verts, inverse = np.unique(flat, axis=0, return_inverse=True)
    return verts, inverse.reshape(-1, 3).astype(np.int64)


def _parse_ascii_stl(text: str) -> tuple[np.ndarray, np.ndarray]:
    tokens = text.split()
    loops: list[list[list[float]]] = []
    current: list[list[float]] | None = None
    i = 0
    while i < len(tokens):
        word = tokens[i].lower()
        if word == "loop":
            current = []
        elif word == "vertex":
            if current is None:
                raise _FormatError(f"ASCII STL: 'vertex' outside 'outer loop' (token {i})")
            try:
                current.append([float(x) for x in tokens[i + 1 : i + 4]])
            except ValueError:
                raise _FormatError(f"ASCII STL: vertex {tokens[i + 1 : i + 4]} is not numeric") \
                    from None
            if len(current[-1]) != 3:
                raise _FormatError("ASCII STL: file ends inside a vertex")
            i += 3
        elif word == "endloop":
            if current is None or len(current) < 3:
                raise _FormatError("ASCII STL: a facet loop with fewer than 3 vertices")
            loops.append(current)
            current = None
        i += 1
    corners = []
    for loop in loops:  # loops are triangles in practice; fan any polygon
        corners.extend((loop[0], loop[k], loop[k + 1]) for k in range(1, len(loop) - 1))
    return _merge_corners(np.array(corners, dtype=np.float64).reshape(-1, 3, 3))


def parse_stl(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    n = _binary_stl_count(data)
    if n is None and data.lstrip()[:5].lower() == b"solid":
        return _parse_ascii_stl(data.decode("latin-1"))
    if n is None:
        if len(data) < 84:
            raise _FormatError(f"{len(data)} bytes: neither ASCII STL (no 'solid') nor binary "
                               f"STL (shorter than its 84-byte header)")
        declared = int(np.frombuffer(data, dtype="<u4", count=1, offset=80)[0])
        raise _FormatError(f"binary STL declares {declared} triangles ({84 + 50 * declared} "
                           f"bytes) but the file has {len(data)} bytes (truncated or not STL)")
    records = np.frombuffer(data, dtype=_STL_RECORD, count=n, offset=84)
    return _merge_corners(records["corners"])


# -- reading and checking -------------------------------------------------------------------------
_READERS: dict[str, Callable[[bytes], tuple[np.ndarray, np.ndarray]]] = {
    ".off": parse_off,
    ".obj": parse_obj,
    ".stl": parse_stl,
}


def check_mesh(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Raise a DatasetError naming `path` if the mesh cannot be rendered."""
    if faces.shape[0] == 0:
        raise DatasetError(f"{path}: mesh has no faces")
    if vertices.shape[0] == 0:
        raise DatasetError(f"{path}: mesh has no vertices")
    bad = np.flatnonzero(~np.isfinite(vertices).all(axis=1))
    if bad.size:
        i = int(bad[0])
        raise DatasetError(f"{path}: vertex {i} (counting from 0) has a non-finite coordinate "
                           f"{vertices[i].tolist()} ({bad.size} such vertices)")
    out = np.flatnonzero((faces < 0).any(axis=1) | (faces >= vertices.shape[0]).any(axis=1))
    if out.size:
        j = int(out[0])
        raise DatasetError(f"{path}: face {j} (counting from 0) refers to vertex indices "
                           f"{faces[j].tolist()} (counting from 0) but the mesh has "
                           f"{vertices.shape[0]} vertices")


def read_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a .off/.obj/.stl file: vertices (N, 3) float64, triangles (M, 3) int64 (0-based)."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DatasetError(f"{path}: unknown mesh format '{path.suffix}' (expected "
                           f"{', '.join(MESH_SUFFIXES)})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        vertices, faces = reader(data)
    except _FormatError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    check_mesh(path, vertices, faces)
    return vertices, faces


def used_vertices(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop vertices no face uses (they would shift the centre and scale) and reindex."""
    used, inverse = np.unique(faces.reshape(-1), return_inverse=True)
    return vertices[used], inverse.reshape(-1, 3).astype(np.int64)


# -- importing a tree -----------------------------------------------------------------------------
def _render_one(task: tuple[str, list[dict[str, float]], int, str]) -> np.ndarray:
    from slimedge.data.render import normalize_mesh, render_views

    path, cameras, image_size, up = task
    vertices, faces = used_vertices(*read_mesh(path))
    try:
        images = np.asarray(render_views(normalize_mesh(vertices, up), faces, cameras,
                                          image_size, supersample=SUPERSAMPLE))
    except DatasetError as exc:  # the renderer's messages name the field, add the file
        raise DatasetError(f"{path}: {exc}") from None
    if images.dtype != np.uint8 or images.shape != (len(cameras), image_size, image_size):
        raise DatasetError(f"{path}: renderer returned {images.dtype} {images.shape}, expected "
                           f"uint8 {(len(cameras), image_size, image_size)}")
    return images


def _scan(root: Path, classes: list[Path]) -> list[tuple[int, str, str, Path]]:
    """(class index, split, object name, path) of every mesh, in a fixed sorted order."""
    found: list[tuple[int, str, str, Path]] = []
    per_class: list[list[tuple[int, str, str, Path]]] = []
    for ci, class_dir in enumerate(classes):
        for e in visible_entries(class_dir):
            if e.is_file() and Path(e.name).suffix.lower() in MESH_SUFFIXES:
                raise DatasetError(f"{e.path}: mesh outside a split folder (expected "
                                   f"{class_dir.name}/train/ or {class_dir.name}/test/)")
        names_by_split: dict[str, dict[str, Path]] = {}
        for split, split_dir in split_folders(class_dir, LAYOUT):
            names: dict[str, Path] = {}
            for e in visible_entries(split_dir):
                if e.is_dir():
                    raise DatasetError(f"{e.path}: unexpected folder inside a split folder "
                                       f"(layout {LAYOUT})")
                p = Path(e.path)
                if p.suffix.lower() not in MESH_SUFFIXES:
                    continue  # materials, textures, notes
                if p.stem in names:
                    raise DatasetError(f"{p}: object '{p.stem}' also given by {names[p.stem].name}")
                names[p.stem] = p
            names_by_split[split] = names
        check_disjoint_splits(class_dir, names_by_split)
        per_class.append([
            (ci, split, f"{class_dir.name}/{stem}", names_by_split[split][stem])
            for split in SOURCE_SPLITS
            for stem in sorted(names_by_split.get(split, {}))
        ])
    if not any(per_class):
        raise DatasetError(f"{root}: no mesh files ({', '.join(MESH_SUFFIXES)}) found in any "
                           f"class folder (expected {LAYOUT})")
    for class_dir, items in zip(classes, per_class, strict=True):
        if not items:
            raise DatasetError(f"{class_dir}: class folder holds no meshes in train/ or test/")
        found.extend(items)
    return found


def parse_elevations(text: str) -> tuple[float, ...]:
    """'30,60' -> (30.0, 60.0)."""
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise DatasetError(f"elevations: expected degrees separated by commas, got {text!r}") \
            from None
    if not values:
        raise DatasetError("elevations: give at least one elevation in degrees")
    return values


def import_meshes(
    root: str | os.PathLike,
    *,
    image_size: int = 48,
    azimuths: int = 12,
    elevations: tuple[float, ...] | list[float] = (30.0,),
    up: str = "z",
    val_fraction: float = 0.15,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> Dataset:
    """Render every mesh of a class/split tree into an in-memory Dataset (nothing is written)."""
    from slimedge.data.cameras import camera_ring

    image_size = check_image_size(image_size)
    val_fraction = check_val_fraction(val_fraction)
    if up not in ("z", "y"):
        raise DatasetError(f"up: must be 'z' or 'y', got {up!r}")
    cameras = camera_ring(azimuths=azimuths, elevations=elevations)  # checks both
    elevations = tuple(float(e) for e in elevations)
    root, classes = class_folders(root, LAYOUT)
    class_names = [c.name for c in classes]
    meshes = _scan(root, classes)

    tasks = [(str(path), cameras, image_size, up) for _, _, _, path in meshes]
    images = np.empty((len(meshes), len(cameras), image_size, image_size, 1), dtype=np.uint8)
    n_workers = resolve_workers(workers, len(tasks), min_parallel=MIN_PARALLEL_TASKS,
                                error=DatasetError)
    results = map_ordered(_render_one, tasks, workers=n_workers, progress=progress,
                          desc="render meshes")
    for i, views in enumerate(results):
        images[i, ..., 0] = views

    labels = np.array([ci for ci, _, _, _ in meshes], dtype=np.int32)
    split = np.array([SPLITS.index(s) for _, s, _, _ in meshes], dtype=np.uint8)
    split = carve_val(split, labels, class_names, val_fraction, seed)
    formats: dict[str, int] = {}
    for _, _, _, path in meshes:
        formats[path.suffix.lower()[1:]] = formats.get(path.suffix.lower()[1:], 0) + 1
    params: dict[str, Any] = {
        "source": "meshes",
        "root": str(root.resolve()),
        "image_size": image_size,
        "azimuths": int(azimuths),
        "elevations": list(elevations),
        "up": up,
        "supersample": SUPERSAMPLE,
        "val_fraction": val_fraction,
        "seed": int(seed),
        "formats": dict(sorted(formats.items())),
    }
    return Dataset(
        images=images,
        labels=labels,
        class_names=class_names,
        split=split,
        params=params,
        cameras=cameras,
        object_names=[name for _, _, name, _ in meshes],
    )


# -- CLI ------------------------------------------------------------------------------------------
def add_cli_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-size", type=int, default=48,
                   help="square side of each rendered view in pixels (default 48)")
    p.add_argument("--azimuths", type=int, default=12,
                   help="cameras per elevation ring, evenly spaced in azimuth (default 12)")
    p.add_argument("--elevations", default="30",
                   help="camera elevations in degrees, comma separated, e.g. 30,60 (default 30)")
    p.add_argument("--up", choices=("z", "y"), default="z",
                   help="the meshes' up axis (default z, as ModelNet)")
    p.add_argument("--val-fraction", type=float, default=0.15,
                   help="share of each class's train objects moved to val (default 0.15)")
    p.add_argument("--seed", type=int, default=0, help="seed of the val carve (default 0)")
    p.add_argument("--workers", type=int, default=None,
                   help="render processes (default: all cores for large trees)")


def import_from_args(args: argparse.Namespace, progress: bool) -> Dataset:
    return import_meshes(
        args.root,
        image_size=args.image_size,
        azimuths=args.azimuths,
        elevations=parse_elevations(args.elevations),
        up=args.up,
        val_fraction=args.val_fraction,
        seed=args.seed,
        workers=args.workers,
        progress=progress,
    )
