"""Kernel profiles: the instructions a kernel set spends per invoke, fitted to counted runs.

A profile (`firmware_configs/kernels/<core>-<set>.yaml`) describes one CPU core running one
kernel set (TFLite Micro's reference kernels or CMSIS-NN on a Cortex-M4; LiteRT's XNNPACK or
builtin kernels on a Cortex-A72 / A76). It is written by `tools/fit_cost_model.py
--write-profile` from the instructions per invoke counted on an emulated core for every level of
the demo ladder (`firmware_configs/kernels/counted/`), and holds both forms of
`slimedge.devices.calibration`, in instructions:

- "mac":        I(L) = t0 + macs x MACs(L)
- "per-layer":  I(L) = n_ops x ops(L) + sum_kind macs_<kind> x MACs_kind(L)
                       + out_elements x outputs(L)

(kinds conv, depthwise, dense, pool over the level's operators, `levels[i]["layers"]`), each
with its largest relative error and leave-one-out relative RMS error on the counts, the form the
fit rule chose (`calibration.choose_form`: the lower out-of-sample error) and a `source` naming
the CSV, its column, the counted model's hash and the emulator.

`KernelProfile.instructions(levels)` applies a profile to any ladder, deterministically: the
chosen form on the levels' per-operator work; the MAC-linear form where the levels carry no
`layers`. A kind of operator the counted ladder did not have (depthwise: the demo ladder has
none) is charged at the conv rate, an assumption the profile states (`unfitted_kinds`).

Boards name the profile they run in their `kernels` section (`slimedge.devices.catalog`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import yaml

from slimedge.devices.calibration import LAYER_COLUMNS, OP_KINDS, KernelFit, layer_work
from slimedge.devices.catalog import FileReader, kernels_dir, read_yaml
from slimedge.devices.level_fields import CostModelError, json_float, number
from slimedge.devices.units import DeviceConfigError

__all__ = [
    "FORMS",
    "CountedColumn",
    "KernelProfile",
    "ProfileForm",
    "counted_dir",
    "fit_counted",
    "load_profile",
    "load_profiles",
    "profile_document",
    "profile_yaml",
]

FORMS = ("per-layer", "mac")
MAC_COLUMNS = ("t0", "macs")
TOP_KEYS = ("core", "set", "unit", "form", "source", "forms", "unfitted_kinds")
SOURCE_KEYS = ("counts", "column", "model_hash", "origin", "layers", "reason")
FORM_KEYS = ("coefficients", "max_rel_error", "loo_rel_rms")


@dataclass(frozen=True)
class ProfileForm:
    """One fitted form: instructions per unit of each column, and its error on the counts."""

    form: str
    coefficients: Mapping[str, float]
    max_rel_error: float
    loo_rel_rms: float  # nan when the fit had too few levels to leave one out


@dataclass(frozen=True)
class KernelProfile:
    """Instructions per invoke of one kernel set on one core (module docstring)."""

    core: str
    kernel_set: str
    form: str  # the chosen form, "per-layer" or "mac"
    forms: Mapping[str, ProfileForm]
    source: Mapping[str, str]
    unfitted_kinds: tuple[str, ...]  # op kinds charged at the conv rate
    path: Path | None = None

    @property
    def key(self) -> str:
        return f"{self.core}-{self.kernel_set}"

    def form_for(self, levels: Sequence[Mapping[str, Any]]) -> str:
        """The form `instructions` applies to `levels`: the chosen one, or "mac" without
        per-operator work."""
        if self.form == "per-layer" and layer_work(levels) is None:
            return "mac"
        return self.form

    def instructions(self, levels: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """(L,) predicted instructions per invoke of each level (module docstring)."""
        form = self.form_for(levels)
        coef = self.forms[form].coefficients
        if form == "mac":
            macs = np.array([number(e, i, "macs", positive=True) for i, e in enumerate(levels)])
            return coef["t0"] + coef["macs"] * macs
        work = layer_work(levels)
        per_unit = np.array([coef.get(c, coef["macs_conv"] if c[5:] in self.unfitted_kinds
                                      else 0.0) for c in LAYER_COLUMNS])
        return work @ per_unit

    def to_dict(self) -> dict[str, Any]:
        return {"core": self.core, "set": self.kernel_set, "form": self.form,
                "source": dict(self.source), "unfitted_kinds": list(self.unfitted_kinds),
                "path": str(self.path) if self.path else None,
                "forms": {k: {"coefficients": dict(f.coefficients),
                              "max_rel_error": f.max_rel_error,
                              "loo_rel_rms": json_float(f.loo_rel_rms)}
                          for k, f in self.forms.items()}}


# --------------------------------------------------------------------------- reading


def _number(reader: FileReader, raw: Any, field_path: str, *, nan_ok: bool = False) -> float:
    if raw is None and nan_ok:
        return math.nan
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) \
            or raw < 0:
        raise reader.fail(field_path, f"expected a finite number >= 0, got {raw!r}")
    return float(raw)


def load_profile(path: str | os.PathLike[str]) -> KernelProfile:
    """Read and check one profile file; `DeviceConfigError` names the file and field."""
    path = Path(path)
    reader = FileReader(path)
    top = reader.mapping(read_yaml(path), "", TOP_KEYS)
    for name in ("core", "set", "form", "source", "forms"):
        if name not in top:
            raise reader.fail(name, "missing")
    core, kernel_set = reader.text(top["core"], "core"), reader.text(top["set"], "set")
    if path.stem != f"{core}-{kernel_set}":
        raise reader.fail("set", f"the file of core {core!r} and set {kernel_set!r} must be "
                                 f"named {core}-{kernel_set}.yaml")
    source = reader.mapping(top["source"], "source", SOURCE_KEYS)
    source = {k: reader.text(v, f"source.{k}") for k, v in source.items()}
    raw_forms = reader.mapping(top["forms"], "forms", FORMS)
    forms = {}
    for name, body in raw_forms.items():
        where = f"forms.{name}"
        body = reader.mapping(body, where, FORM_KEYS)
        allowed = MAC_COLUMNS if name == "mac" else LAYER_COLUMNS
        coefs = reader.mapping(body.get("coefficients"), f"{where}.coefficients", allowed)
        needed = MAC_COLUMNS if name == "mac" else ("macs_conv",)
        for c in needed:
            if c not in coefs:
                raise reader.fail(f"{where}.coefficients.{c}", "missing")
        forms[name] = ProfileForm(
            name,
            MappingProxyType({c: _number(reader, v, f"{where}.coefficients.{c}")
                              for c, v in coefs.items()}),
            _number(reader, body.get("max_rel_error"), f"{where}.max_rel_error"),
            _number(reader, body.get("loo_rel_rms"), f"{where}.loo_rel_rms", nan_ok=True))
    form = top["form"]
    if form not in forms:
        raise reader.fail("form", f"{form!r} is not one of the profile's forms "
                                  f"({', '.join(forms) or 'none'})")
    if "mac" not in forms:
        raise reader.fail("forms.mac", "missing (used for ladders without per-operator work)")
    kinds = top.get("unfitted_kinds", [])
    if not isinstance(kinds, list) or any(k not in OP_KINDS for k in kinds):
        raise reader.fail("unfitted_kinds", f"expected a list of {', '.join(OP_KINDS)}, "
                                            f"got {kinds!r}")
    return KernelProfile(core, kernel_set, form, MappingProxyType(forms),
                         MappingProxyType(source), tuple(kinds), path)


_CACHE: dict[tuple[str, tuple[tuple[str, int], ...]], dict[str, KernelProfile]] = {}


def load_profiles(directory: str | os.PathLike[str] | None = None) -> dict[str, KernelProfile]:
    """Every profile in `directory` (default `kernels_dir()`), keyed `<core>-<set>`; read once
    per change of the files."""
    directory = Path(directory) if directory is not None else kernels_dir()
    if not directory.is_dir():
        raise DeviceConfigError(f"{directory}: no such kernel profile directory")
    files = sorted(directory.glob("*.yaml"))
    stamp = (str(directory.resolve()), tuple((f.name, f.stat().st_mtime_ns) for f in files))
    if stamp not in _CACHE:
        _CACHE[stamp] = {p.key: p for p in (load_profile(f) for f in files)}
    return dict(_CACHE[stamp])


# --------------------------------------------------------------------------- writing


def profile_document(core: str, kernel_set: str, fit: KernelFit,
                     source: Mapping[str, str]) -> dict[str, Any]:
    """The profile file's content for a fit of counted instructions (`fit_measured`)."""
    if fit.form not in FORMS:
        raise CostModelError(f"{core}-{kernel_set}: the counts do not follow the work "
                             f"({fit.reason}); no profile can be fitted")
    forms = {}
    for name in FORMS:
        if name not in fit.fits:
            continue
        f = fit.fits[name]
        forms[name] = {"coefficients": dict(zip(f.columns, f.coef, strict=True)),
                       "max_rel_error": f.max_rel_error,
                       "loo_rel_rms": json_float(f.loo_rel_rms)}
    fitted = set(forms.get("per-layer", {}).get("coefficients", {}))
    unfitted = [k for k in OP_KINDS if f"macs_{k}" not in fitted] if fitted else []
    return {"core": core, "set": kernel_set, "unit": "instructions per invoke",
            "form": fit.form, "source": {**source, "reason": fit.reason},
            "unfitted_kinds": unfitted, "forms": forms}


