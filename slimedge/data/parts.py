"""Composite parts shared by several object classes: legs, drawer fronts, open cabinets, vessels.

Frame: +z up, the object's front faces -y, width along x. Details that tell classes apart (drawer
gaps, handles, open shelves, screens) are put on the front face only, so a camera that sees the
front learns more than one that sees the back, as with real furniture.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from slimedge.data.shapes import Mesh, box_between, merge, revolve, rod

Rng = np.random.Generator


def light(rng: Rng) -> float:
    """A body albedo: pale wood, paint or plastic."""
    return float(rng.uniform(0.55, 0.95))


def dark(rng: Rng) -> float:
    """A detail albedo: gaps, handles, screens, glass, tyres."""
    return float(rng.uniform(0.06, 0.25))


def legs(
    xs: Sequence[float],
    ys: Sequence[float],
    z0: float,
    z1: float,
    thick: float,
    *,
    round_: bool = False,
    splay: float = 0.0,
    albedo: float = 1.0,
) -> Mesh:
    """One leg at every (x, y) of the grid xs x ys, from z0 up to z1; `splay` spreads the feet."""
    parts = []
    for x in xs:
        for y in ys:
            if round_ or splay:
                foot = (x * (1 + splay), y * (1 + splay), z0)
                parts.append(rod(foot, (x, y, z1), thick / 2, sides=6, albedo=albedo))
            else:
                h = thick / 2
                parts.append(box_between((x - h, y - h, z0), (x + h, y + h, z1), albedo))
    return merge(parts)


def drawer_bank(
    x0: float,
    x1: float,
    z0: float,
    z1: float,
    y_front: float,
    rows: int,
    cols: int,
    *,
    albedo: float,
    gap_albedo: float,
    handle_albedo: float,
    rng: Rng,
) -> Mesh:
    """Drawer fronts proud of the face at y_front, dark gaps between them, a handle on each."""
    span = min(x1 - x0, z1 - z0)
    gap = max(0.02, 0.045 * span)
    parts = [box_between((x0, y_front - 0.006, z0), (x1, y_front, z1), gap_albedo)]
    style = rng.integers(3)  # 0 bar, 1 two knobs, 2 recessed grip (a dark slot)
    w = (x1 - x0 - gap * (cols + 1)) / cols
    h = (z1 - z0 - gap * (rows + 1)) / rows
    for c in range(cols):
        for r in range(rows):
            ax = x0 + gap + c * (w + gap)
            az = z0 + gap + r * (h + gap)
            parts.append(box_between((ax, y_front - 0.025, az), (ax + w, y_front, az + h), albedo))
            cx, cz = ax + w / 2, az + h * 0.6
            hw, hh = max(0.06, 0.28 * w) / 2, max(0.02, min(0.05, 0.16 * h)) / 2
            yf = y_front - 0.025
            if style == 0:
                parts.append(
                    box_between(
                        (cx - hw, yf - 0.03, cz - hh), (cx + hw, yf, cz + hh), handle_albedo
                    )
                )
            elif style == 1:
                for dx in (-0.6 * hw, 0.6 * hw):
                    parts.append(
                        box_between(
                            (cx + dx - hh, yf - 0.03, cz - hh),
                            (cx + dx + hh, yf, cz + hh),
                            handle_albedo,
                        )
                    )
            else:
                top = az + h - 1.3 * hh * 2
                parts.append(
                    box_between(
                        (cx - 1.5 * hw, yf - 0.004, top),
                        (cx + 1.5 * hw, yf, az + h - 0.2 * hh),
                        handle_albedo,
                    )
                )
    return merge(parts)


def doors(
    x0: float,
    x1: float,
    z0: float,
    z1: float,
    y_front: float,
    n: int,
    *,
    albedo: float,
    gap_albedo: float,
    handle_albedo: float,
) -> Mesh:
    """`n` doors side by side with vertical bar handles beside the gaps between them."""
    gap = max(0.02, 0.02 * (x1 - x0))
    parts = [box_between((x0, y_front - 0.006, z0), (x1, y_front, z1), gap_albedo)]
    w = (x1 - x0 - gap * (n + 1)) / n
    for i in range(n):
        ax = x0 + gap + i * (w + gap)
        parts.append(
            box_between((ax, y_front - 0.025, z0 + gap), (ax + w, y_front, z1 - gap), albedo)
        )
        hx = ax + (w - 0.06 if i % 2 == 0 and n > 1 else 0.06)
        hz, hh = (z0 + z1) / 2, min(0.25, 0.18 * (z1 - z0))
        parts.append(
            box_between(
                (hx - 0.015, y_front - 0.06, hz - hh),
                (hx + 0.015, y_front - 0.025, hz + hh),
                handle_albedo,
            )
        )
    return merge(parts)


def open_cabinet(
    x0: float,
    x1: float,
    y0: float,
    y1: float,
    z0: float,
    z1: float,
    t: float,
    *,
    shelves: Sequence[float] = (),
    dividers: Sequence[float] = (),
    albedo: float,
    inside_albedo: float,
    back: bool = True,
) -> Mesh:
    """A carcass open at the front (-y): sides, top, bottom, back, shelves at heights `shelves`
    and vertical dividers at `dividers`. The inside is painted darker, as it is shaded."""
    parts = [
        box_between((x0, y0, z0), (x0 + t, y1, z1), albedo),
        box_between((x1 - t, y0, z0), (x1, y1, z1), albedo),
        box_between((x0, y0, z1 - t), (x1, y1, z1), albedo),
        box_between((x0, y0, z0), (x1, y1, z0 + t), albedo),
    ]
    if back:
        parts.append(box_between((x0, y1 - t, z0), (x1, y1, z1), albedo))
        parts.append(
            box_between((x0 + t, y1 - t - 0.004, z0 + t), (x1 - t, y1 - t, z1 - t), inside_albedo)
        )
    for z in shelves:
        parts.append(
            box_between((x0 + t, y0 + 0.01, z - t / 2), (x1 - t, y1 - t, z + t / 2), inside_albedo)
        )
    for x in dividers:
        parts.append(
            box_between((x - t / 2, y0 + 0.01, z0 + t), (x + t / 2, y1 - t, z1 - t), inside_albedo)
        )
    return merge(parts)


def vessel(
    radii: Sequence[float],
    heights: Sequence[float],
    wall: float,
    *,
    segments: int = 16,
    albedo: float,
    inside_albedo: float,
    floor: float | None = None,
) -> Mesh:
    """A hollow, open-topped body of revolution: outer profile, rim, inner wall, inner floor."""
    r = np.asarray(radii, dtype=np.float64)
    z = np.asarray(heights, dtype=np.float64)  # increasing
    floor_z = z[0] + (wall * 2 if floor is None else floor)
    above = z > floor_z
    ir = np.concatenate(
        [
            np.maximum(r[above] - wall, 0.0)[::-1],
            [max(float(np.interp(floor_z, z, r)) - wall, 0.0), 0.0],
        ]
    )
    iz = np.concatenate([z[above][::-1], [floor_z, floor_z]])
    profile_r = np.concatenate([[0.0], r, ir])
    profile_z = np.concatenate([[z[0]], z, iz])
    seg_albedo = [albedo] * (len(r) + 1) + [inside_albedo] * (len(ir) - 1)
    return revolve(profile_r, profile_z, segments=segments, albedo=seg_albedo)
