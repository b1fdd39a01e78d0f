"""Mesh readers (.off, .obj, .stl) and the rendered mesh-tree import."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from slimedge.cli import main
from slimedge.data.container import SPLITS
from slimedge.data.meshes import import_meshes, read_mesh
from slimedge.errors import DatasetError

# A box: 8 corners, 6 quads. Sized (sx, sy, sz) it is asymmetric enough to show its up axis.
CORNERS = np.array(
    [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)],
    dtype=np.float64,
)
QUADS = [(0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)]


def fan(quads: list[tuple[int, ...]]) -> np.ndarray:
    return np.array([(q[0], q[k], q[k + 1]) for q in quads for k in range(1, len(q) - 1)])


def box(size: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    return CORNERS * np.asarray(size)


def fmt(x: float) -> str:
    return repr(float(x))


def off_text(verts: np.ndarray, header: str = "OFF\n{nv} {nf} 0\n") -> str:
    lines = [header.format(nv=len(verts), nf=len(QUADS)), "# a box\n"]
    lines += [" ".join(map(fmt, v)) + "\n" for v in verts]
    lines += [f"4 {' '.join(map(str, q))}\n" for q in QUADS]
    return "".join(lines)


def obj_text(verts: np.ndarray) -> str:
    lines = ["# exported\nmtllib box.mtl\no box\n"]
    lines += [f"v {' '.join(map(fmt, v))}\n" for v in verts]
    lines += ["vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nvn 0 0 1\ng sides\ns off\nusemtl grey\n"]
    for q in QUADS:
        lines.append("f " + " ".join(f"{i + 1}/{i % 4 + 1}/1" for i in q) + "\n")
    return "".join(lines)


def stl_binary(path: Path, verts: np.ndarray, header: bytes = b"solid box (binary)") -> None:
    tris = verts[fan(QUADS)]
    with open(path, "wb") as fh:
        fh.write(header.ljust(80, b" "))
        fh.write(struct.pack("<I", len(tris)))
        for t in tris:
            fh.write(struct.pack("<3f", 0.0, 0.0, 0.0))
            fh.write(t.astype("<f4").tobytes())
            fh.write(b"\0\0")


def stl_ascii(path: Path, verts: np.ndarray) -> None:
    out = ["solid box\n"]
    for t in verts[fan(QUADS)]:
        out.append("  facet normal 0 0 0\n    outer loop\n")
        out += [f"      vertex {x:e} {y:e} {z:e}\n" for x, y, z in t]
        out.append("    endloop\n  endfacet\n")
    out.append("endsolid box\n")
    path.write_text("".join(out))


def same_triangles(v1: np.ndarray, f1: np.ndarray, v2: np.ndarray, f2: np.ndarray) -> bool:
    """Same set of triangles by coordinates (vertex order/numbering may differ)."""
    def key(v: np.ndarray, f: np.ndarray) -> list:
        return sorted(tuple(sorted(map(tuple, np.round(v[t], 6)))) for t in f)
    return key(v1, f1) == key(v2, f2)


# -- OFF ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "header",
    [
        "OFF\n{nv} {nf} 0\n",
        "OFF{nv} {nf} 0\n",  # ModelNet's malformed form: counts glued to the keyword
        "OFF {nv} {nf} 0\n",
        "# made by hand\nOFF\n\n# counts next\n{nv} {nf} 12\n",
    ],
)
def test_off_headers(tmp_path: Path, header: str) -> None:
    path = tmp_path / "box.off"
    path.write_text(off_text(box((1, 2, 3)), header))
    v, f = read_mesh(path)
    assert v.dtype == np.float64 and v.shape == (8, 3) and f.dtype == np.int64
    assert f.shape == (12, 3)  # quads fan-triangulated
    assert np.array_equal(v, box((1, 2, 3))) and np.array_equal(f, fan(QUADS))


def test_off_colours_and_polygons(tmp_path: Path) -> None:
    path = tmp_path / "cpoly.off"
    verts = ["0 0 0 255 0 0 255", "1 0 0 0 255 0 255", "1 1 0 0 0 255 255", "0.5 1.5 0 1 1 1 1",
             "0 1 0 9 9 9 9"]
    path.write_text("COFF\n5 1 0\n" + "\n".join(verts) + "\n5 0 1 2 3 4 0.5 0.5 0.5 1.0\n")
    v, f = read_mesh(path)
    assert v.shape == (5, 3) and v[3].tolist() == [0.5, 1.5, 0.0]
    assert f.tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4]]


# -- OBJ ------------------------------------------------------------------------------------------
def test_obj_quads_with_slashes(tmp_path: Path) -> None:
    path = tmp_path / "box.obj"
    path.write_text(obj_text(box((2, 1, 1))))
    v, f = read_mesh(path)
    assert np.array_equal(v, box((2, 1, 1))) and np.array_equal(f, fan(QUADS))


def test_obj_slash_forms_negative_indices_and_continuations(tmp_path: Path) -> None:
    path = tmp_path / "rel.obj"
    path.write_text(
        "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n"
        "f 1/1/1 2/2/2 3/3/3 4/4/4\n"  # a quad, v/vt/vn
        "v 0 0 1\nv 1 0 \\\n  1\nv 1 1 1\n"  # '\\' joins the next line into the record
        "f -3//1 -2//1 -1//1\n"  # relative: the last three vertices so far (5, 6, 7)
        "f 1/1 5/2 -1/3\n"
        "l 1 2\np 3\n"
    )
    v, f = read_mesh(path)
    assert v.shape == (7, 3) and v[5].tolist() == [1.0, 0.0, 1.0]
    assert f.tolist() == [[0, 1, 2], [0, 2, 3], [4, 5, 6], [0, 4, 6]]


# -- STL ------------------------------------------------------------------------------------------
def test_binary_stl_whose_header_starts_with_solid(tmp_path: Path) -> None:
    path = tmp_path / "box.stl"
    stl_binary(path, box((1, 2, 0.5)))
    assert path.read_bytes().startswith(b"solid")
    v, f = read_mesh(path)
    assert v.shape == (8, 3) and f.shape == (12, 3)  # shared corners merged
    assert same_triangles(v, f, box((1, 2, 0.5)), fan(QUADS))


def test_ascii_stl(tmp_path: Path) -> None:
    path = tmp_path / "box.stl"
    stl_ascii(path, box((1, 2, 0.5)))
    v, f = read_mesh(path)
    assert v.shape == (8, 3) and f.shape == (12, 3)
    assert same_triangles(v, f, box((1, 2, 0.5)), fan(QUADS))


def test_truncated_binary_stl(tmp_path: Path) -> None:
    path = tmp_path / "cut.stl"
    stl_binary(path, box(), header=b"binary box")
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DatasetError, match=re.escape(f"{path}: binary STL declares 12 triangles")):
        read_mesh(path)


# -- errors name the file -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("flat.off", "OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n", "mesh has no faces"),
        ("points.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n", "mesh has no faces"),
        ("nan.obj", "v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n",
         r"vertex 1 \(counting from 0\) has a non-finite coordinate"),
        ("inf.off", "OFF\n3 1 0\n0 0 0\n1 inf 0\n0 1 0\n3 0 1 2\n", "non-finite"),
        ("range.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n",
         r"face 0 \(counting from 0\) refers to vertex indices \[0, 1, 3\].* has 3 vertices"),
        ("range.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1 2 4\n",
         r"face 1 .*\[0, 1, 3\]"),
        ("zero.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "vertex index 0"),
        ("before.obj", "v 0 0 0\nv 1 0 0\nf -1 -2 -3\n", "relative index -3 points before"),
        ("short.off", "OFF\n4 2 0\n0 0 0\n1 0 0\n0 1 0\n1 1 0\n3 0 1 2\n", "file ends early"),
        ("noheader.off", "3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "no OFF header"),
        ("word.off", "OFF\n3 1 0\n0 0 0\n1 zero 0\n0 1 0\n3 0 1 2\n", "line 4: vertex is not"),
        ("bin.off", "OFF BINARY\n", "binary OFF is not supported"),
        ("edge.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n2 0 1\n", "line 6: face needs"),
        ("empty.stl", "", "neither ASCII STL"),
        ("nofacet.stl", "solid nothing\nendsolid nothing\n", "mesh has no faces"),
        ("mesh.ply", "ply\n", r"unknown mesh format '\.ply'"),
    ],
)
def test_bad_meshes_name_the_file(tmp_path: Path, name: str, text: str, match: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DatasetError, match=re.escape(str(path)) + ": .*" + match):
        read_mesh(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "gone.obj")) + ": cannot read"):
        read_mesh(tmp_path / "gone.obj")


# -- importing a tree -----------------------------------------------------------------------------
def write_tree(root: Path) -> Path:
    """Two classes, mixed formats: tall boxes and flat boxes."""
    for cls, size in (("slab", (1.0, 1.0, 0.2)), ("tower", (0.3, 0.3, 1.0))):
        for split, names in (("train", ("a", "b", "c")), ("test", ("d",))):
            folder = root / cls / split
            folder.mkdir(parents=True)
            for k, name in enumerate(names):
                verts = box(size) * (1.0 + 0.1 * k)  # scale does not matter: normalized
                if k % 3 == 0:
                    (folder / f"{name}.off").write_text(off_text(verts, "OFF{nv} {nf} 0\n"))
                elif k % 3 == 1:
                    (folder / f"{name}.OBJ").write_text(obj_text(verts))
                else:
                    stl_binary(folder / f"{name}.stl", verts)
            (folder / "box.mtl").write_text("newmtl grey\n")  # not a mesh: ignored
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tree(tmp_path_factory.mktemp("meshes") / "root")


def silhouette(img: np.ndarray) -> tuple[int, int]:
    """(height, width) of the bounding box of non-background pixels."""
    rows, cols = np.flatnonzero(img.any(axis=1)), np.flatnonzero(img.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def test_import_renders_every_view(tree: Path) -> None:
    ds = import_meshes(tree, image_size=24, val_fraction=0.34, seed=1, progress=False)
    assert ds.images.shape == (8, 12, 24, 24, 1) and ds.class_names == ["slab", "tower"]
    assert ds.object_names == ["slab/a", "slab/b", "slab/c", "slab/d",
                               "tower/a", "tower/b", "tower/c", "tower/d"]
    assert ds.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [SPLITS[s] for s in ds.split[[3, 7]]] == ["test", "test"]
    assert (ds.split == SPLITS.index("val")).sum() == 2  # one of three train objects per class
    covered = (ds.images[..., 0] > 0).mean(axis=(2, 3))
    assert (covered > 0.05).all() and (covered < 0.9).all()  # object in frame in every view
    for i in range(4):  # towers render tall, slabs wide, at every azimuth
        h, w = silhouette(ds.images[4 + i, 3, :, :, 0])
        assert h > 1.5 * w
    assert ds.params["formats"] == {"obj": 2, "off": 4, "stl": 2}
    assert ds.params["source"] == "meshes" and ds.params["up"] == "z"
    assert [round(c["azimuth"]) for c in ds.cameras] == list(range(0, 360, 30))


def test_elevations_and_azimuths_set_the_views(tree: Path) -> None:
    ds = import_meshes(tree, image_size=16, azimuths=4, elevations=(30.0, 60.0), progress=False)
    assert ds.n_views == 8
    assert [(c["azimuth"], c["elevation"]) for c in ds.cameras[3:5]] == [(270.0, 30.0), (0.0, 60.0)]
    assert ds.params["elevations"] == [30.0, 60.0] and ds.params["azimuths"] == 4


def test_up_y_rotates_the_mesh(tmp_path: Path) -> None:
    for name in ("train", "test"):
        (tmp_path / "tower" / name).mkdir(parents=True)
        (tmp_path / "tower" / name / f"t_{name}.off").write_text(off_text(box((0.3, 0.3, 1.0))))
    z_up = import_meshes(tmp_path, image_size=32, up="z", progress=False).images[0, 3, :, :, 0]
    y_up = import_meshes(tmp_path, image_size=32, up="y", progress=False).images[0, 3, :, :, 0]
    hz, wz = silhouette(z_up)
    hy, wy = silhouette(y_up)
    assert hz > 2 * wz  # +z up: the long axis stands
    assert wy > 2 * hy  # read as +y up: the long z axis lies along the view's horizontal


def test_parallel_render_matches_serial(tree: Path) -> None:
    one = import_meshes(tree, image_size=16, workers=1, progress=False)
    two = import_meshes(tree, image_size=16, workers=2, progress=False)
    assert one.content_hash() == two.content_hash()


def test_bad_mesh_in_tree_names_the_file(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root")
    bad = root / "tower" / "test" / "e.obj"
    bad.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 5\n")
    with pytest.raises(DatasetError, match=re.escape(f"{bad}: face 0")):
        import_meshes(root, image_size=8, progress=False)


def test_degenerate_mesh_in_tree_names_the_file(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root")
    bad = root / "slab" / "train" / "dot.off"
    bad.write_text("OFF\n3 1 0\n1 1 1\n1 1 1\n1 1 1\n3 0 1 2\n")
    with pytest.raises(DatasetError, match=re.escape(f"{bad}: ") + ".*coincide"):
        import_meshes(root, image_size=8, workers=1, progress=False)


def test_tree_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such folder"):
        import_meshes(tmp_path / "nope", progress=False)
    (tmp_path / "cup" / "train").mkdir(parents=True)
    (tmp_path / "cup" / "train" / "notes.txt").write_text("no meshes here")
    with pytest.raises(DatasetError, match="no mesh files"):
        import_meshes(tmp_path, progress=False)
    (tmp_path / "mug" / "test").mkdir(parents=True)
    (tmp_path / "mug" / "test" / "m.off").write_text(off_text(box()))
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path / 'cup'}: class folder holds no")):
        import_meshes(tmp_path, progress=False)
    (tmp_path / "cup" / "train" / "m.stl").write_bytes(b"")
    (tmp_path / "cup" / "train" / "m.obj").write_text("")
    with pytest.raises(DatasetError, match="object 'm' also given by"):
        import_meshes(tmp_path, progress=False)
    with pytest.raises(DatasetError, match="up"):
        import_meshes(tmp_path, up="x", progress=False)


def test_cli_round_trip(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    argv = ["data", "import-meshes", str(tree), "--out", str(out), "--image-size", "16",
            "--azimuths", "6", "--elevations", "30,60", "--up", "y", "--val-fraction", "0",
            "--workers", "1", "--json"]
    assert main(argv) == 0
    made = json.loads(capsys.readouterr().out)
    assert main(["data", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["objects"] == 8 and info["views"] == 12 and info["image_size"] == [16, 16]
    assert info["splits"] == {"train": 6, "val": 0, "test": 2}
    assert info["content_hash"] == made["content_hash"]
    assert info["params"]["up"] == "y" and info["params"]["elevations"] == [30.0, 60.0]
    bad = ["data", "import-meshes", str(tree), "--out", str(out), "--elevations", "30,high"]
    assert main(bad) == 2 and "elevations" in capsys.readouterr().err
