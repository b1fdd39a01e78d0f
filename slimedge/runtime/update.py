"""One device's signed update: the manifest, its Ed25519 signature, and the checks a device runs
before it lets an update near its running model. Device side: `cryptography` only (through
`slimedge.export.signing`, which imports no TensorFlow), no host module.

An update is a payload (the device's model artifact; for a TFLite Micro board its firmware
bundle files too, concatenated) plus `update.json`, signed over its exact bytes by the host key::

    {"format": "slimedge-update", "format_version": 1,
     "device": "cam00", "board": "esp32s3", "runtime": "tflite-micro",
     "deployment_id": "mixed12-...", "deployment_created": "2025-01-01T00:00:00Z",
     "sequence": 7, "rollback": false, "commit_at_frame": null,
     "created": "2025-01-02T00:00:00Z", "expires": "2025-01-09T00:00:00Z",
     "signing_key": "ed25519:0123456789abcdef",
     "level": 0.5, "level_index": 1, "views": [0], "model_format": "int8",
     "sha256": "<payload>", "bytes": 12345,
     "files": [{"path": "model.tflite", "offset": 0, "bytes": 9000, "sha256": "..."},
               {"path": "firmware/cam00_model.cc", "offset": 9000, ...}],
     "arena_budget_bytes": 327680, "tflm_arena_bytes": 120000,
     "input": {"shape": [1, 16, 16, 1], "dtype": "int8"},
     "output": {"shape": [1, 8], "dtype": "int8", "scale": 0.02, "zero_point": -4}}

`files[0]` is the model. The sequence is one counter for the whole fleet and only grows: a
device refuses any update whose sequence is not above the one it runs (a replay), and one that
would take it back to an older deployment (a downgrade) unless it is a signed rollback order
(`"rollback": true`, still with a new sequence, so the order itself cannot be replayed).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slimedge.errors import SlimEdgeError

FORMAT = "slimedge-update"
FORMAT_VERSION = 1
MANIFEST_NAME = "update.json"
SIGNATURE_NAME = "update.sig"
MCU_RUNTIME = "tflite-micro"  # the deployment manifest's name for TFLite Micro boards

# Why a device refuses an update: one code each, sent back in the acknowledgment.
MALFORMED = "malformed"
BAD_SIGNATURE = "bad-signature"
WRONG_KEY = "wrong-key"
WRONG_DEVICE = "wrong-device"
WRONG_BOARD = "wrong-board"
REPLAY = "replay"
DOWNGRADE = "downgrade"
EXPIRED = "expired"
TRUNCATED = "truncated"
TAMPERED = "tampered"
SELF_TEST = "self-test"
DEVICE_ERROR = "device-error"  # the device's own storage failed; it keeps serving
REASONS = (MALFORMED, BAD_SIGNATURE, WRONG_KEY, WRONG_DEVICE, WRONG_BOARD, REPLAY, DOWNGRADE,
           EXPIRED, TRUNCATED, TAMPERED, SELF_TEST, DEVICE_ERROR)

_SHA = re.compile(r"^[0-9a-f]{64}$")
_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_DTYPES = ("int8", "uint8", "float32")


class UpdateError(SlimEdgeError):
    """An update, a slot folder or a state file that cannot be used (names the file/field)."""


class UpdateRefusedError(UpdateError):
    """A device refuses an update; `reason` is one of REASONS, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message


def utc(ts: float) -> str:
    """A Unix time in the manifest's form, e.g. 2025-01-01T12:00:00Z (whole seconds)."""
    t = datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(text: str) -> float:
    return datetime.datetime.strptime(text.split(".")[0].rstrip("Z"), "%Y-%m-%dT%H:%M:%S") \
        .replace(tzinfo=datetime.timezone.utc).timestamp()


@dataclass(frozen=True)
class PayloadFile:
    """One file of the payload: bytes [offset, offset + bytes) of it."""

    path: str
    offset: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "offset": self.offset, "bytes": self.bytes,
                "sha256": self.sha256}


@dataclass(frozen=True)
class TensorSpec:
    """What the self-test expects of a model's input or output tensor."""

    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None  # None for float tensors
    zero_point: int | None = None

    def to_dict(self, *, quantization: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype}
        if quantization:
            out.update(scale=self.scale, zero_point=self.zero_point)
        return out


