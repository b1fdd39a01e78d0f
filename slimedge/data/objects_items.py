"""Builders of vessels, lamps, screens, instruments and vehicles. Each takes a random generator
and returns one Mesh.

Frame: +z up, front faces -y (what the azimuth-0 camera sees), floor at z = 0. Cup, vase and
bottle share one family of profiles, monitor and laptop share screens, so these pairs are
confusable; handles, labels, screen faces and vehicle fronts are seen from some sides only.
"""

from __future__ import annotations

import numpy as np

from slimedge.data.parts import dark, light, vessel
from slimedge.data.shapes import (
    Mesh,
    box,
    box_between,
    cylinder,
    ellipsoid,
    frustum,
    merge,
    prism,
    revolve,
    rod,
    sphere,
    torus,
)

Rng = np.random.Generator


def _handle(r_at: float, z_lo: float, z_hi: float, thick: float, albedo: float) -> Mesh:
    """A C-shaped handle on the +x side of a body of revolution."""
    rad = (z_hi - z_lo) / 2
    ring = torus(
        rad, thick, segments=12, tube_segments=5, start_deg=-90, arc_deg=180, albedo=albedo
    )
    # The torus lies in the xy plane; stand it up in the xz plane, bulging towards +x.
    return ring.rotated("x", 90).moved((r_at - rad * 0.2, 0, (z_lo + z_hi) / 2))


def cup(rng: Rng) -> Mesh:
    h = rng.uniform(0.08, 0.12)
    r_bot = rng.uniform(0.03, 0.045)
    r_top = r_bot * rng.uniform(1.0, 1.45)
    a = light(rng)
    zs = np.linspace(0, h, 4)
    rs = r_bot + (r_top - r_bot) * np.sqrt(zs / h)
    parts = [vessel(rs, zs, 0.004, albedo=a, inside_albedo=a * 0.5)]
    if rng.random() < 0.85:
        parts.append(_handle(float(np.interp(h * 0.5, zs, rs)), h * 0.2, h * 0.8, 0.006, a))
    if rng.random() < 0.3:  # a saucer
        parts.append(cylinder(r_top * 1.6, 0.006, (0, 0, -0.006), segments=20, albedo=a))
    return merge(parts)


def vase(rng: Rng) -> Mesh:
    h = rng.uniform(0.25, 0.5)
    r_belly = h * rng.uniform(0.2, 0.4)
    belly_z = rng.uniform(0.25, 0.55)
    neck_z = rng.uniform(0.7, 0.88)
    r_neck = r_belly * rng.uniform(0.35, 0.75)
    r_lip = r_neck * rng.uniform(1.0, 1.8)
    r_base = r_belly * rng.uniform(0.45, 0.8)
    t = np.array([0.0, belly_z * 0.5, belly_z, (belly_z + neck_z) / 2, neck_z, 1.0])
    r = np.array(
        [r_base, (r_base + r_belly) / 2 * 1.05, r_belly, (r_belly + r_neck) / 2, r_neck, r_lip]
    )
    a = light(rng) if rng.random() < 0.7 else rng.uniform(0.3, 0.6)
    parts = [vessel(r, t * h, h * 0.02, albedo=a, inside_albedo=a * 0.4, floor=h * 0.6)]
    if rng.random() < 0.2:  # two small handles at the shoulders
        for s in (0, 180):
            parts.append(
                _handle(r_neck, neck_z * h - 0.05 * h, neck_z * h + 0.05 * h, 0.01 * h, a).rotated(
                    "z", s
                )
            )
    return merge(parts)


