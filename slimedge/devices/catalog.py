"""The device catalog: one YAML file per real board, validated against a schema in code.

A board file (`firmware_configs/devices/<id>.yaml`) holds strings (id, name, class, runtime,
formats, ...) and quantities `{value, unit, source}` (see `slimedge.devices.units`). Loading
converts every quantity to SI units and keeps its source; any mistake raises
`DeviceConfigError` naming the file and the field path, e.g.
`firmware_configs/devices/esp32s3.yaml: memory.sram.unit: 'MHz' is not a unit of bytes ...`.

Board classes and what each must state:

- `mcu` (TFLite Micro): memory.sram (SRAM the tensor arena may use), memory.flash, and the
  fractions of each reserved for firmware/RTOS/stack/network buffers
  (memory.sram_reserved_fraction, memory.flash_reserved_fraction); optional memory.psram.
  The model budget is sram x (1 - reserved) for the arena and flash x (1 - reserved) for the
  model. Runtime `tflite-micro`, int8 only.
- `linux` (LiteRT on the CPU): memory.ram, memory.ram_budget (for model + runtime, what the OS
  leaves), memory.storage (for model files). Formats among int8, dynamic, float16, float32.
- `edgetpu` (LiteRT + Edge TPU delegate): as linux, int8 only, optional memory.accelerator
  (on-chip parameter memory).
- `gpu` (LiteRT GPU delegate; TensorRT-class figures noted in `runtime_note`): as linux,
  formats among int8, float16, float32.

Every class states cpu.core/clock, runtime, formats, preferred_format, compute.throughput (one
effective MAC/s figure per accepted format), compute.overhead (fixed time per inference),
link (medium, bandwidth, latency to the aggregator, radio energy per byte sent) and failure
(probability of failing within failure.window).

Energy (read by `slimedge.devices.energy`): every board states power.active (while running a
branch) and power.idle (between frames, link kept up) and link.energy_per_byte (radio energy
per application byte sent); battery.capacity (J, entered in Wh) marks a battery-powered node.
link.interval (optional) is the scheduled part of link.latency (a BLE connection interval): a
message waits up to one interval, half on average, so the expected link latency is
latency - interval / 2 (`slimedge.devices.link`). power.typical is optional (whole-board draw
under load, for reference). Checked: idle <= active, interval <= latency.

Kernels (optional, read by the "per-layer" cost model): `kernels: {core, set, source}` names
the kernel profile the board runs (`firmware_configs/kernels/<core>-<set>.yaml`, instructions
per invoke counted on an emulated core; `slimedge.devices.kernel_profiles`); a core or set with
no profile is refused, naming the file and field. Without it the board's figures alone time it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from slimedge.devices.units import (
    DeviceConfigError,
    Quantity,
    QuantityError,
    check_keys,
    format_si,
    parse_quantity,
    suggest,
)

MCU, LINUX, EDGETPU, GPU = "mcu", "linux", "edgetpu", "gpu"
CLASSES = (MCU, LINUX, EDGETPU, GPU)
HOSTED = (LINUX, EDGETPU, GPU)
FORMATS = ("int8", "dynamic", "float16", "float32")
RUNTIMES = {
    MCU: ("tflite-micro",),
    LINUX: ("litert",),
    EDGETPU: ("litert+edgetpu",),
    GPU: ("litert+gpu",),
}
FORMATS_BY_CLASS = {
    MCU: ("int8",),
    LINUX: ("int8", "dynamic", "float16", "float32"),
    EDGETPU: ("int8",),
    GPU: ("int8", "float16", "float32"),
}
LINK_MEDIA = ("wifi", "ble", "ethernet", "usb-serial")
ENV_CONFIGS = "SLIMEDGE_FIRMWARE_CONFIGS"


@dataclass(frozen=True)
class NumberField:
    """A numeric field: its quantity kind and the classes that must / may state it."""

    kind: str
    required: tuple[str, ...]
    allowed: tuple[str, ...] = CLASSES


ALL = CLASSES
NUMBER_FIELDS: dict[str, NumberField] = {
    "cpu.clock": NumberField("frequency", ALL),
    "cpu.cores": NumberField("count", ()),
    "memory.sram": NumberField("bytes", (MCU,), (MCU,)),
    "memory.sram_reserved_fraction": NumberField("fraction", (MCU,), (MCU,)),
    "memory.flash": NumberField("bytes", (MCU,), (MCU,)),
    "memory.flash_reserved_fraction": NumberField("fraction", (MCU,), (MCU,)),
    "memory.psram": NumberField("bytes", (), (MCU,)),
    "memory.ram": NumberField("bytes", HOSTED, HOSTED),
    "memory.ram_budget": NumberField("bytes", HOSTED, HOSTED),
    "memory.storage": NumberField("bytes", HOSTED, HOSTED),
    "memory.accelerator": NumberField("bytes", (), (EDGETPU,)),
    "compute.overhead": NumberField("time", ALL),
    "link.bandwidth": NumberField("bandwidth", ALL),
    "link.latency": NumberField("time", ALL),
    "link.energy_per_byte": NumberField("energy_per_byte", ALL),
    "link.interval": NumberField("time", ()),
    "power.typical": NumberField("power", ()),
    "power.active": NumberField("power", ALL),
    "power.idle": NumberField("power", ALL),
    "battery.capacity": NumberField("energy", ()),
    "failure.probability": NumberField("probability", ALL),
    "failure.window": NumberField("duration", ALL),
}
THROUGHPUT_PREFIX = "compute.throughput."
# Text fields: path -> required.
TEXT_FIELDS = {
    "id": True,
    "name": True,
    "class": True,
    "runtime": True,
    "runtime_note": False,
    "preferred_format": True,
    "notes": False,
    "cpu.core": True,
    "link.medium": True,
    "kernels.core": False,
    "kernels.set": False,
    "kernels.source": False,
}
SECTIONS = {
    "cpu": ("core", "clock", "cores"),
    "memory": tuple(p.split(".", 1)[1] for p in NUMBER_FIELDS if p.startswith("memory.")),
    "compute": ("throughput", "overhead"),
    "link": ("medium", "bandwidth", "latency", "interval", "energy_per_byte"),
    "power": ("typical", "active", "idle"),
    "battery": ("capacity",),
    "failure": ("probability", "window"),
    "kernels": ("core", "set", "source"),
}
TOP_KEYS = (
    "id",
    "name",
    "class",
    "cpu",
    "memory",
    "runtime",
    "runtime_note",
    "formats",
    "preferred_format",
    "compute",
    "link",
    "power",
    "battery",
    "failure",
    "kernels",
    "notes",
)


def number_field(path: str) -> NumberField | None:
    """The schema entry of a numeric field path (throughput paths included), or None."""
    if path.startswith(THROUGHPUT_PREFIX) and path[len(THROUGHPUT_PREFIX) :] in FORMATS:
        return NumberField("throughput", ALL)
    return NUMBER_FIELDS.get(path)


def number_paths(board_class: str, formats: tuple[str, ...] = FORMATS) -> list[str]:
    """Numeric field paths a board of this class may state (for hints and overrides)."""
    paths = [p for p, f in NUMBER_FIELDS.items() if board_class in f.allowed]
    return paths + [THROUGHPUT_PREFIX + f for f in formats]


# --------------------------------------------------------------------------- loaded objects


@dataclass(frozen=True)
class Cpu:
    core: str
    clock_hz: float
    cores: int | None


@dataclass(frozen=True)
class Memory:
    """Memory in bytes; which fields are set depends on the board class."""

    board_class: str
    sram: int | None = None
    sram_reserved_fraction: float | None = None
    flash: int | None = None
    flash_reserved_fraction: float | None = None
    psram: int | None = None
    ram: int | None = None
    ram_budget: int | None = None
    storage: int | None = None
    accelerator: int | None = None

    @property
    def model_memory_bytes(self) -> int:
        """Bytes the model may use while running: MCU tensor arena, else the RAM budget."""
        if self.board_class == MCU:
            return math.floor(self.sram * (1.0 - self.sram_reserved_fraction))
        return self.ram_budget

    @property
    def model_storage_bytes(self) -> int:
        """Bytes the model file may take: MCU flash left to the model, else storage."""
        if self.board_class == MCU:
            return math.floor(self.flash * (1.0 - self.flash_reserved_fraction))
        return self.storage


@dataclass(frozen=True)
class Compute:
    throughput: Mapping[str, float]  # format -> effective MAC/s
    overhead_s: float


@dataclass(frozen=True)
class Link:
    medium: str
    bandwidth_bps: float
    latency_s: float  # worst case to the aggregator
    energy_per_byte_j: float  # radio energy per application byte sent
    interval_s: float | None = None  # scheduled wait within latency_s (BLE connection interval)


@dataclass(frozen=True)
class Power:
    """Electrical power in W: running a branch, idle between frames, typical under load."""

    active_w: float
    idle_w: float
    typical_w: float | None = None


@dataclass(frozen=True)
class Failure:
    probability: float
    window_s: float


@dataclass(frozen=True)
class KernelRef:
    """The kernel profile a board runs (`firmware_configs/kernels/<core>-<set>.yaml`)."""

    core: str
    kernel_set: str
    source: str

    @property
    def key(self) -> str:
        return f"{self.core}-{self.kernel_set}"


@dataclass(frozen=True)
class Board:
    """One board from the catalog, every number in SI units (bytes as int)."""

    id: str
    name: str
    board_class: str
    runtime: str
    formats: tuple[str, ...]
    preferred_format: str
    cpu: Cpu
    memory: Memory
    compute: Compute
    link: Link
    failure: Failure
    power_w: float | None  # power.typical
    power: Power
    battery_j: float | None  # battery.capacity; None for a mains-powered board
    runtime_note: str
    notes: str
    path: Path | None
    texts: Mapping[str, Any] = field(repr=False, compare=False)
    quantities: Mapping[str, Quantity] = field(repr=False, compare=False)

    @property
    def model_memory_bytes(self) -> int:
        return self.memory.model_memory_bytes

    @property
    def model_storage_bytes(self) -> int:
        return self.memory.model_storage_bytes

    @property
    def kernels(self) -> KernelRef | None:
        """The kernel profile this board runs (its `kernels` section), or None: the cost model
        then uses the board's own figures alone."""
        if "kernels.core" not in self.texts:
            return None
        t = self.texts
        return KernelRef(t["kernels.core"], t["kernels.set"], t["kernels.source"])

    def throughput(self, fmt: str | None = None) -> float:
        """Effective MAC/s in `fmt` (default: the preferred format)."""
        fmt = fmt or self.preferred_format
        if fmt not in self.compute.throughput:
            raise KeyError(f"board {self.id!r} does not accept {fmt!r} (formats: {self.formats})")
        return self.compute.throughput[fmt]

    def field_paths(self) -> list[str]:
        """Every numeric field path this board states, plus the derived memory budgets."""
        return [*self.quantities, "memory.model_memory", "memory.model_storage"]

    def quantity(self, field_path: str) -> Quantity:
        if field_path not in self.quantities:
            raise KeyError(
                f"board {self.id!r} has no numeric field {field_path!r}"
                f"{suggest(field_path, self.field_paths())}"
            )
        return self.quantities[field_path]

    def source_of(self, field_path: str) -> str:
        """Where a number comes from: the file's `source`, or the derivation of a budget."""
        if field_path in ("memory.model_memory", "memory.model_storage"):
            return self._derived_source(field_path)
        return self.quantity(field_path).source

    def _derived_source(self, field_path: str) -> str:
        q = self.quantities
        if self.board_class != MCU:
            name = "memory.ram_budget" if field_path == "memory.model_memory" else "memory.storage"
            return f"{name}: {q[name].source}"
        total, frac = (
            ("memory.sram", "memory.sram_reserved_fraction")
            if field_path == "memory.model_memory"
            else ("memory.flash", "memory.flash_reserved_fraction")
        )
        value = (
            self.model_memory_bytes
            if field_path == "memory.model_memory"
            else self.model_storage_bytes
        )
        return (
            f"derived: {total} x (1 - {frac}) = {q[total].given()} x (1 - {q[frac].value:g}) "
            f"= {value} B"
        )

    def with_quantities(self, replaced: Mapping[str, Quantity]) -> Board:
        """A copy with some numeric fields replaced (used by fleet overrides)."""
        quantities = dict(self.quantities)
        quantities.update(replaced)
        return _assemble(dict(self.texts), quantities, self.path)

    def summary(self) -> dict[str, Any]:
        """The `devices list` row: ids, memory and throughput in SI units."""
        m = self.memory
        return {
            "id": self.id,
            "name": self.name,
            "class": self.board_class,
            "runtime": self.runtime,
            "formats": list(self.formats),
            "preferred_format": self.preferred_format,
            "sram_bytes": m.sram,
            "ram_bytes": m.ram,
            "flash_bytes": m.flash,
            "storage_bytes": m.storage,
            "model_memory_bytes": self.model_memory_bytes,
            "model_storage_bytes": self.model_storage_bytes,
            "throughput_mac_per_s": dict(self.compute.throughput),
            "link": self.link.medium,
            "link_bandwidth_bit_per_s": self.link.bandwidth_bps,
            "failure_probability": self.failure.probability,
            "power_active_w": self.power.active_w,
            "power_idle_w": self.power.idle_w,
            "radio_energy_per_byte_j": self.link.energy_per_byte_j,
            "battery_j": self.battery_j,
        }

    def describe(self) -> dict[str, Any]:
        """Every field with its value as written, in SI, and its source (`devices show`)."""
        fields = {}
        for path in self.field_paths():
            if path in self.quantities:
                qty = self.quantities[path]
                fields[path] = {
                    "given": qty.given(),
                    "si": qty.si,
                    "si_unit": qty.si_unit,
                    "readable": format_si(qty.si, qty.kind),
                    "source": qty.source,
                }
            else:
                value = (
                    self.model_memory_bytes
                    if path == "memory.model_memory"
                    else self.model_storage_bytes
                )
                fields[path] = {
                    "given": None,
                    "si": value,
                    "si_unit": "B",
                    "readable": format_si(value, "bytes"),
                    "source": self.source_of(path),
                }
        return {
            "id": self.id,
            "name": self.name,
            "class": self.board_class,
            "path": str(self.path) if self.path else None,
            "cpu_core": self.cpu.core,
            "runtime": self.runtime,
            "runtime_note": self.runtime_note,
            "formats": list(self.formats),
            "preferred_format": self.preferred_format,
            "link_medium": self.link.medium,
            "kernels": ({"core": self.kernels.core, "set": self.kernels.kernel_set,
                         "source": self.kernels.source} if self.kernels else None),
            "notes": self.notes,
            "fields": fields,
        }


