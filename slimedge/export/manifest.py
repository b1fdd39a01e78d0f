"""The deployment manifest: what each device runs, with the SHA-256 of every file, signed.

A deployment directory holds `manifest.json`, `manifest.sig` (Ed25519 over the exact bytes of
manifest.json), optionally `public_key.pem` (integrity only, see `verify`), and the artifacts
the manifest lists by path relative to the directory: per-device `.tflite` files, MCU
firmware bundles, the aggregator's head and contingency table.

```json
{
  "format": "slimedge-deployment", "format_version": 1,
  "deployment_id": "mixed12-2025...", "created": "2025-01-01T00:00:00Z",
  "signing_key": "ed25519:0123456789abcdef",
  "provenance": {"ladder_sha256": "...", "dataset_sha256": "...", "plan_sha256": null,
                 "slimedge_version": "0.1.0"},
  "aggregator": {"board": "jetson_orin_nano", "host": null, "pooling": "max",
                 "head": [{"path": "aggregator/head.keras", "sha256": "...", "bytes": 123}],
                 "contingency_table": {"path": "aggregator/contingency.json", ...}},
  "devices": [
    {"device": "cam00", "board": "esp32s3", "views": [0], "level": 0.5, "level_index": 3,
     "format": "int8", "runtime": "tflite-micro", "artifact": "devices/cam00.tflite",
     "sha256": "...", "bytes": 3264, "predicted_latency_ms": 41.2,
     "memory_budget_bytes": 327680, "memory_margin_bytes": 200000,
     "tflm_arena_bytes": 127680,
     "firmware": [{"path": "firmware/cam00/cam00_model.cc", "sha256": "...", "bytes": 20961}],
     "checks": {}}
  ]
}
```

`memory_margin_bytes` = budget - need (negative: does not fit). MCU devices (runtime
`tflite-micro`) must state `tflm_arena_bytes` and `memory_budget_bytes` (the arena limit the
verifier runs TFLite Micro with). `checks` is a free-form JSON object for export-time results
(agreement with Keras, Edge TPU readiness). Unknown keys are errors, so a typo never passes
silently. Every field error names the field, e.g. `manifest.json: devices[1].sha256: ...`.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from slimedge.artifacts import sha256_file
from slimedge.export import ExportError
from slimedge.export.signing import PUBLIC_KEY_NAME  # the key file a deployment may carry

FORMAT = "slimedge-deployment"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
RESERVED_NAMES = (MANIFEST_NAME, SIGNATURE_NAME, PUBLIC_KEY_NAME)
MCU_RUNTIME = "tflite-micro"
# The C++ core's pooling modes (cpp/src/pool.cpp parse_pool_mode), which the aggregator runs.
POOLING_MODES = ("max", "mean", "weighted")

_SHA = re.compile(r"^[0-9a-f]{64}$")
_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


class ManifestError(ExportError):
    """A manifest that does not follow the format; names the field."""


def utc_now() -> str:
    """The current time in the manifest's `created` form, e.g. 2025-01-01T12:00:00Z."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class FileEntry:
    """A file of the deployment: `path` relative to the deployment directory (POSIX form).
    `sha256`/`bytes` are None until `write_deployment_manifest` measures the file."""

    path: str
    sha256: str | None = None
    bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class Provenance:
    ladder_sha256: str
    dataset_sha256: str | None = None
    plan_sha256: str | None = None
    slimedge_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ladder_sha256": self.ladder_sha256,
            "dataset_sha256": self.dataset_sha256,
            "plan_sha256": self.plan_sha256,
            "slimedge_version": self.slimedge_version,
        }


@dataclass(frozen=True)
class AggregatorEntry:
    """The aggregator node: a catalog `board` or a named `host` (one of the two)."""

    pooling: str
    head: tuple[FileEntry, ...]
    board: str | None = None
    host: str | None = None
    contingency_table: FileEntry | None = None

    def files(self) -> list[tuple[str, FileEntry]]:
        """(field name, entry) of every file the aggregator needs."""
        out = [(f"aggregator.head[{i}]", f) for i, f in enumerate(self.head)]
        if self.contingency_table is not None:
            out.append(("aggregator.contingency_table", self.contingency_table))
        return out

    def to_dict(self) -> dict[str, Any]:
        ct = self.contingency_table
        return {
            "board": self.board,
            "host": self.host,
            "pooling": self.pooling,
            "head": [f.to_dict() for f in self.head],
            "contingency_table": ct.to_dict() if ct is not None else None,
        }


