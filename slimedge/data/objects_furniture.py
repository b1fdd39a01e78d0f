"""Builders of furniture classes. Each takes a random generator and returns one Mesh.

Frame: +z up, front faces -y (what the azimuth-0 camera sees), width along x, floor at z = 0.
Proportions are drawn at random and overlap between look-alike classes (desk/table,
dresser/night_stand, bookshelf/wardrobe): the telling details sit on one side.
"""

from __future__ import annotations

import numpy as np

from slimedge.data.parts import dark, doors, drawer_bank, legs, light, open_cabinet
from slimedge.data.shapes import (
    Mesh,
    box,
    box_between,
    cylinder,
    ellipsoid,
    merge,
    revolve,
    rod,
    sphere,
    torus,
)

Rng = np.random.Generator


def chair(rng: Rng) -> Mesh:
    style = rng.choice(["dining", "dining", "office", "lounge"])
    if style == "office":
        return _office_chair(rng)
    if style == "lounge":
        return _lounge_chair(rng)
    w, d = rng.uniform(0.4, 0.55), rng.uniform(0.4, 0.55)
    seat_h, seat_t = rng.uniform(0.4, 0.5), rng.uniform(0.03, 0.09)
    back_h = rng.uniform(0.35, 0.6)
    a, lt = light(rng), rng.uniform(0.025, 0.05)
    seat_a = a if rng.random() < 0.5 else light(rng)
    parts = [box((w, d, seat_t), (0, 0, seat_h - seat_t / 2), seat_a)]
    xs, ys = (-w / 2 + lt, w / 2 - lt), (-d / 2 + lt, d / 2 - lt)
    splay = rng.uniform(0.0, 0.12) if rng.random() < 0.3 else 0.0
    parts.append(
        legs(xs, ys, 0.0, seat_h - seat_t, lt, round_=rng.random() < 0.4, splay=splay, albedo=a)
    )
    top = seat_h + back_h
    yb = d / 2 - 0.02
    style = rng.integers(3)
    back: list[Mesh] = []
    if style == 0:  # solid panel
        back.append(box_between((-w / 2, yb - 0.03, seat_h), (w / 2, yb, top), seat_a))
    else:  # two posts with slats (vertical) or rails (horizontal)
        for x in xs:
            back.append(box_between((x - lt / 2, yb - lt, seat_h), (x + lt / 2, yb, top), a))
        back.append(box_between((-w / 2, yb - 0.03, top - 0.08), (w / 2, yb, top), a))
        n = int(rng.integers(2, 5))
        if style == 1:
            for x in np.linspace(-w / 2 + lt, w / 2 - lt, n + 2)[1:-1]:
                back.append(box_between((x - 0.015, yb - 0.02, seat_h), (x + 0.015, yb, top), a))
        else:
            for z in np.linspace(seat_h, top - 0.08, n + 1)[1:]:
                back.append(box_between((-w / 2, yb - 0.02, z - 0.02), (w / 2, yb, z + 0.02), a))
    tilt = rng.uniform(0, 14)
    parts += [m.rotated("x", -tilt, about=(0, yb, seat_h)) for m in back]
    if rng.random() < 0.35:  # armrests
        for x in (-w / 2, w / 2):
            parts.append(
                box_between((x - 0.025, -d / 2, seat_h + 0.2), (x + 0.025, d / 2, seat_h + 0.24), a)
            )
            parts.append(
                box_between(
                    (x - 0.015, -d / 2 + 0.02, seat_h), (x + 0.015, -d / 2 + 0.05, seat_h + 0.2), a
                )
            )
    return merge(parts)


def stool(rng: Rng) -> Mesh:
    h, a = rng.uniform(0.45, 0.8), light(rng)
    t = rng.uniform(0.03, 0.07)
    parts = []
    if rng.random() < 0.6:
        r = rng.uniform(0.15, 0.22)
        parts.append(cylinder(r, t, (0, 0, h - t), segments=16, albedo=a))
        n = int(rng.integers(3, 5))
        ang = np.radians(90 + np.arange(n) * 360 / n + rng.uniform(0, 360 / n))
        feet = np.stack([np.cos(ang), np.sin(ang)], 1)
    else:
        r = rng.uniform(0.14, 0.2)
        parts.append(box((2 * r, 2 * r, t), (0, 0, h - t / 2), a))
        feet = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]) / np.sqrt(2)
    splay = rng.uniform(1.0, 1.35)
    lr = rng.uniform(0.012, 0.025)
    for fx, fy in feet:
        parts.append(
            rod(
                (fx * r * 0.75 * splay, fy * r * 0.75 * splay, 0),
                (fx * r * 0.7, fy * r * 0.7, h - t),
                lr,
                albedo=a,
            )
        )
    if rng.random() < 0.6:  # foot ring
        zr = h * rng.uniform(0.25, 0.4)
        rr = r * 0.7 * (splay - (splay - 1) * zr / (h - t))
        parts.append(torus(rr, lr * 0.8, (0, 0, zr), segments=16, tube_segments=4, albedo=a))
    return merge(parts)


