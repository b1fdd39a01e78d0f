"""Writing artifacts so that a failure never leaves a partial file or destroys the last good one.

Every stage writes into a temporary sibling of its target and swaps it in only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces `target` whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of `target` for writing; rename it over `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(target: str | os.PathLike, obj: Any) -> None:
    with atomic_file(target) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False)
        fh.write("\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_versioned_json(path: str | os.PathLike, *, fmt: str, version: int,
                        error: type[Exception], remedy: str = "") -> dict[str, Any]:
    """The object in JSON file ``path``, checked to be a ``fmt`` document of ``version``.

    Anything else raises ``error`` naming the file and the field; ``remedy`` (e.g. "rebuild
    the ladder") is added to a version mismatch.
    """
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise error(f"{path}: field 'format' is not '{fmt}'")
    if obj.get("format_version") != version:
        hint = f" ({remedy})" if remedy else ""
        raise error(f"{path}: field 'format_version' is {obj.get('format_version')!r}; this "
                    f"slimedge reads version {version}{hint}")
    return obj