@dataclass(frozen=True)
class DeviceEntry:
    """One device's artifact and what the planner predicted for it."""

    device: str
    board: str
    views: tuple[int, ...]
    level: float
    level_index: int
    format: str
    runtime: str
    artifact: str
    sha256: str | None = None
    bytes: int | None = None
    predicted_latency_ms: float | None = None
    memory_budget_bytes: int | None = None
    memory_margin_bytes: int | None = None
    tflm_arena_bytes: int | None = None
    firmware: tuple[FileEntry, ...] = ()
    checks: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_mcu(self) -> bool:
        return self.runtime == MCU_RUNTIME

    @property
    def artifact_entry(self) -> FileEntry:
        return FileEntry(self.artifact, self.sha256, self.bytes)

    def files(self, prefix: str = "") -> list[tuple[str, FileEntry]]:
        """(field name, entry) of the model artifact and every firmware file."""
        out = [(f"{prefix}artifact", self.artifact_entry)]
        out += [(f"{prefix}firmware[{i}]", f) for i, f in enumerate(self.firmware)]
        return out

    def to_dict(self) -> dict[str, Any]:
        # Numbers may arrive as NumPy scalars from the planner; JSON wants Python ones.
        return {
            "device": self.device,
            "board": self.board,
            "views": [_num(v, int) for v in self.views],
            "level": _num(self.level, float),
            "level_index": _num(self.level_index, int),
            "format": self.format,
            "runtime": self.runtime,
            "artifact": self.artifact,
            "sha256": self.sha256,
            "bytes": _num(self.bytes, int),
            "predicted_latency_ms": _num(self.predicted_latency_ms, float),
            "memory_budget_bytes": _num(self.memory_budget_bytes, int),
            "memory_margin_bytes": _num(self.memory_margin_bytes, int),
            "tflm_arena_bytes": _num(self.tflm_arena_bytes, int),
            "firmware": [f.to_dict() for f in self.firmware],
            "checks": dict(self.checks),
        }


def _num(value: Any, kind: type) -> Any:
    """A NumPy scalar as the plain Python number it holds; anything else unchanged (the
    validator then rejects what is not a number)."""
    if value is None or isinstance(value, bool | str):
        return value
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a base dependency
        return value
    if isinstance(value, np.integer | np.floating):
        return kind(value)
    return value


@dataclass(frozen=True)
class DeploymentManifest:
    deployment_id: str
    created: str  # ISO 8601 UTC, e.g. 2025-01-01T00:00:00Z
    provenance: Provenance
    aggregator: AggregatorEntry
    devices: tuple[DeviceEntry, ...]
    signing_key: str | None = None  # fingerprint, set when signed
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def device(self, device_id: str) -> DeviceEntry:
        for d in self.devices:
            if d.device == device_id:
                return d
        known = ", ".join(d.device for d in self.devices)
        raise ManifestError(f"device {device_id!r}: not in deployment {self.deployment_id!r} "
                            f"(devices: {known})")

    @property
    def predicted_latency_ms(self) -> float:
        """The plan's system latency: the slowest device's predicted inference + link time
        (0 when no device states one); the aggregator's per-frame deadline starts from it."""
        latencies = [d.predicted_latency_ms for d in self.devices
                     if d.predicted_latency_ms is not None]
        return float(max(latencies)) if latencies else 0.0

    def files(self) -> list[tuple[str, FileEntry]]:
        """(field name, entry) of every file the deployment lists."""
        out = []
        for i, d in enumerate(self.devices):
            out += d.files(f"devices[{i}].")
        return out + self.aggregator.files()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "format_version": self.format_version,
            "deployment_id": self.deployment_id,
            "created": self.created,
            "signing_key": self.signing_key,
            "provenance": self.provenance.to_dict(),
            "aggregator": self.aggregator.to_dict(),
            "devices": [d.to_dict() for d in self.devices],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any], *, source: str = MANIFEST_NAME,
                  complete: bool = True) -> DeploymentManifest:
        """Parse and validate. `complete=True` (a written manifest) requires every sha256,
        byte count and the signing key; False accepts a draft that the writer will fill."""
        if isinstance(text, Mapping):
            raw = text
        else:
            try:
                raw = json.loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ManifestError(f"{source}: not valid JSON: {exc}") from None
        return _Reader(source, complete).manifest(raw)