@dataclass(frozen=True)
class UpdateManifest:
    device: str
    board: str
    runtime: str
    deployment_id: str
    deployment_created: str
    sequence: int
    created: str
    expires: str
    signing_key: str
    level: float
    level_index: int
    views: tuple[int, ...]
    model_format: str
    sha256: str
    bytes: int
    files: tuple[PayloadFile, ...]
    input: TensorSpec
    output: TensorSpec
    arena_budget_bytes: int | None = None
    tflm_arena_bytes: int | None = None
    rollback: bool = False
    # Serve it from this frame id on (a fleet-wide switch: every device prepares the update,
    # then all swap at frame F); None: at the first frame after it is ready.
    commit_at_frame: int | None = None

    @property
    def model(self) -> PayloadFile:
        return self.files[0]

    @property
    def is_mcu(self) -> bool:
        return self.runtime == MCU_RUNTIME

    @property
    def model_sha256(self) -> str:
        """The model artifact's sha256: the deployment manifest's `sha256` of this device, and
        the model hash its feature messages and heartbeats carry."""
        return self.model.sha256

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "device": self.device, "board": self.board, "runtime": self.runtime,
            "deployment_id": self.deployment_id, "deployment_created": self.deployment_created,
            "sequence": self.sequence, "rollback": self.rollback,
            "commit_at_frame": self.commit_at_frame,
            "created": self.created, "expires": self.expires, "signing_key": self.signing_key,
            "level": self.level, "level_index": self.level_index, "views": list(self.views),
            "model_format": self.model_format, "sha256": self.sha256, "bytes": self.bytes,
            "files": [f.to_dict() for f in self.files],
            "arena_budget_bytes": self.arena_budget_bytes,
            "tflm_arena_bytes": self.tflm_arena_bytes,
            "input": self.input.to_dict(quantization=False),
            "output": self.output.to_dict(quantization=True),
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = MANIFEST_NAME) -> UpdateManifest:
        """Parse and validate; UpdateRefusedError(MALFORMED) names the field at fault."""
        try:
            raw = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UpdateRefusedError(MALFORMED, f"{source}: not valid JSON: {exc}") from None
        return _Reader(source).manifest(raw)


