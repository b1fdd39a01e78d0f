"""A vectorized NumPy z-buffer rasterizer: triangle meshes to shaded grayscale views.

Every triangle of every view is handled at once: per-triangle pixel bounding boxes are expanded
into candidate pixels (np.repeat/cumsum), each candidate gets an inside test and a depth from the
triangle's plane, and the nearest candidate per pixel wins (one lexsort). There is no Python loop
over triangles or pixels, so meshes of thousands of triangles render in milliseconds per view.

Cameras are orthographic on the ring of `slimedge.data.cameras`; the unit sphere fills the frame
with a small margin. Shading is two-sided Lambert + ambient with flat (per-face) normals, lit from
a direction fixed relative to the camera, so every view is lit alike; the background is 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from slimedge.data.cameras import camera_axes
from slimedge.errors import DatasetError

MARGIN = 0.05  # the unit sphere spans 1/(1+MARGIN) of the frame
FRAGMENT_CHUNK = 1 << 20  # covered pixels resolved at once (bounds memory to ~100 MB)
DEFAULT_LIGHT: dict[str, float] = {
    "azimuth": -35.0,  # degrees from the viewing direction, negative: from the image's left
    "elevation": 35.0,  # degrees above the viewing direction
    "ambient": 0.3,
    "diffuse": 0.7,
}
_UP_AXES = ("z", "y")


def normalize_mesh(vertices: np.ndarray, up: str = "z") -> np.ndarray:
    """Centre on the bounding-box centre and scale into the unit sphere; +z up.

    `up="y"` rotates a +y-up mesh to +z-up (its +z front then faces -y, our front).
    """
    if up not in _UP_AXES:
        raise DatasetError(f"up: expected one of {list(_UP_AXES)}, got {up!r}")
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise DatasetError(f"vertices: expected shape (N, 3), got {v.shape}")
    if v.shape[0] == 0:
        raise DatasetError("vertices: the mesh has no vertices")
    if not np.isfinite(v).all():
        raise DatasetError("vertices: non-finite coordinates (NaN or inf)")
    if up == "y":  # (x, y, z) -> (x, -z, y): +y becomes +z, +z becomes -y
        v = np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)
    centre = (v.min(axis=0) + v.max(axis=0)) / 2.0
    v = v - centre
    radius = float(np.sqrt((v * v).sum(axis=1)).max())
    if radius <= 0.0 or not np.isfinite(radius):
        raise DatasetError("vertices: all vertices coincide (the mesh has no extent)")
    return v / radius


def _check_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise DatasetError(f"vertices: expected shape (N, 3), got {v.shape}")
    if not np.isfinite(v).all():
        raise DatasetError("vertices: non-finite coordinates (NaN or inf)")
    f = np.asarray(faces)
    if f.size == 0:
        return v, np.zeros((0, 3), dtype=np.int64)
    if f.ndim != 2 or f.shape[1] != 3:
        raise DatasetError(f"faces: expected shape (M, 3), got {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        raise DatasetError(f"faces: expected integer vertex indices, got {f.dtype}")
    if f.min() < 0 or f.max() >= v.shape[0]:
        raise DatasetError(
            f"faces: vertex indices must lie in 0..{v.shape[0] - 1}, "
            f"got {int(f.min())}..{int(f.max())}"
        )
    return v, f.astype(np.int64)


def _light_setup(light: Mapping[str, float] | None) -> dict[str, float]:
    setup = dict(DEFAULT_LIGHT)
    if light:
        unknown = set(light) - set(DEFAULT_LIGHT)
        if unknown:
            raise DatasetError(
                f"light: unknown keys {sorted(unknown)} (expected {sorted(DEFAULT_LIGHT)})"
            )
        setup.update({k: float(x) for k, x in light.items()})
    return setup


def render_views(
    vertices: np.ndarray,
    faces: np.ndarray,
    cameras: Sequence[Mapping[str, float]],
    image_size: int,
    *,
    light: Mapping[str, float] | None = None,
    albedo: np.ndarray | None = None,
    supersample: int = 1,
) -> np.ndarray:
    """Render a unit-sphere-normalized, +z-up triangle mesh from each camera.

    Returns uint8 `(V, image_size, image_size)`. `light` overrides keys of `DEFAULT_LIGHT`;
    `albedo` (per face, 0..1) tints faces; `supersample` renders at k times the size and
    box-filters down (smoother edges, thin parts stay visible). Faces of either winding,
    open meshes and degenerate triangles are all fine.
    """
    if int(image_size) != image_size or image_size < 1:
        raise DatasetError(f"image_size: need a positive whole number, got {image_size!r}")
    if int(supersample) != supersample or supersample < 1:
        raise DatasetError(f"supersample: need a positive whole number, got {supersample!r}")
    v, f = _check_mesh(vertices, faces)
    n_views, size = len(cameras), int(image_size) * int(supersample)
    if albedo is None:
        face_albedo = np.ones(len(f))
    else:
        face_albedo = np.asarray(albedo, dtype=np.float64).reshape(-1)
        if face_albedo.shape != (len(f),):
            raise DatasetError(
                f"albedo: expected {len(f)} values (one per face), got {face_albedo.size}"
            )
    setup = _light_setup(light)
    axes = np.stack([camera_axes(c) for c in cameras]) if n_views else np.zeros((0, 3, 3))
    out = np.zeros(n_views * size * size, dtype=np.float64)
    if len(f) and n_views:
        _rasterize(v, f, face_albedo, axes, size, setup, out)
    img = out.reshape(n_views, size, size)
    k = int(supersample)
    if k > 1:
        img = img.reshape(n_views, image_size, k, image_size, k).mean(axis=(2, 4))
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _shading(
    v: np.ndarray, f: np.ndarray, face_albedo: np.ndarray, axes: np.ndarray, s: dict[str, float]
) -> np.ndarray:
    """(V, M) brightness of each face in each view: two-sided Lambert + ambient."""
    normal = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    la, le = np.radians(s["azimuth"]), np.radians(s["elevation"])
    # Light direction in each camera's frame: right, up, towards-camera components.
    light = np.array([np.sin(la) * np.cos(le), np.sin(le), np.cos(la) * np.cos(le)]) @ axes
    facing = normal @ axes[:, 2].T  # (M, V): > 0 where the face's normal points at the camera
    lit = normal @ light.T * np.where(facing < 0, -1.0, 1.0)  # flip back faces: two-sided
    shade = s["ambient"] + s["diffuse"] * np.maximum(lit, 0.0)
    return (shade * face_albedo[:, None]).T


def _rasterize(
    v: np.ndarray,
    f: np.ndarray,
    face_albedo: np.ndarray,
    axes: np.ndarray,
    size: int,
    setup: dict[str, float],
    out: np.ndarray,
) -> None:
    scale = size / (2.0 * (1.0 + MARGIN))
    cam = np.einsum("vij,nj->vni", axes, v)  # (V, N, 3): right, up, towards camera
    sx = cam[..., 0] * scale + size / 2.0
    sy = size / 2.0 - cam[..., 1] * scale
    depth = -cam[..., 2]  # smaller is nearer
    x, y, z = (a[:, f] for a in (sx, sy, depth))  # (V, M, 3) each
    ex1, ey1 = x[..., 1] - x[..., 0], y[..., 1] - y[..., 0]
    ex2, ey2 = x[..., 2] - x[..., 0], y[..., 2] - y[..., 0]
    area2 = ex1 * ey2 - ex2 * ey1
    # Pixel centres sit at i + 0.5: the rows whose centres a triangle spans.
    ylo = np.clip(np.ceil(y.min(axis=2) - 0.5), 0, size).astype(np.int64)
    yhi = np.clip(np.floor(y.max(axis=2) - 0.5), -1, size - 1).astype(np.int64)
    xlo = np.ceil(x.min(axis=2) - 0.5)
    xhi = np.floor(x.max(axis=2) - 0.5)
    keep = (np.abs(area2) > 1e-9) & (yhi >= ylo) & (xhi >= 0) & (xlo <= size - 1)
    if not keep.any():
        return
    view_of, face_of = np.nonzero(keep)  # drops degenerate and off-frame triangles
    xk, yk, zk = x[keep], y[keep], z[keep]  # (T, 3)
    # Depth on the triangle's plane: z = az * px + bz * py + cz.
    inv = 1.0 / area2[keep]
    dz1, dz2 = zk[:, 1] - zk[:, 0], zk[:, 2] - zk[:, 0]
    az = (dz1 * ey2[keep] - dz2 * ey1[keep]) * inv
    bz = (dz2 * ex1[keep] - dz1 * ex2[keep]) * inv
    cz = zk[:, 0] - az * xk[:, 0] - bz * yk[:, 0]
    zmin, zmax = zk.min(axis=1), zk.max(axis=1)
    shade = _shading(v, f, face_albedo, axes, setup)[view_of, face_of]

    # Level 1: one entry per (triangle, row); the row's covered span from the three edges.
    rows = yhi[keep] - ylo[keep] + 1
    tri = np.repeat(np.arange(rows.size), rows)
    py = ylo[keep][tri] + (np.arange(tri.size) - np.repeat(np.cumsum(rows) - rows, rows))
    cy = py + 0.5
    lo = np.full(tri.size, np.inf)
    hi = np.full(tri.size, -np.inf)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        xi, yi, xj, yj = xk[tri, i], yk[tri, i], xk[tri, j], yk[tri, j]
        dy = yj - yi
        on = (np.minimum(yi, yj) <= cy) & (cy <= np.maximum(yi, yj)) & (dy != 0)
        xe = xi + (cy - yi) * (xj - xi) / np.where(on, dy, 1.0)
        lo = np.where(on, np.minimum(lo, xe), lo)
        hi = np.where(on, np.maximum(hi, xe), hi)
    found = np.isfinite(lo)
    x0 = np.maximum(np.ceil(np.where(found, lo, 0.0) - 0.5), 0).astype(np.int64)
    x1 = np.minimum(np.floor(np.where(found, hi, -1.0) - 0.5), size - 1).astype(np.int64)
    span = np.maximum(x1 - x0 + 1, 0)
    # Level 2: one entry per covered pixel, in chunks of rows so memory stays bounded however
    # deep the mesh is; a running z-buffer carries the nearest depth across chunks.
    zbuf = np.full(out.shape, np.inf)
    ends = np.cumsum(span)
    cuts = np.searchsorted(ends, np.arange(FRAGMENT_CHUNK, int(ends[-1]), FRAGMENT_CHUNK))
    for rows_lo, rows_hi in zip(np.r_[0, cuts], np.r_[cuts, span.size], strict=True):
        if rows_hi > rows_lo:
            _resolve(rows_lo, rows_hi, span, x0, tri, cy, py, view_of, size,
                     (az, bz, cz, zmin, zmax), shade, zbuf, out)  # fmt: skip


def _resolve(
    lo: int,
    hi: int,
    span: np.ndarray,
    x0: np.ndarray,
    tri: np.ndarray,
    cy: np.ndarray,
    py: np.ndarray,
    view_of: np.ndarray,
    size: int,
    plane: tuple[np.ndarray, ...],
    shade: np.ndarray,
    zbuf: np.ndarray,
    out: np.ndarray,
) -> None:
    """Fragments of rows lo..hi: depth test against `zbuf`, write winners' shade to `out`."""
    az, bz, cz, zmin, zmax = plane
    sp = span[lo:hi]
    row = lo + np.repeat(np.arange(sp.size), sp)
    px = x0[row] + (np.arange(row.size) - np.repeat(np.cumsum(sp) - sp, sp))
    t = tri[row]
    zpix = np.clip(az[t] * (px + 0.5) + bz[t] * cy[row] + cz[t], zmin[t], zmax[t])
    pixel = (view_of[t] * size + py[row]) * size + px
    # Nearest fragment per pixel (lexsort is stable: equal depths go to the lower face index),
    # kept only if strictly nearer than what earlier chunks left there.
    order = np.lexsort((zpix, pixel))
    first = np.ones(order.size, dtype=bool)
    first[1:] = pixel[order[1:]] != pixel[order[:-1]]
    win = order[first]
    win = win[zpix[win] < zbuf[pixel[win]]]
    zbuf[pixel[win]] = zpix[win]
    out[pixel[win]] = shade[t[win]]