# --------------------------------------------------------------------------- locations


def firmware_configs_dir() -> Path:
    """`$SLIMEDGE_FIRMWARE_CONFIGS`, else the repository's `firmware_configs/`."""
    env = os.environ.get(ENV_CONFIGS)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "firmware_configs"


def devices_dir() -> Path:
    return firmware_configs_dir() / "devices"


def kernels_dir() -> Path:
    """Kernel profiles: `$SLIMEDGE_FIRMWARE_CONFIGS/kernels` where that folder exists (a
    catalog copied without them still uses the repository's), else the repository's."""
    configured = firmware_configs_dir() / "kernels"
    if configured.is_dir():
        return configured
    return Path(__file__).resolve().parents[2] / "firmware_configs" / "kernels"


def fleets_dir() -> Path:
    return firmware_configs_dir() / "fleets"


# --------------------------------------------------------------------------- loading


def read_yaml(path: Path) -> Any:
    """Parse one YAML file; DeviceConfigError names the file (and line) on failure."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeviceConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise DeviceConfigError(f"{path}: cannot read: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DeviceConfigError(f"{path}: not valid YAML{where}: {problem}") from None


class FileReader:
    """Reads parts of one config file, failing with the file and the field path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, field_path: str, message: str) -> DeviceConfigError:
        return DeviceConfigError(f"{self.path}: {field_path}: {message}")

    def mapping(self, raw: Any, field_path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            raise self.fail(field_path, f"expected a mapping, got {type(raw).__name__} {raw!r}")
        unknown = check_keys(raw, allowed)
        if unknown is not None:
            where = f"{field_path}.{unknown}" if field_path else unknown
            raise self.fail(
                where, f"unknown field{suggest(unknown, allowed)} (allowed: {', '.join(allowed)})"
            )
        return dict(raw)

    def text(self, raw: Any, field_path: str) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise self.fail(field_path, f"expected a non-empty string, got {raw!r}")
        return raw.strip()

    def quantity(self, raw: Any, field_path: str, kind: str) -> Quantity:
        try:
            return parse_quantity(raw, kind)
        except QuantityError as exc:
            where = f"{field_path}.{exc.field}" if exc.field else field_path
            raise self.fail(where, str(exc)) from None


def load_board(path: str | os.PathLike[str]) -> Board:
    """Read and validate one board file."""
    path = Path(path)
    raw = read_yaml(path)
    reader = FileReader(path)
    top = reader.mapping(raw, "", TOP_KEYS)
    texts, quantities = _read_fields(reader, top)
    _check_class_rules(reader, path, texts, quantities)
    return _assemble(texts, quantities, path)


def _read_fields(reader: FileReader, top: dict[str, Any]) -> tuple[dict, dict[str, Quantity]]:
    texts: dict[str, Any] = {}
    quantities: dict[str, Quantity] = {}
    for name in ("id", "name", "class", "runtime", "runtime_note", "preferred_format", "notes"):
        if name in top:
            texts[name] = reader.text(top[name], name)
    if "formats" in top:
        texts["formats"] = _read_formats(reader, top["formats"])
    for section, keys in SECTIONS.items():
        if section not in top:
            continue
        body = reader.mapping(top[section], section, keys)
        for key, value in body.items():
            path = f"{section}.{key}"
            if path in TEXT_FIELDS:
                texts[path] = reader.text(value, path)
            elif path == "compute.throughput":
                quantities.update(_read_throughput(reader, value))
            else:
                quantities[path] = reader.quantity(value, path, NUMBER_FIELDS[path].kind)
    return texts, quantities


def _read_formats(reader: FileReader, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise reader.fail("formats", f"expected a non-empty list of formats, got {raw!r}")
    seen: list[str] = []
    for i, item in enumerate(raw):
        if item not in FORMATS:
            hint = suggest(str(item), FORMATS)
            raise reader.fail(
                f"formats[{i}]", f"unknown format {item!r}{hint} (known: {', '.join(FORMATS)})"
            )
        if item in seen:
            raise reader.fail(f"formats[{i}]", f"format {item!r} listed twice")
        seen.append(item)
    return tuple(seen)


def _read_throughput(reader: FileReader, raw: Any) -> dict[str, Quantity]:
    body = reader.mapping(raw, "compute.throughput", FORMATS)
    return {
        THROUGHPUT_PREFIX + fmt: reader.quantity(value, THROUGHPUT_PREFIX + fmt, "throughput")
        for fmt, value in body.items()
    }


def _check_class_rules(
    reader: FileReader, path: Path, texts: dict[str, Any], quantities: dict[str, Quantity]
) -> None:
    for name in ("id", "name", "class"):
        if name not in texts:
            raise reader.fail(name, "missing (required for every board)")
    board_class = texts["class"]
    if board_class not in CLASSES:
        hint = suggest(board_class, CLASSES)
        raise reader.fail(
            "class",
            f"{board_class!r} is not a board class{hint} (expected one of {', '.join(CLASSES)})",
        )
    if texts["id"] != path.stem:
        raise reader.fail("id", f"{texts['id']!r} must equal the file name stem {path.stem!r}")
    for name, required in TEXT_FIELDS.items():
        if required and name not in texts:
            raise reader.fail(name, f"missing (required for class {board_class!r})")
    if "formats" not in texts:
        raise reader.fail("formats", f"missing (required for class {board_class!r})")
    for name, spec in NUMBER_FIELDS.items():
        if name in quantities and board_class not in spec.allowed:
            others = ", ".join(p for p in number_paths(board_class, ()) if p.startswith("memory."))
            raise reader.fail(
                name, f"not a field of class {board_class!r} boards (they state: {others})"
            )
        if name not in quantities and board_class in spec.required:
            raise reader.fail(name, f"missing (required for class {board_class!r})")
    runtime = texts["runtime"]
    if runtime not in RUNTIMES[board_class]:
        raise reader.fail(
            "runtime",
            f"{runtime!r} is not a runtime of class {board_class!r} boards "
            f"(allowed: {', '.join(RUNTIMES[board_class])})",
        )
    allowed = FORMATS_BY_CLASS[board_class]
    for i, fmt in enumerate(texts["formats"]):
        if fmt not in allowed:
            raise reader.fail(
                f"formats[{i}]",
                f"{fmt!r} is not a format class {board_class!r} boards run "
                f"(allowed: {', '.join(allowed)})",
            )
    if texts["preferred_format"] not in texts["formats"]:
        raise reader.fail(
            "preferred_format",
            f"{texts['preferred_format']!r} is not among formats {list(texts['formats'])}",
        )
    given = {p[len(THROUGHPUT_PREFIX) :] for p in quantities if p.startswith(THROUGHPUT_PREFIX)}
    for fmt in texts["formats"]:
        if fmt not in given:
            raise reader.fail(
                THROUGHPUT_PREFIX + fmt, f"missing (the board accepts {fmt}; give its throughput)"
            )
    extra = sorted(given - set(texts["formats"]))
    if extra:
        raise reader.fail(
            THROUGHPUT_PREFIX + extra[0],
            f"the board does not accept {extra[0]} (formats: {', '.join(texts['formats'])})",
        )
    medium = texts["link.medium"]
    if medium not in LINK_MEDIA:
        raise reader.fail(
            "link.medium",
            f"{medium!r} is not a link medium{suggest(medium, LINK_MEDIA)} "
            f"(expected one of {', '.join(LINK_MEDIA)})",
        )
    check_budgets(quantities, lambda field_path, msg: reader.fail(field_path, msg))
    _check_kernels(reader, texts)


def _check_kernels(reader: FileReader, texts: dict[str, Any]) -> None:
    """A `kernels` section states core, set and source, and names a profile that exists."""
    given = [k for k in ("core", "set", "source") if f"kernels.{k}" in texts]
    if not given:
        return
    for key in ("core", "set", "source"):
        if key not in given:
            raise reader.fail(f"kernels.{key}", "missing (a kernels section states core, set "
                                                "and source)")
    from slimedge.devices.kernel_profiles import load_profiles  # reads this module

    directory = kernels_dir()
    profiles = load_profiles(directory)
    core, kernel_set = texts["kernels.core"], texts["kernels.set"]
    cores = sorted({p.core for p in profiles.values()})
    if core not in cores:
        raise reader.fail("kernels.core", f"no kernel profile for core {core!r}"
                                          f"{suggest(core, cores)} in {directory} "
                                          f"(cores: {', '.join(cores)})")
    if f"{core}-{kernel_set}" not in profiles:
        sets = sorted(p.kernel_set for p in profiles.values() if p.core == core)
        raise reader.fail("kernels.set", f"no kernel profile {kernel_set!r} for core {core!r}"
                                         f"{suggest(kernel_set, sets)} in {directory} "
                                         f"(sets of {core}: {', '.join(sets)})")


def check_budgets(quantities: Mapping[str, Quantity], fail: Any) -> None:
    """Budgets must fit in what the board has, idle power must not exceed active power and the
    link interval not exceed the link latency (also re-checked after fleet overrides)."""
    for small, large in (("power.idle", "power.active"), ("link.interval", "link.latency")):
        if small in quantities and large in quantities \
                and quantities[small].si > quantities[large].si:
            raise fail(small, f"{quantities[small].given()} exceeds {large} "
                              f"({quantities[large].given()})")
    if "memory.ram_budget" in quantities and "memory.ram" in quantities:
        budget, ram = quantities["memory.ram_budget"], quantities["memory.ram"]
        if budget.si > ram.si:
            raise fail(
                "memory.ram_budget",
                f"{budget.given()} exceeds memory.ram ({ram.given()})",
            )


def _assemble(texts: dict[str, Any], quantities: dict[str, Quantity], path: Path | None) -> Board:
    def si(name: str) -> Any:
        return quantities[name].si if name in quantities else None

    board_class = texts["class"]
    memory = Memory(
        board_class=board_class,
        **{name.split(".", 1)[1]: si(name) for name in NUMBER_FIELDS if name.startswith("memory.")},
    )
    throughput = {
        p[len(THROUGHPUT_PREFIX) :]: q.si
        for p, q in quantities.items()
        if p.startswith(THROUGHPUT_PREFIX)
    }
    cores = si("cpu.cores")
    return Board(
        id=texts["id"],
        name=texts["name"],
        board_class=board_class,
        runtime=texts["runtime"],
        formats=tuple(texts["formats"]),
        preferred_format=texts["preferred_format"],
        cpu=Cpu(texts["cpu.core"], si("cpu.clock"), int(cores) if cores is not None else None),
        memory=memory,
        compute=Compute(MappingProxyType(throughput), si("compute.overhead")),
        link=Link(texts["link.medium"], si("link.bandwidth"), si("link.latency"),
                  si("link.energy_per_byte"), si("link.interval")),
        failure=Failure(si("failure.probability"), si("failure.window")),
        power_w=si("power.typical"),
        power=Power(si("power.active"), si("power.idle"), si("power.typical")),
        battery_j=si("battery.capacity"),
        runtime_note=texts.get("runtime_note", ""),
        notes=texts.get("notes", ""),
        path=path,
        texts=MappingProxyType(dict(texts)),
        quantities=MappingProxyType(dict(quantities)),
    )


def load_catalog(directory: str | os.PathLike[str] | None = None) -> dict[str, Board]:
    """Every `*.yaml` board in `directory` (default: `devices_dir()`), keyed by id."""
    directory = Path(directory) if directory is not None else devices_dir()
    if not directory.is_dir():
        raise DeviceConfigError(
            f"{directory}: no such catalog directory (set ${ENV_CONFIGS} to the folder that "
            "holds devices/ and fleets/)"
        )
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise DeviceConfigError(f"{directory}: no board files (*.yaml) in the catalog directory")
    return {board.id: board for board in (load_board(f) for f in files)}


def resolve_board(name_or_path: str, catalog: Mapping[str, Board] | None = None) -> Board:
    """A board by catalog id, or by path to a board file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        return load_board(candidate)
    catalog = load_catalog() if catalog is None else catalog
    if name_or_path not in catalog:
        raise DeviceConfigError(
            f"unknown board {name_or_path!r}{suggest(name_or_path, list(catalog))} "
            f"(catalog: {', '.join(catalog)})"
        )
    return catalog[name_or_path]
