"""The registry of built-in object classes: class name -> builder of one random instance.

A builder takes a `numpy.random.Generator` and returns a `Mesh` with +z up and its front towards
-y (the azimuth-0 camera); `build_object` sets it on z = 0 and adds nothing random of its own, so
an object is fully determined by its generator's seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from slimedge.data import objects_furniture as furniture
from slimedge.data import objects_items as items
from slimedge.data.shapes import Mesh
from slimedge.errors import DatasetError

Builder = Callable[[np.random.Generator], Mesh]

BUILDERS: dict[str, Builder] = {
    "airplane": items.airplane,
    "bathtub": furniture.bathtub,
    "bed": furniture.bed,
    "bench": furniture.bench,
    "bookshelf": furniture.bookshelf,
    "bottle": items.bottle,
    "car": items.car,
    "chair": furniture.chair,
    "cup": items.cup,
    "desk": furniture.desk,
    "dresser": furniture.dresser,
    "flower_pot": items.flower_pot,
    "guitar": items.guitar,
    "lamp": items.lamp,
    "laptop": items.laptop,
    "monitor": items.monitor,
    "night_stand": furniture.night_stand,
    "piano": furniture.piano,
    "sofa": furniture.sofa,
    "stool": furniture.stool,
    "table": furniture.table,
    "toilet": furniture.toilet,
    "tv_stand": furniture.tv_stand,
    "vase": items.vase,
    "wardrobe": furniture.wardrobe,
}
CLASS_NAMES: tuple[str, ...] = tuple(sorted(BUILDERS))


def check_classes(names: tuple[str, ...] | list[str]) -> None:
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise DatasetError(
            f"classes: unknown class(es) {unknown}; built-in classes are {list(CLASS_NAMES)}"
        )


def build_object(name: str, rng: np.random.Generator) -> Mesh:
    """One random instance of class `name`, resting on z = 0 (airplanes included)."""
    check_classes([name])
    mesh = BUILDERS[name](rng)
    return mesh.moved((0.0, 0.0, -float(mesh.vertices[:, 2].min())))