def bench(rng: Rng) -> Mesh:
    w, d, h = rng.uniform(1.0, 1.8), rng.uniform(0.3, 0.45), rng.uniform(0.4, 0.48)
    a, t = light(rng), rng.uniform(0.03, 0.06)
    parts = []
    n = int(rng.integers(1, 5))  # one slab or slats along x
    gap = 0.02 if n > 1 else 0.0
    sw = (d - gap * (n - 1)) / n
    for i in range(n):
        y = -d / 2 + i * (sw + gap)
        parts.append(box_between((-w / 2, y, h - t), (w / 2, y + sw, h), a))
    inset = rng.uniform(0.05, 0.2) * w
    if rng.random() < 0.5:  # end panels
        for x in (-w / 2 + inset, w / 2 - inset):
            parts.append(
                box_between((x - 0.025, -d / 2 + 0.02, 0), (x + 0.025, d / 2 - 0.02, h - t), a)
            )
    else:
        parts.append(
            legs(
                (-w / 2 + inset, w / 2 - inset),
                (-d / 2 + 0.04, d / 2 - 0.04),
                0,
                h - t,
                0.04,
                albedo=a,
            )
        )
    if rng.random() < 0.3:  # a low stretcher
        parts.append(box_between((-w / 2 + inset, -0.02, 0.1), (w / 2 - inset, 0.02, 0.14), a))
    if rng.random() < 0.3:  # backrest
        bh = rng.uniform(0.3, 0.45)
        for z in np.linspace(h + 0.08, h + bh, 3):
            parts.append(
                box_between((-w / 2, d / 2 - 0.03, z - 0.035), (w / 2, d / 2, z + 0.035), a)
            )
        for x in (-w / 2 + inset, w / 2 - inset):
            parts.append(
                box_between((x - 0.02, d / 2 - 0.04, h), (x + 0.02, d / 2, h + bh + 0.03), a)
            )
    return merge(parts)


def table(rng: Rng) -> Mesh:
    style = rng.choice(["legs", "legs", "round", "trestle", "coffee"])
    h, t, a = rng.uniform(0.68, 0.78), rng.uniform(0.03, 0.07), light(rng)
    parts = []
    if style == "round":  # round top on a pedestal or legs
        r = rng.uniform(0.4, 0.65)
        parts.append(cylinder(r, t, (0, 0, h - t), segments=24, albedo=a))
        if rng.random() < 0.5:
            parts.append(cylinder(rng.uniform(0.04, 0.08), h - t, segments=8, albedo=a))
            parts.append(cylinder(r * rng.uniform(0.4, 0.6), 0.04, segments=16, albedo=a))
        else:
            k = r * 0.6
            parts.append(legs((-k, k), (-k, k), 0, h - t, rng.uniform(0.035, 0.06), albedo=a))
        return merge(parts)
    if style == "coffee":
        h = rng.uniform(0.35, 0.5)
    w, d = rng.uniform(0.8, 1.8), rng.uniform(0.55, 1.0)
    parts.append(box((w, d, t), (0, 0, h - t / 2), a))
    lt = rng.uniform(0.04, 0.08)
    inset = rng.uniform(0.0, 0.08)
    xs, ys = (-w / 2 + inset + lt, w / 2 - inset - lt), (-d / 2 + inset + lt, d / 2 - inset - lt)
    if style == "trestle":  # an end panel at each side and a stretcher between them
        for x in xs:
            parts.append(box_between((x - 0.025, ys[0], 0), (x + 0.025, ys[1], h - t), a))
        parts.append(box_between((xs[0], -0.02, 0.15), (xs[1], 0.02, 0.25), a))
        return merge(parts)
    parts.append(legs(xs, ys, 0, h - t, lt, round_=rng.random() < 0.3, albedo=a))
    if rng.random() < 0.6:  # apron on all four sides
        ah = rng.uniform(0.06, 0.12)
        for y in ys:
            parts.append(box_between((xs[0], y - 0.01, h - t - ah), (xs[1], y + 0.01, h - t), a))
        for x in xs:
            parts.append(box_between((x - 0.01, ys[0], h - t - ah), (x + 0.01, ys[1], h - t), a))
    if style == "coffee" or rng.random() < 0.2:  # low shelf
        parts.append(box_between((xs[0], ys[0], 0.08), (xs[1], ys[1], 0.11), a))
    return merge(parts)


