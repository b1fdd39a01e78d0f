"""Keras model files whose bytes identify the model.

Keras stamps a `.keras` file (a zip) with the time of saving, in the zip entries and in
metadata.json, and numbers the objects layers share (a dtype policy) by their memory address,
so two saves of the same weights differ byte for byte. `save_reproducibly` writes the file
without either: the same model gives the same bytes, and a file hash can stand for the model.
Keras reads neither the date nor the numbers' values (only which entries share one), so the
file loads as before.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


def save_reproducibly(model: Any, path: str | Path) -> None:
    """`model.save(path)` (a `.keras` file), then rewritten without the save date and the
    shared objects' memory addresses."""
    path = Path(path)
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        entries = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in entries:
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta).encode()
            elif info.filename == "config.json":
                data = json.dumps(_renumber_shared_objects(json.loads(data), {})).encode()
            fixed = zipfile.ZipInfo(info.filename, date_time=_EPOCH)
            fixed.compress_type, fixed.external_attr = info.compress_type, info.external_attr
            zf.writestr(fixed, data)


def _renumber_shared_objects(obj: Any, ids: dict[int, int]) -> Any:
    """Keras' `shared_object_id`s (memory addresses) replaced by 1, 2, ... in order of first
    appearance; entries that shared an id still share one."""
    if isinstance(obj, dict):
        return {k: (ids.setdefault(v, len(ids) + 1) if k == "shared_object_id"
                    and isinstance(v, int) else _renumber_shared_objects(v, ids))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_renumber_shared_objects(v, ids) for v in obj]
    return obj