def bottle(rng: Rng) -> Mesh:
    h = rng.uniform(0.22, 0.35)
    r = h * rng.uniform(0.12, 0.22)
    body = rng.uniform(0.5, 0.7)
    shoulder = body + rng.uniform(0.06, 0.16)
    r_neck = r * rng.uniform(0.25, 0.45)
    a = rng.uniform(0.3, 0.95)
    t = np.array([0.0, 0.01, body, (body + shoulder) / 2, shoulder, 0.93])
    rr = np.array([r * 0.95, r, r, r * 0.75, r_neck, r_neck])
    parts = [
        revolve(
            np.concatenate([[0], rr]),
            np.concatenate([[0], t * h]),
            segments=16,
            albedo=a,
            cap_end=True,
        )
    ]
    parts.append(
        cylinder(
            r_neck * 1.15,
            0.07 * h,
            (0, 0, 0.93 * h),
            segments=12,
            albedo=dark(rng) + 0.2 * rng.random(),
        )
    )
    if rng.random() < 0.75:  # a label on the front only
        arc = rng.uniform(120, 200)
        lab = revolve(
            [r * 1.02, r * 1.02],
            [body * h * 0.3, body * h * 0.85],
            segments=10,
            start_deg=-90 - arc / 2,
            arc_deg=arc,
            albedo=1.0 - a * 0.8,
        )
        parts.append(lab)
    return merge(parts)


def flower_pot(rng: Rng) -> Mesh:
    ph = rng.uniform(0.15, 0.3)
    rb = ph * rng.uniform(0.3, 0.5)
    rt = rb * rng.uniform(1.1, 1.5)
    a = rng.uniform(0.4, 0.8)
    parts = [vessel([rb, rt], [0, ph], 0.01, albedo=a, inside_albedo=0.2, floor=ph * 0.85)]
    parts.append(torus(rt, 0.012, (0, 0, ph), segments=18, tube_segments=4, albedo=a))
    green = rng.uniform(0.3, 0.6)
    kind = rng.integers(3)
    if kind == 0:  # leafy: leaves on stems fanning out
        for _ in range(int(rng.integers(5, 11))):
            ang, tilt = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 1.1)
            length = rng.uniform(0.5, 1.3) * ph
            tip = (
                np.array([np.cos(ang) * np.sin(tilt), np.sin(ang) * np.sin(tilt), np.cos(tilt)])
                * length
            )
            base = np.array([0, 0, ph * 0.85])
            parts.append(rod(base, base + tip * 0.6, 0.004, sides=4, albedo=green))
            leaf = ellipsoid(
                (length * 0.18, length * 0.18, length * 0.4), segments=6, rings=4, albedo=green
            )
            parts.append(
                leaf.scaled((1, 0.25, 1))
                .rotated("y", np.degrees(tilt))
                .rotated("z", np.degrees(ang))
                .moved(base + tip * 0.75)
            )
    elif kind == 1:  # a bush of spheres
        for _ in range(int(rng.integers(4, 9))):
            c = rng.normal(0, rt * 0.5, 3) + (0, 0, ph + rt * 0.8)
            parts.append(sphere(rt * rng.uniform(0.4, 0.8), c, segments=8, rings=5, albedo=green))
    else:  # tall blades
        for _ in range(int(rng.integers(8, 16))):
            ang, tilt = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.5)
            length = rng.uniform(1.0, 2.2) * ph
            tip = (
                np.array([np.cos(ang) * np.sin(tilt), np.sin(ang) * np.sin(tilt), np.cos(tilt)])
                * length
            )
            base = np.array([rng.normal(0, rb * 0.3), rng.normal(0, rb * 0.3), ph * 0.85])
            parts.append(rod(base, base + tip, 0.012, r1=0.002, sides=4, albedo=green))
    return merge(parts)