def desk(rng: Rng) -> Mesh:
    w, d = rng.uniform(0.9, 1.7), rng.uniform(0.55, 0.85)
    h, t, a = rng.uniform(0.72, 0.78), rng.uniform(0.03, 0.05), light(rng)
    g, hnd = dark(rng) + 0.1, dark(rng)
    parts = [box((w, d, t), (0, 0, h - t / 2), a)]
    style = rng.choice(["pedestal", "pedestal", "writing", "hutch"])
    yf = -d / 2 + 0.02
    if style == "writing":  # legs, drawers in the apron at the front only
        lt = rng.uniform(0.04, 0.07)
        xs, ys = (-w / 2 + lt, w / 2 - lt), (-d / 2 + lt, d / 2 - lt)
        parts.append(legs(xs, ys, 0, h - t, lt, albedo=a))
        ah = rng.uniform(0.12, 0.18)
        parts.append(box_between((xs[0], ys[0], h - t - ah), (xs[1], ys[0] + 0.02, h - t), a))
        n = int(rng.integers(1, 4))
        parts.append(
            drawer_bank(
                xs[0] + 0.03,
                xs[1] - 0.03,
                h - t - ah,
                h - t,
                ys[0],
                1,
                n,
                albedo=a,
                gap_albedo=g,
                handle_albedo=hnd,
                rng=rng,
            )
        )
    else:
        pw = rng.uniform(0.35, 0.45)
        two = rng.random() < 0.5
        sides = (-1, 1) if two else (int(rng.choice([-1, 1])),)
        for s in sides:
            x0, x1 = (w / 2 - pw, w / 2) if s > 0 else (-w / 2, -w / 2 + pw)
            parts.append(box_between((x0, yf, 0.02), (x1, d / 2, h - t), a))
            parts.append(
                drawer_bank(
                    x0,
                    x1,
                    0.04,
                    h - t - 0.02,
                    yf,
                    int(rng.integers(2, 5)),
                    1,
                    albedo=a,
                    gap_albedo=g,
                    handle_albedo=hnd,
                    rng=rng,
                )
            )
        if not two:  # the other end stands on a side panel or two legs
            s = -sides[0]
            x = s * (w / 2 - 0.02)
            if rng.random() < 0.5:
                parts.append(
                    box_between((x - 0.02, -d / 2 + 0.02, 0), (x + 0.02, d / 2 - 0.02, h - t), a)
                )
            else:
                parts.append(
                    legs((x - s * 0.02,), (-d / 2 + 0.05, d / 2 - 0.05), 0, h - t, 0.045, albedo=a)
                )
    # Modesty panel at the back: the back view sees a closed side, the front an open knee space.
    ph = rng.uniform(0.3, 0.6) * h
    parts.append(
        box_between(
            (-w / 2 + 0.02, d / 2 - 0.04, h - t - ph), (w / 2 - 0.02, d / 2 - 0.02, h - t), a
        )
    )
    if style == "hutch":  # a shelf unit standing on the back of the top
        hh = rng.uniform(0.3, 0.6)
        hd = rng.uniform(0.2, 0.3)
        parts.append(
            open_cabinet(
                -w / 2,
                w / 2,
                d / 2 - hd,
                d / 2,
                h,
                h + hh,
                0.02,
                shelves=[h + hh * 0.5] if rng.random() < 0.5 else [],
                albedo=a,
                inside_albedo=a * 0.5,
            )
        )
    return merge(parts)


def bed(rng: Rng) -> Mesh:
    L, w = rng.uniform(1.9, 2.2), rng.uniform(0.9, 1.8)
    a, cloth = light(rng), rng.uniform(0.7, 1.0)
    fz0, fz1 = rng.uniform(0.08, 0.2), rng.uniform(0.3, 0.42)
    parts = [box_between((-w / 2, -L / 2, fz0), (w / 2, L / 2, fz1), a)]
    mt = rng.uniform(0.15, 0.25)
    parts.append(
        box_between(
            (-w / 2 + 0.03, -L / 2 + 0.03, fz1), (w / 2 - 0.03, L / 2 - 0.05, fz1 + mt), cloth
        )
    )
    parts.append(
        legs((-w / 2 + 0.04, w / 2 - 0.04), (-L / 2 + 0.04, L / 2 - 0.04), 0, fz0, 0.06, albedo=a)
    )
    hb = rng.uniform(0.9, 1.3)
    parts.append(box_between((-w / 2 - 0.03, L / 2 - 0.05, 0), (w / 2 + 0.03, L / 2 + 0.02, hb), a))
    if rng.random() < 0.5:  # footboard
        parts.append(
            box_between(
                (-w / 2 - 0.03, -L / 2 - 0.05, 0),
                (w / 2 + 0.03, -L / 2, fz1 + rng.uniform(0.1, 0.35)),
                a,
            )
        )
    n = 1 if w < 1.2 else 2
    pz = fz1 + mt + 0.05
    for x in np.linspace(-w / 2, w / 2, n + 2)[1:-1]:
        parts.append(
            ellipsoid(
                (w / (2.6 * n), 0.17, 0.07),
                (x, L / 2 - 0.28, pz),
                segments=10,
                rings=5,
                albedo=min(1.0, cloth + 0.1),
            )
        )
    if rng.random() < 0.5:  # a blanket over the foot end, in another shade
        parts.append(
            box_between(
                (-w / 2 + 0.01, -L / 2 + 0.01, fz1 + 0.05),
                (w / 2 - 0.01, L * rng.uniform(0.0, 0.2), fz1 + mt + 0.03),
                rng.uniform(0.35, 0.8),
            )
        )
    return merge(parts)