class _Reader:
    """Strict field checks: unknown keys are errors, every error names its field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, msg: str) -> UpdateRefusedError:
        return UpdateRefusedError(MALFORMED, f"{self.source}: {where}: {msg}")

    def obj(self, raw: Any, where: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(raw, Mapping):
            raise self.fail(where, f"expected a JSON object, got {type(raw).__name__}")
        unknown = [k for k in raw if k not in keys]
        if unknown:
            raise self.fail(f"{where}.{unknown[0]}", "unknown field")
        missing = [k for k in keys if k not in raw]
        if missing:
            raise self.fail(f"{where}.{missing[0]}", "missing (required)")
        return raw

    def text(self, raw: Any, where: str, pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(raw, str) or not raw:
            raise self.fail(where, f"expected a non-empty string, got {raw!r}")
        if pattern is not None and not pattern.match(raw):
            raise self.fail(where, f"{raw!r} is not of the form {pattern.pattern}")
        return raw

    def integer(self, raw: Any, where: str, minimum: int = 0, nullable: bool = False) -> Any:
        if raw is None and nullable:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
            raise self.fail(where, f"expected an integer >= {minimum}, got {raw!r}")
        return raw

    def number(self, raw: Any, where: str, nullable: bool = False) -> Any:
        if raw is None and nullable:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw:
            raise self.fail(where, f"expected a number, got {raw!r}")
        return float(raw)

    def tensor(self, raw: Any, where: str, quantization: bool) -> TensorSpec:
        keys = ("shape", "dtype") + (("scale", "zero_point") if quantization else ())
        body = self.obj(raw, where, keys)
        shape = body["shape"]
        if not isinstance(shape, list) or not shape:
            raise self.fail(f"{where}.shape", f"expected a list of sizes, got {shape!r}")
        dims = tuple(self.integer(n, f"{where}.shape[{i}]", 1) for i, n in enumerate(shape))
        dtype = self.text(body["dtype"], f"{where}.dtype")
        if dtype not in _DTYPES:
            raise self.fail(f"{where}.dtype", f"{dtype!r} is not one of {', '.join(_DTYPES)}")
        if not quantization:
            return TensorSpec(dims, dtype)
        scale = self.number(body["scale"], f"{where}.scale", nullable=True)
        zp = self.integer(body["zero_point"], f"{where}.zero_point", -(1 << 31), nullable=True)
        if (dtype == "float32") != (scale is None) or (scale is None) != (zp is None):
            raise self.fail(where, "a quantized tensor states scale and zero_point, a float32 "
                            "tensor neither")
        if scale is not None and not scale > 0:
            raise self.fail(f"{where}.scale", f"must be > 0, got {scale}")
        return TensorSpec(dims, dtype, scale, zp)

    def files(self, raw: Any, size: int) -> tuple[PayloadFile, ...]:
        if not isinstance(raw, list) or not raw:
            raise self.fail("files", "expected a non-empty list (files[0] is the model)")
        out, offset, seen = [], 0, set()
        for i, item in enumerate(raw):
            body = self.obj(item, f"files[{i}]", ("path", "offset", "bytes", "sha256"))
            path = self.text(body["path"], f"files[{i}].path")
            parts = path.split("/")
            if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
                raise self.fail(f"files[{i}].path", f"{path!r} must be a plain relative path")
            if path in seen or path in (MANIFEST_NAME, SIGNATURE_NAME):
                raise self.fail(f"files[{i}].path", f"{path!r} is listed twice or reserved")
            seen.add(path)
            start = self.integer(body["offset"], f"files[{i}].offset")
            if start != offset:
                raise self.fail(f"files[{i}].offset", f"files are contiguous: expected "
                                f"{offset}, got {start}")
            n = self.integer(body["bytes"], f"files[{i}].bytes", 1)
            sha = self.text(body["sha256"], f"files[{i}].sha256", _SHA)
            out.append(PayloadFile(path, start, n, sha))
            offset += n
        if offset != size:
            raise self.fail("files", f"the files cover {offset} bytes, the payload has {size}")
        return tuple(out)

    def manifest(self, raw: Any) -> UpdateManifest:
        body = self.obj(raw, "update", (
            "format", "format_version", "device", "board", "runtime", "deployment_id",
            "deployment_created", "sequence", "rollback", "commit_at_frame", "created",
            "expires", "signing_key",
            "level", "level_index", "views", "model_format", "sha256", "bytes", "files",
            "arena_budget_bytes", "tflm_arena_bytes", "input", "output"))
        if body["format"] != FORMAT:
            raise self.fail("format", f"expected {FORMAT!r}, got {body['format']!r}")
        if body["format_version"] != FORMAT_VERSION:
            raise self.fail("format_version", f"version {body['format_version']!r} is not "
                            f"supported (this slimedge reads {FORMAT_VERSION})")
        if not isinstance(body["rollback"], bool):
            raise self.fail("rollback", f"expected true or false, got {body['rollback']!r}")
        views = body["views"]
        if not isinstance(views, list) or not views:
            raise self.fail("views", f"expected a non-empty list of view indices, got {views!r}")
        size = self.integer(body["bytes"], "bytes", 1)
        level = self.number(body["level"], "level")
        if not 0.0 <= level < 1.0:
            raise self.fail("level", f"a pruning level is a fraction in [0, 1), got {level}")
        m = UpdateManifest(
            device=self.text(body["device"], "device", _ID),
            board=self.text(body["board"], "board", _ID),
            runtime=self.text(body["runtime"], "runtime"),
            deployment_id=self.text(body["deployment_id"], "deployment_id", _ID),
            deployment_created=self.text(body["deployment_created"], "deployment_created", _UTC),
            sequence=self.integer(body["sequence"], "sequence", 1),
            rollback=body["rollback"],
            commit_at_frame=self.integer(body["commit_at_frame"], "commit_at_frame",
                                         nullable=True),
            created=self.text(body["created"], "created", _UTC),
            expires=self.text(body["expires"], "expires", _UTC),
            signing_key=self.text(body["signing_key"], "signing_key"),
            level=level,
            level_index=self.integer(body["level_index"], "level_index"),
            views=tuple(self.integer(v, f"views[{i}]") for i, v in enumerate(views)),
            model_format=self.text(body["model_format"], "model_format"),
            sha256=self.text(body["sha256"], "sha256", _SHA),
            bytes=size,
            files=self.files(body["files"], size),
            arena_budget_bytes=self.integer(body["arena_budget_bytes"], "arena_budget_bytes", 1,
                                            nullable=True),
            tflm_arena_bytes=self.integer(body["tflm_arena_bytes"], "tflm_arena_bytes", 1,
                                          nullable=True),
            input=self.tensor(body["input"], "input", quantization=False),
            output=self.tensor(body["output"], "output", quantization=True),
        )
        if parse_utc(m.expires) <= parse_utc(m.created):
            raise self.fail("expires", f"{m.expires} is not after created {m.created}")
        if m.is_mcu and m.arena_budget_bytes is None:
            raise self.fail("arena_budget_bytes", f"required for runtime {MCU_RUNTIME!r}")
        return m


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Running:
    """What a device runs now, as far as accepting an update is concerned."""

    sequence: int  # 0 for the deployment it was provisioned with
    deployment_id: str
    deployment_created: str
    model_sha256: str


@dataclass(frozen=True)
class Trust:
    """What a device was provisioned with: its own identity and the host's public key."""

    device: str
    board: str
    public_key: Any  # cryptography Ed25519PublicKey

    @property
    def fingerprint(self) -> str:
        from slimedge.export import signing

        return signing.fingerprint(self.public_key)