def lamp(rng: Rng) -> Mesh:
    a = light(rng)
    shade_a = rng.uniform(0.7, 1.0)
    parts = []
    if rng.random() < 0.6:  # standing lamp: base, pole, open shade
        h = rng.uniform(0.4, 1.6)
        br = rng.uniform(0.08, 0.18)
        parts.append(frustum(br, br * 0.8, 0.03, segments=16, albedo=a))
        parts.append(cylinder(rng.uniform(0.01, 0.02), h, segments=6, albedo=a))
        srb = rng.uniform(0.1, 0.25)
        srt = srb * rng.uniform(0.5, 0.9)
        sh = rng.uniform(0.12, 0.3)
        parts.append(
            revolve([srb, srt], [0, sh], segments=20, albedo=shade_a).moved((0, 0, h - sh * 0.6))
        )
        parts.append(sphere(0.03, (0, 0, h - sh * 0.4), segments=8, rings=4, albedo=1.0))
    else:  # desk lamp: arm bent forward, cone shade facing the front (-y) and down
        br = rng.uniform(0.07, 0.12)
        parts.append(cylinder(br, 0.025, segments=16, albedo=a))
        elbow = np.array([0, rng.uniform(0.02, 0.12), rng.uniform(0.25, 0.4)])
        head = elbow + np.array([0, -rng.uniform(0.2, 0.35), rng.uniform(-0.05, 0.12)])
        parts.append(rod((0, 0, 0.02), elbow, 0.008, albedo=a))
        parts.append(rod(elbow, head, 0.008, albedo=a))
        parts.append(sphere(0.015, elbow, segments=6, rings=4, albedo=dark(rng)))
        sr, sh = rng.uniform(0.05, 0.09), rng.uniform(0.08, 0.14)
        shade = revolve(
            [0.015, sr * 0.4, sr],
            [sh, sh * 0.5, 0],
            segments=16,
            albedo=[shade_a, shade_a],
            cap_start=False,
        )
        tilt = rng.uniform(30, 70)  # opening turned towards -y and down
        parts.append(shade.moved((0, 0, -sh)).rotated("x", -tilt).moved(head))
        parts.append(
            sphere(
                sr * 0.3,
                head
                + np.array([0, -np.sin(np.radians(tilt)), -np.cos(np.radians(tilt))]) * sh * 0.6,
                segments=8,
                rings=4,
                albedo=1.0,
            )
        )
    return merge(parts)


def _screen(w: float, h: float, t: float, bezel: float, frame_a: float, screen_a: float) -> Mesh:
    """A flat panel centred at the origin in the xz plane; the screen face looks towards -y."""
    return merge([
        box((w, t, h), albedo=frame_a),
        box((w - 2 * bezel, 0.004, h - 2 * bezel), (0, -t / 2 - 0.002, 0), albedo=screen_a),
    ])  # fmt: skip


def monitor(rng: Rng) -> Mesh:
    tv = rng.random() < 0.35  # a television-like panel: larger, thinner, on two feet
    w = rng.uniform(0.45, 0.75) * (1.8 if tv else 1.0)
    h = w * rng.uniform(0.55, 0.68)
    t = rng.uniform(0.015, 0.035)
    frame = rng.uniform(0.15, 0.8)
    z = rng.uniform(0.08, 0.2) + h / 2
    tilt = 0.0 if tv else rng.uniform(-3, 12)
    parts = [_screen(w, h, t, rng.uniform(0.01, 0.03), frame, dark(rng) * 0.5)]
    # Casing on the back: a bulge the front never shows.
    bulge = rng.uniform(0.03, 0.07) * (0.6 if tv else 1.0)
    parts.append(
        box_between((-w * 0.3, t / 2, -h * 0.3), (w * 0.3, t / 2 + bulge, h * 0.25), frame)
    )
    head = merge(parts).rotated("x", -tilt).moved((0, 0, z))
    if tv:
        base = []
        for s in (-1, 1):
            x = s * w * rng.uniform(0.3, 0.42)
            base.append(
                rod(
                    (x, -0.02, z - h / 2 + 0.02),
                    (x + s * 0.06, -0.1, 0.0),
                    0.012,
                    sides=4,
                    albedo=frame,
                )
            )
            base.append(
                rod(
                    (x, 0.0, z - h / 2 + 0.02),
                    (x + s * 0.06, 0.1, 0.0),
                    0.012,
                    sides=4,
                    albedo=frame,
                )
            )
        return merge([head, *base])
    neck_y = t / 2 + 0.04
    base = [box((0.04, 0.025, z), (0, neck_y, z / 2), frame)]
    if rng.random() < 0.5:
        base.append(
            box(
                (rng.uniform(0.2, 0.3), rng.uniform(0.15, 0.22), 0.015),
                (0, neck_y - 0.02, 0.0075),
                frame,
            )
        )
    else:
        base.append(
            cylinder(
                rng.uniform(0.09, 0.13), 0.015, (0, neck_y - 0.02, 0), segments=16, albedo=frame
            )
        )
    return merge([head, *base])