# --------------------------------------------------------------------------- validation


class _Reader:
    def __init__(self, source: str, complete: bool) -> None:
        self.source = source
        self.complete = complete

    def fail(self, where: str, msg: str) -> ManifestError:
        return ManifestError(f"{self.source}: {where}: {msg}")

    def obj(self, raw: Any, where: str, required: tuple[str, ...],
            optional: tuple[str, ...] = ()) -> Mapping[str, Any]:
        if not isinstance(raw, Mapping):
            raise self.fail(where or "top level", f"expected a JSON object, got {_kind(raw)}")
        unknown = [k for k in raw if k not in required + optional]
        if unknown:
            raise self.fail(_join(where, unknown[0]),
                            f"unknown field (known: {', '.join(required + optional)})")
        for k in required:
            if k not in raw:
                raise self.fail(_join(where, k), "missing (required)")
        return raw

    def text(self, raw: Any, where: str, *, nullable: bool = False,
             pattern: re.Pattern[str] | None = None, choices: tuple[str, ...] = ()) -> Any:
        if raw is None and nullable:
            return None
        if not isinstance(raw, str) or not raw:
            raise self.fail(where, f"expected a non-empty string, got {raw!r}")
        if pattern is not None and not pattern.match(raw):
            raise self.fail(where, f"{raw!r} is not of the form {pattern.pattern}")
        if choices and raw not in choices:
            raise self.fail(where, f"{raw!r} is not one of {', '.join(choices)}")
        return raw

    def sha(self, raw: Any, where: str) -> str | None:
        if raw is None and not self.complete:
            return None
        if not isinstance(raw, str) or not _SHA.match(raw):
            raise self.fail(where, f"expected 64 lower-case hex digits (SHA-256), got {raw!r}")
        return raw

    def integer(self, raw: Any, where: str, *, minimum: int | None = None,
                nullable: bool = False) -> Any:
        if raw is None and nullable:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self.fail(where, f"expected an integer, got {raw!r}")
        if minimum is not None and raw < minimum:
            raise self.fail(where, f"must be >= {minimum}, got {raw}")
        return raw

    def number(self, raw: Any, where: str, *, nullable: bool = False) -> Any:
        if raw is None and nullable:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise self.fail(where, f"expected a number, got {raw!r}")
        return float(raw)

    def path(self, raw: Any, where: str) -> str:
        text = self.text(raw, where)
        problem = unsafe_path_reason(text)
        if problem:
            raise self.fail(where, f"{text!r} {problem}")
        return text

    def file(self, raw: Any, where: str) -> FileEntry:
        body = self.obj(raw, where, ("path", "sha256", "bytes"))
        size = body["bytes"]
        if size is not None or self.complete:
            size = self.integer(size, f"{where}.bytes", minimum=0)
        return FileEntry(self.path(body["path"], f"{where}.path"),
                         self.sha(body["sha256"], f"{where}.sha256"), size)

    def manifest(self, raw: Any) -> DeploymentManifest:
        body = self.obj(raw, "", ("format", "format_version", "deployment_id", "created",
                                  "provenance", "aggregator", "devices"), ("signing_key",))
        if body["format"] != FORMAT:
            raise self.fail("format", f"expected {FORMAT!r}, got {body['format']!r}")
        version = self.integer(body["format_version"], "format_version")
        if version != FORMAT_VERSION:
            raise self.fail("format_version", f"version {version} is not supported "
                            f"(this slimedge reads version {FORMAT_VERSION})")
        key = body.get("signing_key")
        key = self.text(key, "signing_key", nullable=not self.complete)
        devices_raw = body["devices"]
        if not isinstance(devices_raw, list) or not devices_raw:
            raise self.fail("devices", f"expected a non-empty list, got {_kind(devices_raw)}")
        devices = tuple(self.device(d, f"devices[{i}]") for i, d in enumerate(devices_raw))
        seen: dict[str, int] = {}
        for i, d in enumerate(devices):
            if d.device in seen:
                raise self.fail(f"devices[{i}].device",
                                f"{d.device!r} also at devices[{seen[d.device]}]")
            seen[d.device] = i
        return DeploymentManifest(
            deployment_id=self.text(body["deployment_id"], "deployment_id", pattern=_ID),
            created=self.text(body["created"], "created", pattern=_UTC),
            provenance=self.provenance(body["provenance"]),
            aggregator=self.aggregator(body["aggregator"]),
            devices=devices,
            signing_key=key,
        )

    def provenance(self, raw: Any) -> Provenance:
        body = self.obj(raw, "provenance", ("ladder_sha256",),
                        ("dataset_sha256", "plan_sha256", "slimedge_version"))
        complete, self.complete = self.complete, True  # provenance hashes are never drafts
        try:
            ladder = self.sha(body["ladder_sha256"], "provenance.ladder_sha256")
            dataset = body.get("dataset_sha256")
            plan = body.get("plan_sha256")
            dataset = self.sha(dataset, "provenance.dataset_sha256") if dataset else None
            plan = self.sha(plan, "provenance.plan_sha256") if plan else None
        finally:
            self.complete = complete
        version = self.text(body.get("slimedge_version"), "provenance.slimedge_version",
                            nullable=True)
        return Provenance(ladder, dataset, plan, version)

    def aggregator(self, raw: Any) -> AggregatorEntry:
        body = self.obj(raw, "aggregator", ("pooling", "head"),
                        ("board", "host", "contingency_table"))
        board = self.text(body.get("board"), "aggregator.board", nullable=True)
        host = self.text(body.get("host"), "aggregator.host", nullable=True)
        if (board is None) == (host is None):
            raise self.fail("aggregator", "state exactly one of 'board' and 'host'")
        heads = body["head"]
        if not isinstance(heads, list) or not heads:
            raise self.fail("aggregator.head", f"expected a non-empty list of files, "
                            f"got {_kind(heads)}")
        ct = body.get("contingency_table")
        return AggregatorEntry(
            pooling=self.text(body["pooling"], "aggregator.pooling", choices=POOLING_MODES),
            head=tuple(self.file(h, f"aggregator.head[{i}]") for i, h in enumerate(heads)),
            board=board,
            host=host,
            contingency_table=self.file(ct, "aggregator.contingency_table") if ct else None,
        )

    def device(self, raw: Any, where: str) -> DeviceEntry:
        from slimedge.devices.catalog import FORMATS, RUNTIMES

        body = self.obj(raw, where, (
            "device", "board", "views", "level", "level_index", "format", "runtime",
            "artifact", "sha256", "bytes",
        ), (
            "predicted_latency_ms", "memory_budget_bytes", "memory_margin_bytes",
            "tflm_arena_bytes", "firmware", "checks",
        ))
        views = body["views"]
        if not isinstance(views, list) or not views:
            raise self.fail(f"{where}.views", f"expected a non-empty list of view indices, "
                            f"got {views!r}")
        for j, v in enumerate(views):
            self.integer(v, f"{where}.views[{j}]", minimum=0)
        if len(set(views)) != len(views):
            raise self.fail(f"{where}.views", f"view listed twice in {views}")
        level = self.number(body["level"], f"{where}.level")
        if not 0.0 <= level < 1.0:
            raise self.fail(f"{where}.level", f"a pruning level is a fraction in [0, 1), "
                            f"got {level}")
        runtimes = tuple(r for rs in RUNTIMES.values() for r in rs)
        runtime = self.text(body["runtime"], f"{where}.runtime", choices=runtimes)
        artifact = self.path(body["artifact"], f"{where}.artifact")
        sha = self.sha(body["sha256"], f"{where}.sha256")
        size = body["bytes"]
        if size is not None or self.complete:
            size = self.integer(size, f"{where}.bytes", minimum=0)
        firmware_raw = body.get("firmware", [])
        if not isinstance(firmware_raw, list):
            raise self.fail(f"{where}.firmware", f"expected a list of files, "
                            f"got {_kind(firmware_raw)}")
        checks = body.get("checks", {})
        if not isinstance(checks, Mapping):
            raise self.fail(f"{where}.checks", f"expected a JSON object, got {_kind(checks)}")
        entry = DeviceEntry(
            device=self.text(body["device"], f"{where}.device", pattern=_ID),
            board=self.text(body["board"], f"{where}.board"),
            views=tuple(views),
            level=level,
            level_index=self.integer(body["level_index"], f"{where}.level_index", minimum=0),
            format=self.text(body["format"], f"{where}.format", choices=FORMATS),
            runtime=runtime,
            artifact=artifact,
            sha256=sha,
            bytes=size,
            predicted_latency_ms=self.number(body.get("predicted_latency_ms"),
                                             f"{where}.predicted_latency_ms", nullable=True),
            memory_budget_bytes=self.integer(body.get("memory_budget_bytes"),
                                             f"{where}.memory_budget_bytes", minimum=1,
                                             nullable=True),
            memory_margin_bytes=self.integer(body.get("memory_margin_bytes"),
                                             f"{where}.memory_margin_bytes", nullable=True),
            tflm_arena_bytes=self.integer(body.get("tflm_arena_bytes"),
                                          f"{where}.tflm_arena_bytes", minimum=1, nullable=True),
            firmware=tuple(self.file(f, f"{where}.firmware[{j}]")
                           for j, f in enumerate(firmware_raw)),
            checks=dict(checks),
        )
        if entry.is_mcu:
            for name in ("tflm_arena_bytes", "memory_budget_bytes"):
                if getattr(entry, name) is None:
                    raise self.fail(f"{where}.{name}", f"missing (required for runtime "
                                    f"{MCU_RUNTIME!r})")
            if entry.format != "int8":
                raise self.fail(f"{where}.format", f"runtime {MCU_RUNTIME!r} runs int8 only, "
                                f"got {entry.format!r}")
        return entry


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(raw: Any) -> str:
    return "null" if raw is None else type(raw).__name__