def _upholstered(rng: Rng, width: tuple[float, float], depth: tuple[float, float],
                 leg_h: tuple[float, float], seat_h: tuple[float, float], leg_w: float,
                 arm_w: tuple[float, float], back_t: tuple[float, float],
                 back_h: tuple[float, float]) -> tuple[list[Mesh], dict[str, float]]:
    """The frame sofas and armchairs share: base, legs, two arms and a back, in fabric `a`;
    returns the parts and the drawn sizes (and the cushion colour `c`)."""
    w, d = rng.uniform(*width), rng.uniform(*depth)
    a, c = light(rng), light(rng)
    lz, sz = rng.uniform(*leg_h), rng.uniform(*seat_h)
    parts = [box_between((-w / 2, -d / 2, lz), (w / 2, d / 2, sz - 0.1), a)]
    parts.append(
        legs(
            (-w / 2 + 0.05, w / 2 - 0.05),
            (-d / 2 + 0.05, d / 2 - 0.05),
            0,
            lz,
            leg_w,
            albedo=dark(rng),
        )
    )
    aw, ah = rng.uniform(*arm_w), rng.uniform(0.55, 0.7)
    for s in (-1, 1):
        x0, x1 = (w / 2 - aw, w / 2) if s > 0 else (-w / 2, -w / 2 + aw)
        parts.append(box_between((x0, -d / 2, lz), (x1, d / 2, ah), a))
    bt, bh = rng.uniform(*back_t), rng.uniform(*back_h)
    parts.append(box_between((-w / 2 + aw, d / 2 - bt, lz), (w / 2 - aw, d / 2, bh), a))
    return parts, {"w": w, "d": d, "c": c, "sz": sz, "aw": aw, "bt": bt, "bh": bh}


def sofa(rng: Rng) -> Mesh:
    parts, f = _upholstered(rng, (1.5, 2.4), (0.8, 1.0), (0.04, 0.14), (0.38, 0.48), 0.05,
                            (0.12, 0.25), (0.15, 0.25), (0.75, 0.95))
    w, d, c, bz, aw = f["w"], f["d"], f["c"], f["sz"], f["aw"]
    back_t, back_h = f["bt"], f["bh"]
    n = int(rng.integers(2, 4))
    cw = (w - 2 * aw) / n
    for i in range(n):  # seat cushions and back cushions, with gaps
        x0 = -w / 2 + aw + i * cw
        parts.append(
            box_between(
                (x0 + 0.01, -d / 2 + 0.02, bz - 0.1), (x0 + cw - 0.01, d / 2 - back_t, bz), c
            )
        )
        if rng.random() < 0.8:
            parts.append(
                box_between(
                    (x0 + 0.02, d / 2 - back_t - 0.14, bz),
                    (x0 + cw - 0.02, d / 2 - back_t, back_h - 0.05),
                    c,
                ).rotated("x", -8, about=(0, d / 2 - back_t, bz))
            )
    return merge(parts)