def laptop(rng: Rng) -> Mesh:
    w, d = rng.uniform(0.3, 0.4), rng.uniform(0.21, 0.28)
    t = rng.uniform(0.012, 0.022)
    a = rng.uniform(0.2, 0.85)
    parts = [box_between((-w / 2, -d / 2, 0), (w / 2, d / 2, t), a)]
    parts.append(
        box_between(
            (-w / 2 + 0.02, -d / 2 + d * 0.42, t),
            (w / 2 - 0.02, d / 2 - 0.015, t + 0.002),
            dark(rng),
        )
    )  # keys
    parts.append(
        box_between((-0.05, -d / 2 + 0.015, t), (0.05, -d / 2 + d * 0.35, t + 0.001), a * 0.7)
    )  # touchpad
    lid = _screen(w, d, t * 0.6, 0.012, a, dark(rng) * 0.5)  # screen face towards -y
    opening = rng.uniform(95, 130)  # degrees between base and lid
    lid = lid.moved((0, 0, d / 2)).rotated("x", 90 - opening)  # hinge at the origin
    parts.append(lid.moved((0, d / 2, t)))
    return merge(parts)


def guitar(rng: Rng) -> Mesh:
    a = light(rng)
    s = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    electric = rng.random() < 0.4
    lower, upper = rng.uniform(0.17, 0.21), rng.uniform(0.12, 0.16)
    waist = rng.uniform(0.75, 0.9)
    # Outline in (x, z): two lobes joined at a waist, as a star-shaped polar curve.
    zc = (lower + upper) * 0.8
    r = np.where(np.sin(s) > 0, upper, lower) * (1 - (1 - waist) * np.abs(np.cos(s)) ** 6)
    r = (
        r * (1 + 0.35 * np.clip(np.sin(s), 0, None) ** 2)
        if not electric
        else r * (1 + 0.15 * np.sin(s))
    )
    outline = np.column_stack([r * np.cos(s), zc + (r + 0.05) * np.sin(s) * 1.2])
    thick = rng.uniform(0.04, 0.05) if electric else rng.uniform(0.08, 0.12)
    body_top = float(outline[:, 1].max())
    parts = [prism(outline, thick, plane="xz", albedo=a)]
    neck_len = rng.uniform(0.45, 0.55)
    neck_a = rng.uniform(0.3, 0.7)
    parts.append(
        box_between((-0.025, -0.01, body_top - 0.05), (0.025, 0.02, body_top + neck_len), neck_a)
    )
    parts.append(
        box_between((-0.023, -0.014, body_top - 0.02), (0.023, -0.01, body_top + neck_len), 0.1)
    )  # fretboard
    hs = rng.uniform(0.14, 0.2)
    parts.append(
        box_between(
            (-0.04, -0.005, body_top + neck_len), (0.04, 0.02, body_top + neck_len + hs), neck_a
        )
    )
    for i in range(3):  # tuning pegs on both sides of the headstock
        z = body_top + neck_len + hs * (0.25 + 0.25 * i)
        parts.append(box_between((-0.065, 0.0, z - 0.01), (0.065, 0.015, z + 0.01), 0.5))
    yf = -thick / 2
    if electric:  # pickups and a scratch plate on the front face
        for z in (zc - 0.05, zc + 0.04):
            parts.append(box_between((-0.04, yf - 0.008, z - 0.012), (0.04, yf, z + 0.012), 0.08))
        parts.append(
            box_between((0.04, yf - 0.003, zc - 0.12), (0.13, yf, zc + 0.05), 1.0 - a * 0.7)
        )
    else:  # a dark sound hole and a bridge on the front face
        hole = cylinder(rng.uniform(0.04, 0.055), 0.003, segments=16, albedo=0.05).rotated("x", 90)
        parts.append(hole.moved((0, yf - 0.001, zc + 0.13)))
        parts.append(box_between((-0.07, yf - 0.01, zc - 0.1), (0.07, yf, zc - 0.08), 0.15))
    return merge(parts)