def unsafe_path_reason(path: str) -> str | None:
    """Why a manifest path could reach outside the deployment directory (None when safe).
    Paths are relative POSIX paths without '..', '.', empty parts or backslashes."""
    if "\\" in path or "\x00" in path:
        return "must use '/' separators and no NUL or backslash characters"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "is an absolute path: paths are relative to the deployment directory"
    parts = path.split("/")
    if any(p == ".." for p in parts):
        return "escapes the deployment directory ('..')"
    if any(p in ("", ".") for p in parts):
        return "has an empty or '.' part: write the plain relative path"
    if PurePosixPath(path).name in RESERVED_NAMES and len(parts) == 1:
        return "is a reserved file of the deployment directory"
    return None


def resolve_inside(deploy_dir: Path, rel: str) -> tuple[Path | None, str | None]:
    """(path, None) when `rel` names a regular file inside `deploy_dir` reached without any
    symbolic link; (None, why) otherwise."""
    problem = unsafe_path_reason(rel)
    if problem:
        return None, f"path {rel!r} {problem}"
    root = deploy_dir.resolve()
    current = root
    for part in rel.split("/"):
        current = current / part
        if current.is_symlink():
            target = os.readlink(current)
            return None, (f"{current.relative_to(root).as_posix()} is a symbolic link (to "
                          f"{target}): artifacts must be regular files inside the deployment")
    if not current.exists():
        return None, "missing: the file listed in the manifest does not exist"
    if not current.is_file():
        return None, "not a regular file"
    if root not in current.resolve().parents:
        return None, "resolves outside the deployment directory"
    return current, None