def bookshelf(rng: Rng) -> Mesh:
    w, h, d = rng.uniform(0.6, 1.3), rng.uniform(0.9, 2.0), rng.uniform(0.28, 0.45)
    a, t = light(rng), rng.uniform(0.02, 0.035)
    inside = a * rng.uniform(0.35, 0.6)
    n = int(rng.integers(3, 7))
    z0 = rng.uniform(0.0, 0.1)
    levels = np.linspace(z0, h, n + 1)
    dividers = [0.0] if (w > 1.0 and rng.random() < 0.5) else []
    parts = [
        open_cabinet(
            -w / 2,
            w / 2,
            -d / 2,
            d / 2,
            z0,
            h,
            t,
            shelves=levels[1:-1],
            dividers=dividers,
            albedo=a,
            inside_albedo=inside,
        )
    ]
    if z0 > 0:
        parts.append(
            box_between((-w / 2 + 0.02, -d / 2 + 0.02, 0), (w / 2 - 0.02, d / 2, z0), a * 0.8)
        )
    closed = int(rng.integers(1, 3)) if (n > 3 and rng.random() < 0.3) else 0
    if closed:  # cupboard doors over the lowest shelves
        parts.append(
            doors(-w / 2 + t, w / 2 - t, levels[0] + t, levels[closed], -d / 2, 2,
                  albedo=a, gap_albedo=inside, handle_albedo=dark(rng))
        )  # fmt: skip
    for k, (lo, hi) in enumerate(zip(levels[:-1], levels[1:], strict=True)):
        if k < closed or rng.random() < 0.25:  # books on most open shelves
            continue
        x = -w / 2 + t + rng.uniform(0, 0.2) * w
        x_end = w / 2 - t - rng.uniform(0, 0.3) * w
        while x < x_end:
            bw = rng.uniform(0.025, 0.06)
            bh = (hi - lo - t) * rng.uniform(0.6, 0.92)
            parts.append(
                box_between(
                    (x, -d / 2 + rng.uniform(0.02, 0.06), lo + t / 2),
                    (x + bw, d / 2 - t, lo + t / 2 + bh),
                    rng.uniform(0.2, 0.95),
                )
            )
            x += bw + (0.002 if rng.random() < 0.9 else rng.uniform(0.03, 0.1))
    return merge(parts)


def _cabinet(rng: Rng, w: float, h: float, d: float, a: float) -> tuple[list[Mesh], float]:
    """Body of a closed cabinet on legs or a plinth, with a top; returns parts and body bottom."""
    z0 = rng.uniform(0.03, 0.15)
    parts = [box_between((-w / 2, -d / 2, z0), (w / 2, d / 2, h), a)]
    if rng.random() < 0.5:
        parts.append(
            legs(
                (-w / 2 + 0.04, w / 2 - 0.04),
                (-d / 2 + 0.04, d / 2 - 0.04),
                0,
                z0,
                0.05,
                albedo=a * 0.8,
            )
        )
    else:
        parts.append(
            box_between(
                (-w / 2 + 0.03, -d / 2 + 0.03, 0), (w / 2 - 0.03, d / 2 - 0.01, z0), a * 0.6
            )
        )
    if rng.random() < 0.6:  # a top overhanging a little
        o = rng.uniform(0.0, 0.03)
        parts.append(box_between((-w / 2 - o, -d / 2 - o, h), (w / 2 + o, d / 2, h + 0.03), a))
    return parts, z0


def dresser(rng: Rng) -> Mesh:
    w, h, d = rng.uniform(0.8, 1.6), rng.uniform(0.7, 1.3), rng.uniform(0.4, 0.6)
    a = light(rng)
    parts, z0 = _cabinet(rng, w, h, d, a)
    cols = int(rng.choice([1, 2, 2, 3])) if w > 1.1 else int(rng.choice([1, 2]))
    parts.append(
        drawer_bank(
            -w / 2 + 0.02,
            w / 2 - 0.02,
            z0 + 0.02,
            h - 0.02,
            -d / 2,
            int(rng.integers(3, 6)),
            cols,
            albedo=a,
            gap_albedo=dark(rng) + 0.1,
            handle_albedo=dark(rng),
            rng=rng,
        )
    )
    if rng.random() < 0.3:  # a mirror standing at the back
        mh = rng.uniform(0.5, 0.8)
        parts.append(box_between((-w * 0.35, d / 2 - 0.05, h + 0.03), (w * 0.35, d / 2, h + mh), a))
        parts.append(
            box_between(
                (-w * 0.31, d / 2 - 0.055, h + 0.07),
                (w * 0.31, d / 2 - 0.05, h + mh - 0.04),
                dark(rng) + 0.2,
            )
        )
    return merge(parts)


def night_stand(rng: Rng) -> Mesh:
    w, h, d = rng.uniform(0.4, 0.7), rng.uniform(0.5, 0.8), rng.uniform(0.35, 0.55)
    a = light(rng)
    parts, z0 = _cabinet(rng, w, h, d, a)
    cubby = rng.random() < 0.5
    split = z0 + (h - z0) * (rng.uniform(0.4, 0.6) if cubby else 0.0)
    rows = int(rng.integers(1, 3)) if cubby else int(rng.integers(1, 4))
    parts.append(
        drawer_bank(
            -w / 2 + 0.02,
            w / 2 - 0.02,
            split + 0.01,
            h - 0.02,
            -d / 2,
            rows,
            1,
            albedo=a,
            gap_albedo=dark(rng) + 0.1,
            handle_albedo=dark(rng),
            rng=rng,
        )
    )
    if cubby:  # an open shelf below the drawers: a dark recess in the front
        parts.append(
            box_between(
                (-w / 2 + 0.03, -d / 2 - 0.003, z0 + 0.03),
                (w / 2 - 0.03, -d / 2, split - 0.01),
                a * rng.uniform(0.25, 0.45),
            )
        )
    return merge(parts)


