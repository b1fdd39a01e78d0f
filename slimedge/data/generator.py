"""The built-in dataset: parametric 3D objects of 25 classes rendered on the camera ring.

Every object is built from its own seed, derived from (config seed, class name, index), so the
dataset is the same whatever the number of worker processes, and a class's objects do not
change when other classes are added or removed. Objects stand front-facing (towards the
azimuth-0 camera) with a small yaw jitter, as in aligned real datasets, so the view positions
are not interchangeable: the front sees drawers, screens and faces that the back does not.

What keeps it from being easy: look-alike classes (desk/table, dresser/night_stand/wardrobe,
cup/vase/bottle, monitor/laptop, bookshelf/wardrobe), several styles per class, random
proportions, and per-object nuisances: yaw, scale, position, light direction and brightness,
cameras a few degrees off their ring positions, and pixel noise on the object.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimedge.data.cameras import camera_ring
from slimedge.data.container import SPLITS, Dataset
from slimedge.data.objects import CLASS_NAMES, build_object, check_classes
from slimedge.data.render import DEFAULT_LIGHT, normalize_mesh, render_views
from slimedge.errors import DatasetError
from slimedge.parallel import map_ordered, resolve_workers

GENERATOR_VERSION = "1"  # bump when the same config would make different pixels
PRESETS = ("default", "quick", "tiny")
_OBJECT, _SPLIT = 0, 1  # seed-sequence branches per class


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 0
    classes: tuple[str, ...] = CLASS_NAMES
    objects_per_class: int = 72
    image_size: int = 48
    azimuths: int = 12
    elevations: tuple[float, ...] = (30.0,)
    yaw_jitter_deg: float = 15.0  # object yaw drawn from +-this around front-facing
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test
    noise_std: float = 8.0  # Gaussian pixel noise on object pixels, in gray levels
    scale_jitter: float = 0.25  # object radius drawn from [1 - this, 1] of the frame
    offset_jitter: float = 0.15  # object centre moved by up to +-this (frame radius 1) per axis
    camera_jitter_deg: float = 5.0  # each view's camera off its ring position by +-this
    light_jitter_deg: float = 20.0  # light direction drawn from +-this around the default
    brightness_jitter: float = 0.3  # ambient and diffuse scaled by 1 +- this
    supersample: int = 2  # render at k x size and box-filter down (thin parts stay visible)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "elevations", tuple(float(e) for e in self.elevations))
        object.__setattr__(self, "split_fractions", tuple(float(x) for x in self.split_fractions))
        self.validate()

    def validate(self) -> None:
        def bad(name: str, why: str) -> DatasetError:
            return DatasetError(f"generator config: field '{name}' {why}")

        if not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise bad("seed", f"must be a non-negative integer, got {self.seed!r}")
        if not self.classes:
            raise bad("classes", "is empty")
        if len(set(self.classes)) != len(self.classes):
            raise bad("classes", f"has duplicates: {list(self.classes)}")
        check_classes(self.classes)
        if self.objects_per_class < 3:
            raise bad(
                "objects_per_class",
                f"must be at least 3 (one per split), got {self.objects_per_class}",
            )
        if not 8 <= self.image_size <= 512:
            raise bad("image_size", f"must lie in 8..512, got {self.image_size}")
        if self.azimuths < 1:
            raise bad("azimuths", f"must be at least 1, got {self.azimuths}")
        if not self.elevations or any(not -90 <= e <= 90 for e in self.elevations):
            raise bad("elevations", f"need one or more angles in -90..90, got {self.elevations}")
        if not 0 <= self.yaw_jitter_deg <= 180:
            raise bad("yaw_jitter_deg", f"must lie in 0..180, got {self.yaw_jitter_deg}")
        fr = self.split_fractions
        if len(fr) != len(SPLITS) or min(fr) <= 0 or abs(sum(fr) - 1.0) > 1e-6:
            raise bad(
                "split_fractions", f"need {len(SPLITS)} positive fractions summing to 1, got {fr}"
            )
        for name in ("noise_std", "light_jitter_deg", "camera_jitter_deg"):
            if getattr(self, name) < 0:
                raise bad(name, f"must be >= 0, got {getattr(self, name)}")
        for name in ("scale_jitter", "offset_jitter", "brightness_jitter"):
            if not 0 <= getattr(self, name) < 1:
                raise bad(name, f"must lie in [0, 1), got {getattr(self, name)}")
        if self.supersample < 1:
            raise bad("supersample", f"must be at least 1, got {self.supersample}")
        split_counts(self.objects_per_class, self.split_fractions)

    @property
    def n_views(self) -> int:
        return self.azimuths * len(self.elevations)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(x) if isinstance(x, tuple) else x for k, x in d.items()}

    @classmethod
    def default(cls, **overrides: Any) -> GeneratorConfig:
        """The demo's dataset: 25 classes x 72 objects, 12 views of 48 px (~50 MB)."""
        return cls(**overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> GeneratorConfig:
        """A small set for a quick demo: 25 classes x 12 objects at 32 px (seconds)."""
        return cls(**({"objects_per_class": 12, "image_size": 32} | overrides))

    @classmethod
    def tiny(cls, **overrides: Any) -> GeneratorConfig:
        """For tests: 25 classes x 3 objects at 16 px (about a second)."""
        return cls(**({"objects_per_class": 3, "image_size": 16} | overrides))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GeneratorConfig:
        if name not in PRESETS:
            raise DatasetError(f"preset: unknown preset {name!r} (expected one of {list(PRESETS)})")
        return getattr(cls, name)(**overrides)


def split_counts(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Objects per split for a class of n: at least one in every split, the rest to train."""
    rest = [max(1, round(n * f)) for f in fractions[1:]]
    first = n - sum(rest)
    if first < 1:
        raise DatasetError(
            f"generator config: {n} objects per class cannot fill every split "
            f"with fractions {list(fractions)}"
        )
    return [first, *rest]


def _seed_sequence(
    config: GeneratorConfig, cls: str, branch: int, index: int
) -> np.random.SeedSequence:
    return np.random.SeedSequence(
        [config.seed, zlib.crc32(cls.encode())], spawn_key=(branch, index)
    )


def render_object(config: GeneratorConfig, cls: str, index: int) -> np.ndarray:
    """The uint8 (V, S, S) views of object `index` of class `cls`."""
    rng = np.random.default_rng(_seed_sequence(config, cls, _OBJECT, index))
    mesh = build_object(cls, rng)
    yaw = rng.uniform(-config.yaw_jitter_deg, config.yaw_jitter_deg)
    verts = normalize_mesh(mesh.rotated("z", yaw).vertices)
    scale = rng.uniform(1.0 - config.scale_jitter, 1.0)
    offset = rng.uniform(-config.offset_jitter, config.offset_jitter, 3)
    scale = min(scale, 1.0 - float(np.linalg.norm(offset)))  # stay inside the frame
    verts = verts * scale + offset
    lj, bj = config.light_jitter_deg, config.brightness_jitter
    light = {
        "azimuth": DEFAULT_LIGHT["azimuth"] + rng.uniform(-lj, lj),
        "elevation": DEFAULT_LIGHT["elevation"] + rng.uniform(-lj, lj) / 2,
        "ambient": DEFAULT_LIGHT["ambient"] * (1 + rng.uniform(-bj, bj)),
        "diffuse": DEFAULT_LIGHT["diffuse"] * (1 + rng.uniform(-bj, bj)),
    }
    cameras = camera_ring(config.azimuths, config.elevations)
    if config.camera_jitter_deg > 0:  # cameras mounted slightly off their nominal pose
        cj = config.camera_jitter_deg
        cameras = [
            {"azimuth": c["azimuth"] + rng.uniform(-cj, cj),
             "elevation": float(np.clip(c["elevation"] + rng.uniform(-cj, cj), -90, 90))}
            for c in cameras
        ]  # fmt: skip
    views = render_views(
        verts,
        mesh.faces,
        cameras,
        config.image_size,
        light=light,
        albedo=mesh.albedo,
        supersample=config.supersample,
    )
    if config.noise_std > 0:  # on the object only: the background stays exactly 0
        noisy = views + rng.normal(0.0, config.noise_std, views.shape)
        views = np.where(views > 0, np.clip(np.rint(noisy), 1, 255), 0).astype(np.uint8)
    return views


def _render_task(config: GeneratorConfig, task: tuple[int, str, int]) -> np.ndarray:
    _, cls, i = task
    return render_object(config, cls, i)


def _assign_splits(config: GeneratorConfig) -> np.ndarray:
    n = config.objects_per_class
    counts = split_counts(n, config.split_fractions)
    codes = np.repeat(np.arange(len(SPLITS), dtype=np.uint8), counts)
    out = []
    for cls in config.classes:
        rng = np.random.default_rng(_seed_sequence(config, cls, _SPLIT, 0))
        out.append(rng.permutation(codes))
    return np.concatenate(out)


def generate(
    config: GeneratorConfig, *, workers: int | None = None, progress: bool = True
) -> Dataset:
    """Build and render every object; the result depends on `config` only, not on `workers`.

    Workers are spawned processes, so a script that calls this with workers > 1 needs the
    usual `if __name__ == "__main__":` guard.
    """
    n_per, size = config.objects_per_class, config.image_size
    tasks = [(c * n_per + i, cls, i) for c, cls in enumerate(config.classes) for i in range(n_per)]
    images = np.zeros((len(tasks), config.n_views, size, size, 1), dtype=np.uint8)
    # Tiny sets are faster in-process; an explicit count is honoured.
    workers = resolve_workers(workers, len(tasks), min_parallel=16, cap=8, error=DatasetError)
    chunk = max(4, min(64, math.ceil(len(tasks) / (workers * 8))))
    rendered = map_ordered(functools.partial(_render_task, config), tasks, workers=workers,
                           progress=progress, desc="rendering objects", chunksize=chunk)
    for (row, _, _), views in zip(tasks, rendered, strict=True):
        images[row, ..., 0] = views
    labels = np.repeat(np.arange(len(config.classes), dtype=np.int32), n_per)
    return Dataset(
        images=images,
        labels=labels,
        class_names=list(config.classes),
        split=_assign_splits(config),
        params=config.to_dict() | {"generator_version": GENERATOR_VERSION},
        cameras=camera_ring(config.azimuths, config.elevations),
        object_names=[f"{cls}_{i:04d}" for _, cls, i in tasks],
    )


# -- command line -------------------------------------------------------------------


def add_cli_options(p: argparse.ArgumentParser) -> None:
    """Options of `slimedge data generate` (the command adds --out and --json)."""
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default="default",
        help="starting point: default (demo set), quick (small), tiny (tests)",
    )
    p.add_argument("--seed", type=int, default=None, help="dataset seed (default 0)")
    p.add_argument("--objects-per-class", type=int, default=None, help="objects of each class")
    p.add_argument("--image-size", type=int, default=None, help="view size in pixels")
    p.add_argument(
        "--classes", default=None, help=f"comma-separated subset of: {','.join(CLASS_NAMES)}"
    )
    p.add_argument("--azimuths", type=int, default=None, help="views per elevation ring")
    p.add_argument("--elevations", default=None, help="comma-separated degrees, e.g. 30,60")
    p.add_argument(
        "--yaw-jitter",
        type=float,
        default=None,
        help="random object yaw, +- degrees around front-facing",
    )
    p.add_argument("--noise-std", type=float, default=None, help="pixel noise, gray levels")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="rendering processes (default: CPU count, at most 8; one for a small set); the "
        "data do not depend on it",
    )


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise DatasetError(f"{name}: expected comma-separated numbers, got {text!r}") from exc


def config_from_args(args: argparse.Namespace) -> GeneratorConfig:
    overrides: dict[str, Any] = {}
    for attr, key in (
        ("seed", "seed"),
        ("objects_per_class", "objects_per_class"),
        ("image_size", "image_size"),
        ("azimuths", "azimuths"),
        ("yaw_jitter", "yaw_jitter_deg"),
        ("noise_std", "noise_std"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "classes", None):
        overrides["classes"] = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    if getattr(args, "elevations", None):
        overrides["elevations"] = _floats(args.elevations, "elevations")
    return GeneratorConfig.preset(getattr(args, "preset", "default"), **overrides)


__all__ = [
    "CLASS_NAMES", "GENERATOR_VERSION", "GeneratorConfig", "add_cli_options", "config_from_args",
    "generate", "render_object", "split_counts",
]  # fmt: skip