# --------------------------------------------------------------------------- writing


def measure_files(deploy_dir: str | os.PathLike[str],
                  manifest: DeploymentManifest) -> DeploymentManifest:
    """The manifest with every sha256/bytes computed from the files on disk. A hash or size the
    caller already gave must match the file (ExportError otherwise: the file changed after
    it was checked)."""
    root = Path(deploy_dir)
    cache: dict[str, FileEntry] = {}

    def measure(where: str, entry: FileEntry) -> FileEntry:
        path, why = resolve_inside(root, entry.path)
        if path is None:
            raise ExportError(f"{root / entry.path} ({where}): {why}")
        if entry.path not in cache:
            cache[entry.path] = FileEntry(entry.path, sha256_file(path), path.stat().st_size)
        done = cache[entry.path]
        for name, given, actual in (("sha256", entry.sha256, done.sha256),
                                    ("bytes", entry.bytes, done.bytes)):
            if given is not None and given != actual:
                raise ExportError(f"{path} ({where}): caller gave {name} {given} but the file "
                                  f"has {actual}: it changed after it was checked")
        return done

    devices = []
    for i, d in enumerate(manifest.devices):
        art = measure(f"devices[{i}].artifact", d.artifact_entry)
        fw = tuple(measure(f"devices[{i}].firmware[{j}]", f) for j, f in enumerate(d.firmware))
        devices.append(replace(d, sha256=art.sha256, bytes=art.bytes, firmware=fw))
    agg = manifest.aggregator
    ct = agg.contingency_table
    agg = replace(
        agg,
        head=tuple(measure(f"aggregator.head[{i}]", h) for i, h in enumerate(agg.head)),
        contingency_table=measure("aggregator.contingency_table", ct) if ct else None,
    )
    return replace(manifest, devices=tuple(devices), aggregator=agg)