def wardrobe(rng: Rng) -> Mesh:
    w, h, d = rng.uniform(0.8, 1.5), rng.uniform(1.4, 2.2), rng.uniform(0.45, 0.65)
    a = light(rng)
    parts, z0 = _cabinet(rng, w, h, d, a)
    g, hnd = dark(rng) + 0.1, dark(rng)
    zd = z0 + 0.02
    if rng.random() < 0.4:  # drawers under the doors
        zd = z0 + rng.uniform(0.25, 0.4)
        parts.append(
            drawer_bank(
                -w / 2 + 0.02,
                w / 2 - 0.02,
                z0 + 0.02,
                zd,
                -d / 2,
                1,
                2,
                albedo=a,
                gap_albedo=g,
                handle_albedo=hnd,
                rng=rng,
            )
        )
    parts.append(
        doors(
            -w / 2 + 0.02,
            w / 2 - 0.02,
            zd,
            h - 0.03,
            -d / 2,
            2 if w < 1.2 else int(rng.integers(2, 4)),
            albedo=a,
            gap_albedo=g,
            handle_albedo=hnd,
        )
    )
    return merge(parts)


def tv_stand(rng: Rng) -> Mesh:
    w, h, d = rng.uniform(1.0, 2.0), rng.uniform(0.4, 0.7), rng.uniform(0.35, 0.55)
    a, t = light(rng), rng.uniform(0.025, 0.04)
    z0 = rng.uniform(0.03, 0.12)
    n = int(rng.integers(2, 5))
    xs = np.linspace(-w / 2, w / 2, n + 1)[1:-1]
    parts = [
        open_cabinet(
            -w / 2,
            w / 2,
            -d / 2,
            d / 2,
            z0,
            h,
            t,
            dividers=xs,
            shelves=[(z0 + h) / 2] if rng.random() < 0.4 else [],
            albedo=a,
            inside_albedo=a * rng.uniform(0.3, 0.5),
        )
    ]
    parts.append(
        legs(
            (-w / 2 + 0.05, w / 2 - 0.05),
            (-d / 2 + 0.05, d / 2 - 0.05),
            0,
            z0,
            0.05,
            albedo=a * 0.7,
        )
    )
    if rng.random() < 0.5:  # doors on the outer compartments
        edges = np.concatenate([[-w / 2], xs, [w / 2]])
        for lo, hi in ((edges[0], edges[1]), (edges[-2], edges[-1])):
            parts.append(
                doors(
                    lo + t,
                    hi - t,
                    z0 + t,
                    h - t,
                    -d / 2,
                    1,
                    albedo=a,
                    gap_albedo=a * 0.5,
                    handle_albedo=dark(rng),
                )
            )
    if rng.random() < 0.4:  # a flat TV standing on it
        tw = w * rng.uniform(0.5, 0.8)
        th = tw * rng.uniform(0.55, 0.62)
        tz = h + rng.uniform(0.06, 0.12)
        parts.append(box_between((-tw / 2, -0.03, tz), (tw / 2, 0.03, tz + th), 0.2))
        parts.append(
            box_between(
                (-tw / 2 + 0.03, -0.033, tz + 0.03), (tw / 2 - 0.03, -0.03, tz + th - 0.03), 0.06
            )
        )
        parts.append(box_between((-0.04, -0.02, h), (0.04, 0.02, tz), 0.2))
        parts.append(box_between((-0.15, -0.1, h), (0.15, 0.1, h + 0.02), 0.2))
    return merge(parts)


