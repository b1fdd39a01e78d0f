"""The camera ring, mesh normalization and the NumPy z-buffer rasterizer."""

from __future__ import annotations

import numpy as np
import pytest

from slimedge.data import render
from slimedge.data.cameras import camera_axes, camera_ring
from slimedge.data.render import MARGIN, normalize_mesh, render_views
from slimedge.data.shapes import box, merge, sphere
from slimedge.errors import DatasetError

FRONT = [{"azimuth": 0.0, "elevation": 0.0}]
BACK = [{"azimuth": 180.0, "elevation": 0.0}]


def _square(y: float, half: float) -> tuple[np.ndarray, np.ndarray]:
    """A square in the xz plane at depth y (facing the azimuth-0 camera), two triangles."""
    v = np.array([[-half, y, -half], [half, y, -half], [half, y, half], [-half, y, half]])
    return v, np.array([[0, 1, 2], [0, 2, 3]])


# -- camera ring --------------------------------------------------------------------


def test_camera_ring_is_the_mvcnn_ring_by_default():
    ring = camera_ring()
    assert len(ring) == 12
    assert [c["azimuth"] for c in ring] == [30.0 * i for i in range(12)]
    assert {c["elevation"] for c in ring} == {30.0}


def test_camera_ring_is_elevation_major():
    ring = camera_ring(4, (30.0, 60.0))
    assert [(c["elevation"], c["azimuth"]) for c in ring] == [
        (30.0, 0.0), (30.0, 90.0), (30.0, 180.0), (30.0, 270.0),
        (60.0, 0.0), (60.0, 90.0), (60.0, 180.0), (60.0, 270.0),
    ]  # fmt: skip


@pytest.mark.parametrize("azimuths, elevations, match", [
    (0, (30.0,), "azimuths: need a positive whole number, got 0"),
    (12, (), "elevations: need at least one elevation"),
    (12, (95.0,), r"elevations: 95.0 lies outside -90..90 degrees"),
])
def test_camera_ring_rejects_bad_arguments(azimuths, elevations, match):
    with pytest.raises(DatasetError, match=match):
        camera_ring(azimuths, elevations)


