"""Objects x views contact sheet of a dataset, as one PNG (so a reader sees the data)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

from slimedge.artifacts import atomic_file
from slimedge.data.container import Dataset
from slimedge.errors import DatasetError

LABEL_WIDTH = 96
GAP = 2


def contact_sheet(
    ds: Dataset, *, n_objects: int = 8, split: str | None = None, seed: int = 0, scale: int = 2
) -> tuple[Image.Image, int]:
    """Pick `n_objects` objects (distinct classes first) and lay out all their views in a row."""
    if n_objects < 1:
        raise DatasetError(f"objects: need at least 1 row, got {n_objects}")
    pool = ds.indices(split) if split else np.arange(ds.n_objects)
    if pool.size == 0:
        raise DatasetError(f"split: '{split}' holds no objects")
    rng = np.random.default_rng(seed)
    pool = rng.permutation(pool)
    picked: list[int] = []
    seen: set[int] = set()
    for i in pool:  # one object per class first, in class order, then any others
        if int(ds.labels[i]) not in seen:
            seen.add(int(ds.labels[i]))
            picked.append(int(i))
    picked.sort(key=lambda i: int(ds.labels[i]))
    picked = picked[:n_objects]
    for i in pool:
        if len(picked) >= n_objects:
            break
        if int(i) not in picked:
            picked.append(int(i))

    h, w = ds.image_size
    th, tw = h * scale, w * scale
    V = ds.n_views
    sheet = Image.new(
        "L", (LABEL_WIDTH + V * (tw + GAP), len(picked) * (th + GAP) + 14), color=255
    )
    draw = ImageDraw.Draw(sheet)
    for v in range(V):
        cam = ds.cameras[v] if ds.cameras else None
        text = f"v{v}" if cam is None else f"{cam.get('azimuth', 0):.0f}°"
        draw.text((LABEL_WIDTH + v * (tw + GAP) + 2, 1), text, fill=0)
    for r, i in enumerate(picked):
        y = 14 + r * (th + GAP)
        draw.text((2, y + th // 2 - 5), ds.class_names[int(ds.labels[i])][:15], fill=0)
        for v in range(V):
            tile = Image.fromarray(np.asarray(ds.images[i, v, :, :, 0]), mode="L")
            tile = tile.resize((tw, th), Image.NEAREST)
            sheet.paste(tile, (LABEL_WIDTH + v * (tw + GAP), y))
    return sheet, len(picked)


def write_contact_sheet(
    ds: Dataset, out: str | os.PathLike, **kwargs: object
) -> int:
    """Write the sheet as PNG (atomically); returns the number of object rows."""
    sheet, rows = contact_sheet(ds, **kwargs)  # type: ignore[arg-type]
    with atomic_file(out, "wb") as fh:
        sheet.save(fh, format="PNG")
    return rows