def bathtub(rng: Rng) -> Mesh:
    L, w, h = rng.uniform(1.4, 1.8), rng.uniform(0.7, 0.85), rng.uniform(0.45, 0.6)
    a, t = rng.uniform(0.8, 1.0), rng.uniform(0.05, 0.1)
    inside = a * rng.uniform(0.6, 0.8)
    z0 = rng.uniform(0.1, 0.2) if rng.random() < 0.35 else 0.0
    parts = [
        box_between((-L / 2, -w / 2, z0), (L / 2, w / 2, z0 + t), a),
        box_between(
            (-L / 2 + t, -w / 2 + t, z0 + t), (L / 2 - t, w / 2 - t, z0 + t + 0.005), inside
        ),
    ]
    for s in (-1, 1):
        parts.append(
            box_between(
                (s * L / 2 - (t if s > 0 else 0), -w / 2, z0),
                (s * L / 2 + (0 if s > 0 else t), w / 2, z0 + h),
                a,
            )
        )
        parts.append(
            box_between(
                (-L / 2, s * w / 2 - (t if s > 0 else 0), z0),
                (L / 2, s * w / 2 + (0 if s > 0 else t), z0 + h),
                a,
            )
        )
    if z0 > 0:  # claw feet
        for x in (-L / 2 + 0.15, L / 2 - 0.15):
            for y in (-w / 2 + 0.1, w / 2 - 0.1):
                parts.append(
                    ellipsoid(
                        (0.05, 0.05, z0 / 2 + 0.01),
                        (x, y, z0 / 2),
                        segments=8,
                        rings=4,
                        albedo=dark(rng),
                    )
                )
    end = float(rng.choice([-1, 1]))
    fx = end * (L / 2 - t / 2)
    parts.append(rod((fx, 0, z0 + h), (fx, 0, z0 + h + 0.15), 0.02, albedo=0.5))
    parts.append(rod((fx, 0, z0 + h + 0.15), (fx - end * 0.15, 0, z0 + h + 0.15), 0.02, albedo=0.5))
    return merge(parts)


def toilet(rng: Rng) -> Mesh:
    a = rng.uniform(0.8, 1.0)
    bh = rng.uniform(0.36, 0.44)
    r_top, r_base = rng.uniform(0.17, 0.21), rng.uniform(0.1, 0.14)
    bowl_len = rng.uniform(1.2, 1.45)  # bowl stretched towards the front
    zs = np.array([0.0, 0.12, 0.25, 0.34, 1.0]) * bh
    rs = np.array([r_base, r_base * 0.95, r_top * 0.85, r_top, r_top])
    bowl = revolve(
        np.concatenate([[0], rs, [r_top * 0.75, r_top * 0.3]]),
        np.concatenate([[0], zs, [bh, bh - 0.12]]),
        segments=20,
        albedo=[a] * 6 + [a * 0.5],
    ).scaled((1.0, bowl_len, 1.0))
    yb = -0.08
    parts = [bowl.moved((0, yb, 0))]
    ry = r_top * bowl_len
    seat = torus(r_top * 0.82, 0.025, segments=20, tube_segments=4).scaled((1, bowl_len, 0.7))
    parts.append(seat.moved((0, yb, bh + 0.02)).painted(light(rng)))
    tank_w, tank_d = rng.uniform(0.36, 0.46), rng.uniform(0.16, 0.22)
    tank_h = rng.uniform(0.3, 0.42)
    ty0 = yb + ry - 0.05
    parts.append(
        box_between((-tank_w / 2, ty0, bh - 0.05), (tank_w / 2, ty0 + tank_d, bh + tank_h), a)
    )
    parts.append(
        box_between(
            (-tank_w / 2 - 0.01, ty0 - 0.01, bh + tank_h),
            (tank_w / 2 + 0.01, ty0 + tank_d + 0.01, bh + tank_h + 0.03),
            a,
        )
    )
    parts.append(
        box_between(
            (-tank_w / 2 + 0.03, ty0 - 0.03, bh + tank_h - 0.08),
            (-tank_w / 2 + 0.11, ty0, bh + tank_h - 0.055),
            dark(rng),
        )
    )  # flush lever on the front of the tank
    if rng.random() < 0.5:  # lid up, against the tank
        lid = ellipsoid(
            (r_top * 0.9, 0.012, ry * 0.9), (0, ty0 - 0.02, bh + ry * 0.9), segments=14, rings=4
        )
        parts.append(lid.painted(light(rng)))
    else:
        lid = ellipsoid((r_top * 0.95, ry * 0.95, 0.015), (0, yb, bh + 0.045), segments=14, rings=4)
        parts.append(lid.painted(light(rng)))
    return merge(parts)