def test_azimuth_zero_looks_at_the_front_which_faces_minus_y():
    right, up, to_camera = camera_axes({"azimuth": 0.0, "elevation": 0.0})
    np.testing.assert_allclose(to_camera, [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(right, [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(up, [0, 0, 1], atol=1e-12)
    _, _, side = camera_axes({"azimuth": 90.0, "elevation": 0.0})
    np.testing.assert_allclose(side, [1, 0, 0], atol=1e-12)
    _, up_top, top = camera_axes({"azimuth": 0.0, "elevation": 90.0})  # still well defined
    np.testing.assert_allclose(top, [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(up_top, [0, 1, 0], atol=1e-12)


# -- normalize_mesh ------------------------------------------------------------------


def test_normalize_mesh_centres_and_scales_to_the_unit_sphere():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 3)) * [3.0, 1.0, 0.5] + [10.0, -4.0, 2.0]
    n = normalize_mesh(v)
    np.testing.assert_allclose((n.min(axis=0) + n.max(axis=0)) / 2, 0.0, atol=1e-12)
    assert np.linalg.norm(n, axis=1).max() == pytest.approx(1.0)


def test_normalize_mesh_turns_y_up_into_z_up_and_plus_z_front_into_minus_y():
    v = np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])  # tall in y, front +z
    n = normalize_mesh(v, up="y")
    assert np.ptp(n[:, 2]) > np.ptp(n[:, 1])  # height is now along z
    assert n[2, 1] < n[0, 1]  # the +z vertex moved towards -y


@pytest.mark.parametrize(
    "vertices, up, message",
    [
        (np.zeros((0, 3)), "z", "no vertices"),
        (np.array([[0.0, 0.0, np.nan], [1.0, 0.0, 0.0]]), "z", "non-finite"),
        (np.array([[0.0, np.inf, 0.0], [1.0, 0.0, 0.0]]), "z", "non-finite"),
        (np.ones((4, 3)), "z", "coincide"),
        (np.ones((4, 2)), "z", "shape"),
        (np.eye(3), "x", "up"),
    ],
)
def test_normalize_mesh_rejects_bad_input(vertices, up, message):
    with pytest.raises(DatasetError, match=message):
        normalize_mesh(vertices, up=up)


# -- rasterizer ----------------------------------------------------------------------


def test_sphere_renders_a_centred_disc_of_the_right_size_on_a_zero_background():
    s = sphere(1.0, segments=48, rings=24)
    img = render_views(s.vertices, s.faces, FRONT, 64)[0]
    assert img.dtype == np.uint8 and img.shape == (64, 64)
    mask = img > 0
    radius = 64 / 2 / (1 + MARGIN)
    assert mask.sum() == pytest.approx(np.pi * radius**2, rel=0.03)
    ys, xs = np.nonzero(mask)
    assert xs.mean() == pytest.approx(31.5, abs=0.3)
    assert ys.mean() == pytest.approx(31.5, abs=0.3)
    assert img[0].max() == 0 and img[-1].max() == 0 and img[:, 0].max() == 0


def test_box_renders_a_square_of_the_right_side():
    half = 1 / np.sqrt(3)  # a cube inscribed in the unit sphere
    b = box((2 * half, 2 * half, 2 * half))
    img = render_views(b.vertices, b.faces, FRONT, 64)[0]
    side = 2 * half * 64 / 2 / (1 + MARGIN)
    rows = np.flatnonzero(img.max(axis=1))
    cols = np.flatnonzero(img.max(axis=0))
    assert len(rows) == pytest.approx(side, abs=1.0)
    assert len(cols) == pytest.approx(side, abs=1.0)
    assert (img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] > 0).all()  # no cracks
    assert len(np.unique(img[img > 0])) == 1  # one flat face


def test_rendering_is_deterministic():
    s = sphere(0.9, segments=20, rings=10)
    cams = camera_ring()
    a = render_views(s.vertices, s.faces, cams, 32)
    b = render_views(s.vertices, s.faces, cams, 32)
    assert a.shape == (12, 32, 32)
    np.testing.assert_array_equal(a, b)


def test_the_light_comes_from_the_upper_left_of_every_view():
    s = sphere(1.0, segments=48, rings=24)
    for cam in ({"azimuth": 0.0, "elevation": 30.0}, {"azimuth": 210.0, "elevation": 30.0}):
        img = render_views(s.vertices, s.faces, [cam], 64)[0].astype(float)
        assert img[:, :32].sum() > 1.2 * img[:, 32:].sum()
        assert img[:32].sum() > 1.2 * img[32:].sum()


def test_a_nearer_face_occludes_a_farther_one_whatever_the_face_order():
    near_v, near_f = _square(-0.5, 0.3)
    far_v, far_f = _square(0.5, 0.6)
    v = np.vstack([far_v, near_v])
    f = np.vstack([far_f, near_f + 4])
    albedo = np.array([1.0, 1.0, 0.3, 0.3])  # far bright, near dark
    img = render_views(v, f, FRONT, 48, albedo=albedo)[0]
    img_rev = render_views(v, f[::-1], FRONT, 48, albedo=albedo[::-1])[0]
    np.testing.assert_array_equal(img, img_rev)
    centre, edge = img[24, 24], img[24, 12]
    assert 0 < centre < edge  # the near (dark) square in front, the far one around it
    back = render_views(v, f, BACK, 48, albedo=albedo)[0]
    assert back[24, 24] == back[24, 35] > 0  # from behind, the big bright square hides it


def test_an_open_surface_renders_from_both_sides_in_either_winding():
    v, f = _square(0.0, 0.5)
    images = [
        render_views(v, faces, cams, 32)[0] for faces in (f, f[:, ::-1]) for cams in (FRONT, BACK)
    ]
    assert all(img.sum() > 0 for img in images)
    np.testing.assert_array_equal(images[0], images[2])  # the winding does not matter


def test_degenerate_triangles_do_not_crash_or_draw():
    v, f = _square(0.0, 0.5)
    v = np.vstack([v, [[0.1, 0.0, 0.1], [0.2, 0.0, 0.2], [0.3, 0.0, 0.3]]])
    junk = np.array([[0, 0, 0], [1, 1, 2], [4, 5, 6], [0, 2, 0]])  # points, lines, collinear
    clean = render_views(v, f, FRONT, 32)
    dirty = render_views(v, np.vstack([f, junk]), FRONT, 32)
    np.testing.assert_array_equal(clean, dirty)
    only_junk = render_views(v, junk, camera_ring(), 32)
    assert only_junk.max() == 0
    edge_on = render_views(v, f, [{"azimuth": 90.0, "elevation": 0.0}], 32)
    assert edge_on.max() == 0  # seen exactly edge-on, a flat square covers nothing


def test_empty_meshes_and_no_cameras_give_empty_images():
    assert render_views(np.zeros((0, 3)), np.zeros((0, 3), int), FRONT, 16).max() == 0
    assert render_views(np.eye(3), np.array([[0, 1, 2]]), [], 16).shape == (0, 16, 16)


@pytest.mark.parametrize(
    "vertices, faces, kwargs, message",
    [
        (np.array([[0, 0, 0], [1, 0, 0], [0, 0, np.nan]]), [[0, 1, 2]], {}, "non-finite"),
        (np.eye(3), [[0, 1, 3]], {}, "indices"),
        (np.eye(3), [[0.0, 1.0, 2.0]], {}, "integer"),
        (np.eye(3), [[0, 1, 2]], {"albedo": [0.5, 0.5]}, "albedo"),
        (np.eye(3), [[0, 1, 2]], {"light": {"colour": 1.0}}, "light"),
        (np.eye(3), [[0, 1, 2]], {"supersample": 0}, "supersample"),
    ],
)
def test_render_rejects_bad_input(vertices, faces, kwargs, message):
    with pytest.raises(DatasetError, match=message):
        render_views(np.asarray(vertices, float), np.asarray(faces), FRONT, 16, **kwargs)


def test_the_front_of_an_object_is_what_azimuth_zero_sees():
    body = box((1.0, 1.0, 1.0), albedo=1.0)
    badge = box((0.5, 0.05, 0.5), (0.0, -0.52, 0.0), albedo=0.1)  # a dark plate on the front
    m = merge([body, badge])
    v = normalize_mesh(m.vertices)
    front, back = render_views(v, m.faces, FRONT + BACK, 32, albedo=m.albedo)
    assert front[16, 16] < 0.3 * back[16, 16]


def test_supersampling_keeps_thin_parts_and_the_shape():
    rod = box((0.04, 0.04, 1.6))  # 0.3 px wide at 16 px, between two pixel centres
    plain = render_views(rod.vertices, rod.faces, FRONT, 16)
    smooth = render_views(rod.vertices, rod.faces, FRONT, 16, supersample=4)
    assert smooth.shape == plain.shape == (1, 16, 16)
    assert plain.max() == 0  # missed by every pixel centre
    assert (smooth[0].max(axis=1) > 0).sum() >= 12  # visible (faint) along its length
    assert 0 < smooth.max() < 128


def test_fragment_chunks_do_not_change_the_image(monkeypatch):
    s = merge([sphere(0.7, segments=24, rings=12), box((1.0, 0.2, 1.0), albedo=0.5)])
    cams = camera_ring(6)
    whole = render_views(s.vertices, s.faces, cams, 40, albedo=s.albedo)
    monkeypatch.setattr(render, "FRAGMENT_CHUNK", 333)
    chunked = render_views(s.vertices, s.faces, cams, 40, albedo=s.albedo)
    np.testing.assert_array_equal(whole, chunked)