def car(rng: Rng) -> Mesh:
    style = rng.choice(["sedan", "hatchback", "suv", "pickup"])
    L, w = rng.uniform(3.8, 4.9), rng.uniform(1.6, 1.9)
    wr = rng.uniform(0.3, 0.36)
    hb, ch = rng.uniform(0.5, 0.7), rng.uniform(0.4, 0.55)
    hood, trunk = rng.uniform(0.22, 0.32) * L, rng.uniform(0.12, 0.22) * L
    rake_f, rake_r = rng.uniform(0.35, 0.6), rng.uniform(0.15, 0.45)
    if style == "hatchback":
        L, trunk, rake_r = rng.uniform(3.5, 4.3), rng.uniform(0.02, 0.05) * L, rng.uniform(0.1, 0.3)
    elif style == "suv":
        L, wr = rng.uniform(4.3, 5.0), rng.uniform(0.36, 0.42)
        hb, ch = rng.uniform(0.65, 0.8), rng.uniform(0.5, 0.62)
        trunk, rake_r = rng.uniform(0.02, 0.05) * L, rng.uniform(0.05, 0.15)
    elif style == "pickup":
        L, wr, hb = rng.uniform(4.8, 5.5), rng.uniform(0.36, 0.42), rng.uniform(0.6, 0.75)
        trunk, rake_r = L - hood - rng.uniform(0.22, 0.3) * L, 0.05
    zb = wr * 0.8
    paint = rng.uniform(0.35, 0.95)
    # Side profile in (y, z): a nose lower than the tail; the front faces -y.
    body = np.array([
        (-L / 2, zb), (L / 2, zb), (L / 2, zb + hb * 0.95), (L / 2 - 0.1, zb + hb),
        (-L / 2 + 0.25, zb + hb * 0.92), (-L / 2, zb + hb * 0.7),
    ])  # fmt: skip
    parts = [prism(body, w, plane="yz", albedo=paint)]
    c0, c1 = -L / 2 + hood, L / 2 - trunk
    top = zb + hb
    cabin = np.array([(c0, top), (c1, top), (c1 - rake_r, top + ch), (c0 + rake_f, top + ch)])
    glass = dark(rng) + 0.05
    parts.append(prism(cabin, w * 0.86, plane="yz", albedo=glass))
    parts.append(
        box_between(
            (-w * 0.43, c0 + rake_f, top + ch - 0.01),
            (w * 0.43, c1 - rake_r, top + ch + 0.03),
            paint,
        )
    )
    if style == "pickup":  # an open cargo bed behind the cab, seen from behind and above
        wall = rng.uniform(0.3, 0.45)
        parts.append(
            box_between(
                (-w / 2 + 0.05, c1 + 0.05, top),
                (w / 2 - 0.05, L / 2 - 0.05, top + 0.01),
                dark(rng) + 0.1,
            )
        )
        for s in (-1, 1):
            x = s * (w / 2 - 0.03)
            parts.append(box_between((x - 0.03, c1, top), (x + 0.03, L / 2, top + wall), paint))
        parts.append(box_between((-w / 2, L / 2 - 0.06, top), (w / 2, L / 2, top + wall), paint))
    for y in (-L / 2 + hood * 0.7 - 0.1, L / 2 - min(trunk, 0.25 * L) * 0.8 - 0.35):  # wheels
        for x in (-w / 2 + 0.12, w / 2 - 0.12):
            tyre = cylinder(wr, 0.22, (0, 0, -0.11), segments=14, albedo=0.08).rotated("y", 90)
            hub = cylinder(wr * 0.5, 0.225, (0, 0, -0.1125), segments=10, albedo=0.6).rotated(
                "y", 90
            )
            parts += [tyre.moved((x, y, wr)), hub.moved((x, y, wr))]
    fz = zb + hb * 0.55  # headlights and grille at the front, tail lights at the back
    for s in (-1, 1):
        parts.append(
            box_between(
                (s * w * 0.36 - 0.14, -L / 2 - 0.02, fz - 0.06),
                (s * w * 0.36 + 0.14, -L / 2, fz + 0.06),
                1.0,
            )
        )
        parts.append(
            box_between(
                (s * w * 0.4 - 0.12, L / 2, zb + hb * 0.7),
                (s * w * 0.4 + 0.12, L / 2 + 0.02, zb + hb * 0.85),
                0.35,
            )
        )
    parts.append(
        box_between((-w * 0.2, -L / 2 - 0.02, zb + 0.1), (w * 0.2, -L / 2, fz + 0.02), 0.06)
    )
    return merge(parts)