def profile_yaml(document: Mapping[str, Any]) -> str:
    """The profile file's text: a header saying how it was made, then the document."""
    head = ("# Kernel profile: instructions per invoke of one kernel set on one core, fitted to\n"
            "# counted instructions (source.counts). Written by tools/fit_cost_model.py\n"
            "# --write-profile; edit the counts or the tool, not this file. unfitted_kinds: op\n"
            "# kinds the counted ladder did not have, charged at the conv rate (assumption).\n")
    return head + yaml.safe_dump(dict(document), sort_keys=False, width=100)


# --------------------------------------------------------------------------- fitting the counts


@dataclass(frozen=True)
class CountedColumn:
    """One counted column (instructions per invoke of every counted level) and its fit."""

    core: str
    kernel_set: str
    column: str
    levels: tuple[Mapping[str, Any], ...]  # level, macs, channels, layers
    counts: tuple[float, ...]
    fit: KernelFit
    source: Mapping[str, str]

    @property
    def key(self) -> str:
        return f"{self.core}-{self.kernel_set}"

    def document(self) -> dict[str, Any]:
        return profile_document(self.core, self.kernel_set, self.fit, self.source)


def counted_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The counted instructions the profiles are fitted to (`<kernels>/counted`)."""
    return (Path(directory) if directory is not None else kernels_dir()) / "counted"


def fit_counted(directory: str | os.PathLike[str] | None = None) -> list[CountedColumn]:
    """Fit both forms to every counted column `sources.yaml` names (default: the repository's
    `firmware_configs/kernels/counted`); the per-operator work of each level is that of
    `sources.yaml`'s `layers` file, checked against the CSV's channels and MACs."""
    import csv
    import json

    from slimedge.devices.calibration import fit_measured

    folder = Path(directory) if directory is not None else counted_dir()
    index = folder / "sources.yaml"
    reader = FileReader(index)
    top = reader.mapping(read_yaml(index), "", ("layers", "counts"))
    layers_path = folder / reader.text(top.get("layers"), "layers")
    try:
        work = json.loads(layers_path.read_text())["levels"]
    except (OSError, ValueError, KeyError) as exc:
        raise DeviceConfigError(f"{layers_path}: not a per-level layers file ({exc})") from None
    out = []
    counts = top.get("counts")
    if not isinstance(counts, list) or not counts:
        raise reader.fail("counts", "expected a non-empty list of counted CSVs")
    for n, entry in enumerate(counts):
        where = f"counts[{n}]"
        entry = reader.mapping(entry, where, ("csv", "model_hash", "origin", "columns"))
        path = folder / reader.text(entry.get("csv"), f"{where}.csv")
        try:
            rows = list(csv.DictReader(path.open(newline="")))
        except OSError as exc:
            raise reader.fail(f"{where}.csv", f"cannot read {path}: {exc}") from None
        if len(rows) != len(work):
            raise DeviceConfigError(f"{path}: {len(rows)} levels, but {layers_path} has "
                                    f"{len(work)}")
        for i, (row, w) in enumerate(zip(rows, work, strict=True)):
            if row.get("channels") != w["channels"] or int(row.get("macs", -1)) != w["macs"]:
                raise DeviceConfigError(
                    f"{path}: row {i} (level {row.get('level')}): channels/MACs "
                    f"{row.get('channels')}/{row.get('macs')} differ from {layers_path}'s "
                    f"{w['channels']}/{w['macs']}")
        levels = tuple({"level": float(r["level"]), "macs": w["macs"],
                        "channels": w["channels"], "layers": w["layers"]}
                       for r, w in zip(rows, work, strict=True))
        columns = reader.mapping(entry.get("columns"), f"{where}.columns", tuple(rows[0]))
        for column, target in columns.items():
            target = reader.mapping(target, f"{where}.columns.{column}", ("core", "set"))
            ys = [float(r[column]) for r in rows]
            fit = fit_measured(levels, ys, column)
            source = {"counts": f"firmware_configs/kernels/counted/{path.name}",
                      "column": column,
                      "model_hash": reader.text(entry.get("model_hash"), f"{where}.model_hash"),
                      "origin": " ".join(reader.text(entry.get("origin"),
                                                     f"{where}.origin").split()),
                      "layers": f"firmware_configs/kernels/counted/{layers_path.name}"}
            out.append(CountedColumn(target["core"], target["set"], column, levels, tuple(ys),
                                     fit, source))
    return out