def load_trust(device: str, board: str, public_key_pem: str | Any) -> Trust:
    """A Trust from the provisioned public key file; UpdateError names the file otherwise."""
    from slimedge.export import ExportError, signing

    try:
        key = signing.load_public_key(public_key_pem)
    except ExportError as exc:
        raise UpdateError(f"provisioned key: {exc}") from None
    return Trust(device, board, key)


def check_offer(manifest_bytes: bytes, signature: bytes, trust: Trust, running: Running,
                now: float) -> UpdateManifest:
    """Every check that needs no payload, cheapest and most fundamental first: signature
    with the provisioned key (nothing unsigned is read further), then device, board, expiry,
    sequence (replay) and deployment age (downgrade). Raises UpdateRefusedError with the reason."""
    from slimedge.export import signing

    if not signing.verify_signature(trust.public_key, signature, manifest_bytes):
        named = _named_key(manifest_bytes)
        if named is not None and named != trust.fingerprint:
            raise UpdateRefusedError(WRONG_KEY, f"signed by {named}, this device trusts only "
                                     f"{trust.fingerprint} (its provisioned key)")
        raise UpdateRefusedError(BAD_SIGNATURE, f"the signature does not verify with the "
                                 f"provisioned key {trust.fingerprint}: the manifest or its "
                                 f"signature was changed after signing")
    m = UpdateManifest.from_bytes(manifest_bytes)
    if m.signing_key != trust.fingerprint:  # signed by our key but naming another: refuse
        raise UpdateRefusedError(WRONG_KEY, f"the manifest names signing key {m.signing_key}, this "
                                 f"device trusts {trust.fingerprint}")
    if m.device != trust.device:
        raise UpdateRefusedError(WRONG_DEVICE, f"update for device {m.device!r}, this is "
                                 f"{trust.device!r}")
    if m.board != trust.board:
        raise UpdateRefusedError(WRONG_BOARD, f"update for board {m.board!r}, device "
                                 f"{trust.device} is a {trust.board!r}")
    if now >= parse_utc(m.expires):
        raise UpdateRefusedError(EXPIRED, f"update sequence {m.sequence} expired at {m.expires} "
                                 f"(device clock {utc(now)})")
    if m.sequence <= running.sequence:
        raise UpdateRefusedError(REPLAY, f"sequence {m.sequence} is not above the running "
                                 f"sequence {running.sequence}: an old update sent again")
    older = parse_utc(m.deployment_created) < parse_utc(running.deployment_created)
    if older and not m.rollback:
        raise UpdateRefusedError(DOWNGRADE, f"deployment {m.deployment_id} (created "
                                 f"{m.deployment_created}) is older than the running "
                                 f"{running.deployment_id} (created {running.deployment_created}); "
                                 f"only a signed rollback order goes back")
    return m


def is_running(manifest_bytes: bytes, signature: bytes, trust: Trust,
               running: Running) -> bool:
    """True when this signed update is exactly the one running (a retained offer delivered
    again after a reconnect): acknowledged as applied, not refused as a replay."""
    from slimedge.export import signing

    if not signing.verify_signature(trust.public_key, signature, manifest_bytes):
        return False
    try:
        m = UpdateManifest.from_bytes(manifest_bytes)
    except UpdateRefusedError:
        return False
    return (m.sequence == running.sequence and m.device == trust.device
            and m.model_sha256 == running.model_sha256)


def _named_key(data: bytes) -> str | None:
    """The signing key an unverified manifest names, only to word the refusal."""
    try:
        value = json.loads(data).get("signing_key")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