def piano(rng: Rng) -> Mesh:
    w, d, h = rng.uniform(1.4, 1.6), rng.uniform(0.5, 0.65), rng.uniform(1.05, 1.35)
    a = rng.uniform(0.15, 0.35) if rng.random() < 0.4 else light(rng)
    kz = rng.uniform(0.68, 0.75)
    kd = rng.uniform(0.25, 0.32)
    parts = [box_between((-w / 2, 0, 0.05), (w / 2, d, h), a)]
    parts.append(box_between((-w / 2, -kd, kz - 0.1), (w / 2, 0, kz), a))  # key bed
    parts.append(
        box_between((-w / 2 + 0.06, -kd + 0.02, kz), (w / 2 - 0.06, -0.12, kz + 0.02), 0.97)
    )  # white keys
    n_white = int(rng.integers(36, 53))
    key = (w - 0.12) / n_white
    for i in range(1, n_white):  # black keys in groups of two and three, as on a keyboard
        if i % 7 in (1, 2, 4, 5, 6):
            x = -w / 2 + 0.06 + i * key
            parts.append(
                box_between(
                    (x - 0.3 * key, -0.2, kz + 0.02), (x + 0.3 * key, -0.12, kz + 0.035), 0.05
                )
            )
    for s in (-1, 1):  # cheek blocks and front legs
        parts.append(
            box_between(
                (s * w / 2 - (0.06 if s > 0 else 0), -kd, kz),
                (s * w / 2 + (0 if s > 0 else 0.06), 0, kz + 0.08),
                a,
            )
        )
        parts.append(
            box_between(
                (s * (w / 2 - 0.05) - 0.03, -kd + 0.02, 0),
                (s * (w / 2 - 0.05) + 0.03, -kd + 0.08, kz - 0.1),
                a,
            )
        )
    parts.append(
        box_between((-w / 2 + 0.06, -0.05, kz + 0.12), (w / 2 - 0.06, 0, kz + 0.35), a * 0.8 + 0.1)
    )  # music desk
    for x in (-0.08, 0.0, 0.08):  # pedals
        parts.append(box_between((x - 0.02, -0.18, 0.05), (x + 0.02, 0, 0.08), 0.7))
    if rng.random() < 0.5:  # a bench in front
        parts.append(box_between((-0.35, -kd - 0.55, 0.45), (0.35, -kd - 0.2, 0.5), a))
        parts.append(legs((-0.3, 0.3), (-kd - 0.5, -kd - 0.25), 0, 0.45, 0.04, albedo=a))
    return merge(parts).moved((0, -d / 2 + kd / 2, 0))


def _office_chair(rng: Rng) -> Mesh:
    w, d = rng.uniform(0.45, 0.55), rng.uniform(0.42, 0.5)
    seat_h = rng.uniform(0.42, 0.52)
    frame, cushion = dark(rng) + rng.uniform(0.0, 0.5), light(rng)
    parts = [box_between((-w / 2, -d / 2, seat_h - 0.08), (w / 2, d / 2, seat_h), cushion)]
    parts.append(cylinder(0.03, seat_h - 0.16, (0, 0, 0.08), segments=8, albedo=frame))
    for k in range(5):  # star base on casters
        ang = np.radians(90 + 72 * k)
        tip = (0.3 * np.cos(ang), 0.3 * np.sin(ang), 0.06)
        parts.append(rod((0, 0, 0.09), tip, 0.02, sides=4, albedo=frame))
        parts.append(sphere(0.03, (tip[0], tip[1], 0.03), segments=6, rings=3, albedo=0.1))
    bh = rng.uniform(0.4, 0.65)
    yb = d / 2 + 0.02
    back = box_between((-w * 0.45, yb - 0.06, seat_h + 0.08), (w * 0.45, yb, seat_h + bh), cushion)
    parts.append(back.rotated("x", -rng.uniform(0, 12), about=(0, yb, seat_h)))
    parts.append(box_between((-0.03, yb - 0.05, seat_h - 0.05), (0.03, yb, seat_h + 0.1), frame))
    if rng.random() < 0.6:  # armrests
        for s in (-1, 1):
            x = s * (w / 2 + 0.02)
            parts.append(
                box_between(
                    (x - 0.02, -0.05, seat_h - 0.02), (x + 0.02, -0.01, seat_h + 0.2), frame
                )
            )
            parts.append(
                box_between(
                    (x - 0.03, -0.15, seat_h + 0.2), (x + 0.03, d / 2, seat_h + 0.23), frame
                )
            )
    return merge(parts)


def _lounge_chair(rng: Rng) -> Mesh:
    """An upholstered armchair: a one-seat sofa."""
    parts, f = _upholstered(rng, (0.7, 0.95), (0.7, 0.9), (0.03, 0.12), (0.38, 0.45), 0.04,
                            (0.1, 0.2), (0.12, 0.2), (0.8, 1.0))
    w, d, c, sz, aw, bt = f["w"], f["d"], f["c"], f["sz"], f["aw"], f["bt"]
    parts.append(
        box_between(
            (-w / 2 + aw + 0.01, -d / 2 + 0.02, sz - 0.1), (w / 2 - aw - 0.01, d / 2 - bt, sz), c
        )
    )
    return merge(parts)
