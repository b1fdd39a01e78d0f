"""Primitive solids as triangle meshes, with a per-face albedo, and ways to place and join them.

Units are free (objects are normalized to the unit sphere before rendering). +z is up. Winding
is not kept consistent: the renderer shades both sides of every face.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

Vec3 = Sequence[float]


@dataclass(frozen=True)
class Mesh:
    vertices: np.ndarray  # float64 (N, 3)
    faces: np.ndarray  # int64 (M, 3)
    albedo: np.ndarray  # float64 (M,), 0..1

    @staticmethod
    def of(vertices: np.ndarray, faces: np.ndarray, albedo: float | np.ndarray = 1.0) -> Mesh:
        v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
        f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
        a = np.broadcast_to(np.asarray(albedo, dtype=np.float64), (len(f),)).copy()
        return Mesh(v, f, a)

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    def moved(self, offset: Vec3) -> Mesh:
        return Mesh(self.vertices + np.asarray(offset, dtype=np.float64), self.faces, self.albedo)

    def scaled(self, factor: float | Vec3) -> Mesh:
        return Mesh(self.vertices * np.asarray(factor, dtype=np.float64), self.faces, self.albedo)

    def rotated(self, axis: str, degrees: float, about: Vec3 = (0.0, 0.0, 0.0)) -> Mesh:
        """Right-handed rotation about the x, y or z axis through point `about`."""
        r = rotation(axis, degrees)
        c = np.asarray(about, dtype=np.float64)
        return Mesh((self.vertices - c) @ r.T + c, self.faces, self.albedo)

    def painted(self, albedo: float) -> Mesh:
        return Mesh(self.vertices, self.faces, np.full(self.n_faces, float(albedo)))


def rotation(axis: str, degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    c, s = np.cos(t), np.sin(t)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    if axis == "z":
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")


def merge(parts: Iterable[Mesh]) -> Mesh:
    parts = [p for p in parts if p.n_faces]
    if not parts:
        return Mesh.of(np.zeros((0, 3)), np.zeros((0, 3)))
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    return Mesh(
        np.concatenate([p.vertices for p in parts]),
        np.concatenate([p.faces + o for p, o in zip(parts, offsets, strict=True)]),
        np.concatenate([p.albedo for p in parts]),
    )


_BOX_FACES = np.array(
    [[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
     [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]]
)  # fmt: skip


def box(size: Vec3, center: Vec3 = (0.0, 0.0, 0.0), albedo: float = 1.0) -> Mesh:
    """Axis-aligned box of extents `size` centred at `center`."""
    sx, sy, sz = (abs(float(s)) / 2.0 for s in size)
    corners = np.array(
        [
            [-sx, -sy, -sz],
            [sx, -sy, -sz],
            [sx, sy, -sz],
            [-sx, sy, -sz],
            [-sx, -sy, sz],
            [sx, -sy, sz],
            [sx, sy, sz],
            [-sx, sy, sz],
        ]
    )
    return Mesh.of(corners + np.asarray(center, dtype=np.float64), _BOX_FACES, albedo)


def box_between(lo: Vec3, hi: Vec3, albedo: float = 1.0) -> Mesh:
    """Axis-aligned box spanning corner `lo` to corner `hi`."""
    lo_, hi_ = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    return box(hi_ - lo_, (lo_ + hi_) / 2.0, albedo)


def revolve(
    radii: Sequence[float],
    heights: Sequence[float],
    *,
    segments: int = 16,
    albedo: float | Sequence[float] = 1.0,
    cap_start: bool = False,
    cap_end: bool = False,
    start_deg: float = 0.0,
    arc_deg: float = 360.0,
) -> Mesh:
    """Surface of revolution about +z of the profile (radius_i, height_i).

    `albedo` is one value or one per profile segment (len(radii) - 1). The caps close the first
    and last profile rings with discs. A partial `arc_deg` sweeps from `start_deg`, measured
    from +x towards +y.
    """
    r = np.asarray(radii, dtype=np.float64)
    z = np.asarray(heights, dtype=np.float64)
    k = len(r)
    full = arc_deg >= 360.0
    n_ring = segments if full else segments + 1
    t = np.radians(start_deg) + np.radians(arc_deg) * np.arange(n_ring) / segments
    ring = np.stack([np.cos(t), np.sin(t)], axis=1)
    verts = np.concatenate(
        [np.column_stack([ri * ring, np.full(n_ring, zi)]) for ri, zi in zip(r, z, strict=True)]
    )
    j = np.arange(segments)
    jn = (j + 1) % n_ring
    faces, seg_albedo = [], np.broadcast_to(np.asarray(albedo, dtype=np.float64), (k - 1,))
    albedos = []
    for i in range(k - 1):
        a, b = i * n_ring + j, i * n_ring + jn
        c, d = (i + 1) * n_ring + j, (i + 1) * n_ring + jn
        faces.append(np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]))
        albedos.append(np.full(2 * segments, seg_albedo[i]))
    for use, i, a_ in ((cap_start, 0, seg_albedo[0]), (cap_end, k - 1, seg_albedo[-1])):
        if use and r[i] > 0:
            centre = len(verts)
            verts = np.vstack([verts, [0.0, 0.0, z[i]]])
            faces.append(np.stack([np.full(segments, centre), i * n_ring + j, i * n_ring + jn], 1))
            albedos.append(np.full(segments, a_))
    return Mesh.of(verts, np.concatenate(faces), np.concatenate(albedos))


def frustum(
    r_bottom: float,
    r_top: float,
    height: float,
    base: Vec3 = (0.0, 0.0, 0.0),
    *,
    segments: int = 16,
    caps: bool = True,
    albedo: float = 1.0,
) -> Mesh:
    """Cone frustum standing on its bottom disc, whose centre is `base`."""
    m = revolve(
        [r_bottom, r_top],
        [0.0, height],
        segments=segments,
        albedo=albedo,
        cap_start=caps,
        cap_end=caps,
    )
    return m.moved(base)


def cylinder(radius: float, height: float, base: Vec3 = (0.0, 0.0, 0.0), **kwargs: object) -> Mesh:
    return frustum(radius, radius, height, base, **kwargs)  # type: ignore[arg-type]


def ellipsoid(
    radii: Vec3,
    center: Vec3 = (0.0, 0.0, 0.0),
    *,
    segments: int = 12,
    rings: int = 7,
    albedo: float = 1.0,
) -> Mesh:
    th = np.linspace(0.0, np.pi, rings + 1)
    m = revolve(np.sin(th), -np.cos(th), segments=segments, albedo=albedo)
    return m.scaled(radii).moved(center)


def sphere(radius: float, center: Vec3 = (0.0, 0.0, 0.0), **kwargs: object) -> Mesh:
    return ellipsoid((radius, radius, radius), center, **kwargs)  # type: ignore[arg-type]


def torus(
    major: float,
    minor: float,
    center: Vec3 = (0.0, 0.0, 0.0),
    *,
    segments: int = 16,
    tube_segments: int = 6,
    start_deg: float = 0.0,
    arc_deg: float = 360.0,
    albedo: float = 1.0,
) -> Mesh:
    """Ring about +z (a partial `arc_deg` makes a handle or a bow)."""
    s = np.linspace(0.0, 2 * np.pi, tube_segments + 1)
    m = revolve(
        major + minor * np.cos(s),
        minor * np.sin(s),
        segments=segments,
        albedo=albedo,
        start_deg=start_deg,
        arc_deg=arc_deg,
    )
    return m.moved(center)


def rod(
    p0: Vec3,
    p1: Vec3,
    radius: float,
    *,
    sides: int = 6,
    r1: float | None = None,
    albedo: float = 1.0,
) -> Mesh:
    """Closed cylinder (or frustum, with end radius `r1`) from point p0 to point p1."""
    a, b = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    d = b - a
    length = float(np.linalg.norm(d))
    m = frustum(radius, radius if r1 is None else r1, length, segments=sides, albedo=albedo)
    return Mesh(m.vertices @ _align_z(d / max(length, 1e-12)).T + a, m.faces, m.albedo)


def _align_z(direction: np.ndarray) -> np.ndarray:
    """Rotation taking +z to `direction` (unit)."""
    zhat = np.array([0.0, 0.0, 1.0])
    axis = np.cross(zhat, direction)
    s, c = float(np.linalg.norm(axis)), float(direction @ zhat)
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * (kx @ kx)


def prism(polygon: np.ndarray, thickness: float, *, plane: str = "xy", albedo: float = 1.0) -> Mesh:
    """Extrude a 2-D outline (star-shaped about its centroid) by `thickness`, centred on it.

    plane "xy": outline in (x, y), extruded along z; "xz": outline in (x, z), along y;
    "yz": outline in (y, z), along x.
    """
    p = np.asarray(polygon, dtype=np.float64)
    k = len(p)
    c = p.mean(axis=0)
    h = thickness / 2.0
    pts = np.vstack([p, c])
    bottom = np.column_stack([pts, np.full(k + 1, -h)])
    top = np.column_stack([pts, np.full(k + 1, h)])
    verts = np.vstack([bottom, top])
    i = np.arange(k)
    n = (i + 1) % k
    t0 = k + 1  # offset of the top layer
    faces = np.concatenate([
        np.stack([np.full(k, k), n, i], 1),  # bottom fan
        np.stack([np.full(k, t0 + k), t0 + i, t0 + n], 1),  # top fan
        np.stack([i, n, t0 + n], 1), np.stack([i, t0 + n, t0 + i], 1),  # sides
    ])  # fmt: skip
    order = {"xy": [0, 1, 2], "xz": [0, 2, 1], "yz": [1, 2, 0]}[plane]  # world axis per column
    return Mesh.of(verts[:, np.argsort(order)], faces, albedo)