def airplane(rng: Rng) -> Mesh:
    L = rng.uniform(3.0, 4.5)
    r = L * rng.uniform(0.05, 0.08)
    a = rng.uniform(0.6, 1.0)
    t = np.array([0.0, 0.03, 0.1, 0.2, 0.7, 0.9, 1.0])
    rr = r * np.array([0.0, 0.5, 0.85, 1.0, 1.0, 0.6, 0.2])
    # Fuselage along +z from nose (z=0) to tail, then turned so the nose points to -y.
    fus = revolve(rr, t * L, segments=14, albedo=a).rotated("x", -90).moved((0, -L / 2, 0))
    parts = [fus]
    span = L * rng.uniform(0.8, 1.2)
    root, tip = L * rng.uniform(0.15, 0.22), L * rng.uniform(0.05, 0.1)
    sweep = rng.uniform(0.0, 0.35) * span / 2
    wy = -L / 2 + L * rng.uniform(0.35, 0.45)
    wing = np.array(
        [
            (0, wy),
            (span / 2, wy + sweep),
            (span / 2, wy + sweep + tip),
            (0, wy + root),
            (-span / 2, wy + sweep + tip),
            (-span / 2, wy + sweep),
        ]
    )
    wz = -r * rng.uniform(0.0, 0.6)
    parts.append(prism(wing, r * 0.15, plane="xy", albedo=a).moved((0, 0, wz)))
    ty = L / 2 - L * 0.12
    fin_h = r * rng.uniform(2.0, 3.5)
    fin = np.array(
        [(ty - L * 0.08, 0), (ty + L * 0.1, 0), (ty + L * 0.12, fin_h), (ty + L * 0.04, fin_h)]
    )
    parts.append(prism(fin, r * 0.12, plane="yz", albedo=a).moved((0, 0, r * 0.5)))
    hspan = span * rng.uniform(0.28, 0.4)
    stab = np.array(
        [
            (0, ty),
            (hspan / 2, ty + L * 0.06),
            (hspan / 2, ty + L * 0.1),
            (0, ty + L * 0.12),
            (-hspan / 2, ty + L * 0.1),
            (-hspan / 2, ty + L * 0.06),
        ]
    )
    parts.append(prism(stab, r * 0.1, plane="xy", albedo=a).moved((0, 0, r * 0.4)))
    n_eng = int(rng.choice([0, 2, 2, 4]))
    for k in range(n_eng):
        x = (span / 2) * (0.35 if k < 2 else 0.65) * (1 if k % 2 else -1)
        y = wy + sweep * abs(x) / (span / 2) - L * 0.04
        eng = revolve(
            [r * 0.3, r * 0.35, r * 0.3], [0, L * 0.06, L * 0.12], segments=10, albedo=0.5
        )
        parts.append(eng.rotated("x", -90).moved((x, y - L * 0.06, wz - r * 0.4)))
    # Cockpit windows at the nose: dark, seen from the front and the sides.
    parts.append(
        box_between(
            (-r * 0.55, -L / 2 + L * 0.05, r * 0.35), (r * 0.55, -L / 2 + L * 0.09, r * 0.65), 0.05
        )
    )
    return merge(parts)