def write_deployment_manifest(
    deploy_dir: str | os.PathLike[str],
    manifest: DeploymentManifest,
    private_key_path: str | os.PathLike[str],
    *,
    ship_public_key: bool = True,
) -> DeploymentManifest:
    """Hash every listed file on disk, sign, and write `manifest.json` + `manifest.sig` (and
    `public_key.pem` unless `ship_public_key=False`). Returns the manifest as written.

    Each file is replaced atomically and all are fully prepared before the first is replaced;
    a crash between the renames leaves a manifest and signature that do not match, which
    verification rejects (it fails closed, never accepts a half-written deployment).
    """
    from slimedge.export import signing

    root = Path(deploy_dir)
    if not root.is_dir():
        raise ExportError(f"{root}: no such deployment directory")
    key = signing.load_private_key(private_key_path)
    public = key.public_key()
    measured = measure_files(root, manifest)
    final = replace(measured, signing_key=signing.fingerprint(public))
    try:
        text = final.to_json()
    except (TypeError, ValueError) as exc:  # e.g. a NaN or an object in a device's checks
        raise ExportError(f"{root / MANIFEST_NAME}: the manifest is not plain JSON: {exc}") \
            from None
    # Round trip through the validator: what is signed is exactly what verifiers accept.
    final = DeploymentManifest.from_json(text, source=str(root / MANIFEST_NAME))
    data = text.encode()
    signature = signing.sign(key, data)
    outputs = [(MANIFEST_NAME, data), (SIGNATURE_NAME, signature)]
    if ship_public_key:
        outputs.insert(0, (PUBLIC_KEY_NAME, signing.public_pem(public)))
    _write_all(root, outputs)
    return final


def _write_all(root: Path, outputs: list[tuple[str, bytes]]) -> None:
    """Write every (name, bytes) to a temporary sibling, then rename them in order; on any
    failure before the renames, remove the temporaries and leave the old files untouched."""
    temps: list[tuple[Path, Path]] = []
    try:
        for name, data in outputs:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=root)
            temps.append((Path(tmp), root / name))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; manifest, signature and key are public
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, target in temps:
        os.replace(tmp, target)
