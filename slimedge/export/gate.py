"""The deploy gate: checks what can actually be wrong with a deployment, and nothing that a
correct export can fail by chance.

Inputs: per view, the features its device's shipped artifact computes on the test frames (run
in LiteRT), the device and the ladder level; the shipped aggregator head (`head.tflite`,
`classifier.npz`); the ladder (cached int8 features, classifier: what the planner measured);
each deployed level's float `branch.keras` features. Three checks, each failure naming the
device, file or frames at fault:

1. **Exactness** (must be 100%: any difference is a defect). Per device, its features on
   every test frame of its views (as the device computes them: LiteRT, TFLite Micro on a
   microcontroller) are the ladder's cached features of its level and feature variant bit for
   bit (int8 in LiteRT, int8 in TFLite Micro, float16 / dynamic / float32), int8 ones with
   the same output scale and zero point. The shipped `classifier.npz` is the ladder's, and
   `head.tflite` gives the ladder classifier's logits (to float rounding, `LOGIT_RTOL`).
   End to end: deployed features -> core pooling -> `head.tflite` predicts, frame by frame,
   what the evaluator predicts at the deployed levels and variants (with a ladder from before
   float variants were cached, a float view is not modelled by the evaluator: the reference
   is then the ladder classifier on the same pooled vectors, said in the result). Catches a
   wrong scale or zero point, artifacts swapped between devices, a level other than the
   plan's, a head from another model.

2. **Int8 vs float, frame by frame.** The deployed system (artifacts -> core pooling ->
   `head.tflite`) against the float pipeline (each view's `branch.keras` -> core pooling ->
   Keras classifier). A frame may disagree only when the float model is nearly undecided
   there: its float top-2 logit margin is at most delta_i = `DELTA_STEPS` x eps_i, where eps_i
   is the head's logit quantization error at that frame: the most the margin between the
   float top class and any other can move (to first order, through the classifier's Jacobian
   at the frame's float pooled vector) when every pooled feature is off by one output
   quantization step of its view's level plus the distance by which the float feature lies
   outside that level's int8 range (clipping). eps_i comes from the float features, the
   ladder's scales and the classifier only, never from the artifacts being judged, so a
   broken artifact cannot widen its own allowance. A disagreeing frame with margin > delta_i
   is a defect. Why 8: over five tiny training seeds (levels 0/0.5/0.75, val and test splits)
   and a quick-demo ladder (10 classes, levels 0..0.75), 32 configurations in all, a correct
   int8 system's largest margin change was 2.36 eps_i, its per-configuration median 0.08 to
   0.53 eps_i (`tools/gate_margins.py` prints the table): 8 leaves a 3.4x headroom over the
   worst frame seen (the first-order bound is not a bound across ReLU kinks, and a branch's
   int8 error accumulates to a few steps), while a defect (a wrong scale, a swapped level,
   another model's head) moves logits by the size of the margins themselves. On a weakly
   trained model whose margins are of the order of its quantization noise, most frames are
   near-ties and the accuracy check and exactness carry the gate; the summary says how many.

3. **Int8 vs float, accuracy.** The deployed system's test accuracy may fall below the float
   pipeline's by at most `TOLERANCE`, judged on the paired outcomes of the same frames with
   Newcombe's hybrid score interval for a paired difference (`slimedge.export.paired`): the
   gate refuses only when the one-sided `CONFIDENCE` lower bound of the loss exceeds the
   tolerance, i.e. when the test frames show that the loss is larger. A correct export's flips
   are confined to near-ties and go both ways; its chance of refusal is below 1 - CONFIDENCE
   even at a true loss equal to the tolerance, and far below at the losses int8 really costs.

Reported beside: raw top-1 agreement, the near-tie count (margin <= delta_i), the float margin
quantiles and delta's distribution. Raw agreement itself is not a gate: on a few hundred frames
a handful of near-ties decide it (a correct export once failed a 99% floor with 3 of 275).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimedge import _core
from slimedge.export import ExportError
from slimedge.export.agreement import ViewFeatures, feature_error, pool_views, top2_margins
from slimedge.export.paired import PairedCounts, paired_difference_interval

DELTA_STEPS = 8.0  # delta_i = DELTA_STEPS x the frame's one-step logit quantization error
TOLERANCE = 0.01  # largest accuracy loss (fraction) of the deployed system against float
CONFIDENCE = 0.99  # one-sided level of the paired interval's lower bound
LOGIT_RTOL = 1e-4  # head.tflite vs the ladder classifier: float32 rounding, relative to max |z|
METHOD = ("paired: Newcombe hybrid score interval (method 10) on float - deployed accuracy, "
          f"refused when its one-sided {CONFIDENCE:.0%} lower bound exceeds the tolerance; "
          f"frames: disagreement allowed only where the float top-2 margin <= delta_i = "
          f"{DELTA_STEPS:g} x the frame's one-step logit quantization error")
# What decides the gate's verdict (a stage that caches an export reruns it when these change).
GATE_SETTINGS = {"delta_steps": DELTA_STEPS, "tolerance": TOLERANCE, "confidence": CONFIDENCE,
                 "interval": "newcombe-hybrid-score-paired",
                 "exactness": "bit-exact per feature variant"}
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
LISTED = 8  # frames named in a message
JACOBIAN_BATCH = 256  # frames per classifier Jacobian


@dataclass(frozen=True)
class DeployedView:
    """One view of the deployed system: its device, ladder level and the features the
    device's artifact computes on the test frames."""

    view: int
    device: str
    level_index: int
    features: ViewFeatures


@dataclass(frozen=True)
class GateReference:
    """What the deployment is judged against: the ladder's evaluator on the test split (cached
    int8 features, classifier: what the planner measured) and the float pipeline."""

    evaluator: Any  # slimedge.ladder.evaluator.Evaluator, test split
    float_features: Mapping[int, np.ndarray]  # level -> (N, V, D) float32 from branch.keras
    float_head: Any  # the Keras head (its classifier gives the float pipeline's logits)
    weights: np.ndarray | None = None  # view weights of weighted pooling

    @classmethod
    def from_ladder(cls, ladder_dir: str | Path, float_features: Mapping[int, np.ndarray],
                    float_head: Any, weights: np.ndarray | None = None, *,
                    split: str = "test", variants: Sequence[str] | None = None
                    ) -> GateReference:
        """`variants`: the feature variant of each view's device (None: int8 everywhere)."""
        from slimedge.ladder.evaluator import Evaluator

        ev = Evaluator.from_ladder(ladder_dir, split, variants=variants)
        if ev.scales is None or ev.zero_points is None:
            raise ExportError(f"{ladder_dir}: the ladder's cached features are not int8")
        return cls(ev, float_features, float_head, weights)

    @property
    def labels(self) -> np.ndarray:
        return self.evaluator.labels

    @property
    def classifier(self) -> Any:
        return self.evaluator.classifier

    @property
    def mode(self) -> str:
        return self.evaluator.mode


@dataclass
class GateResult:
    exactness: dict[str, Any]
    float_accuracy: float
    int8_accuracy: float
    accuracy_loss: float
    accuracy_interval: list[float]  # [lower, upper] of float - deployed accuracy
    tolerance: float
    confidence: float
    delta: dict[str, Any]
    near_ties: int
    frames: int
    agreement: float
    disagreeing: list[int]
    disagreeing_above_delta: list[int]
    margin_quantiles: dict[str, float]
    method: str = METHOD
    failures: list[str] = field(default_factory=list)
    # Per frame (not serialized): deployed and float predictions, float logits.
    predictions: np.ndarray | None = field(default=None, repr=False)
    float_predictions: np.ndarray | None = field(default=None, repr=False)
    float_logits: np.ndarray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """JSON-native (what lands in the export summary and aggregator/head.json)."""
        return {
            "ok": self.ok, "exactness": self.exactness, "frames": self.frames,
            "float_accuracy": self.float_accuracy, "int8_accuracy": self.int8_accuracy,
            "accuracy_loss": self.accuracy_loss, "accuracy_interval": self.accuracy_interval,
            "tolerance": self.tolerance, "confidence": self.confidence, "delta": self.delta,
            "near_ties": self.near_ties, "agreement": self.agreement,
            "disagreeing_frames": self.disagreeing[:20],
            "disagreeing_above_delta": self.disagreeing_above_delta[:20],
            "margin_quantiles": self.margin_quantiles, "method": self.method,
            "failures": list(self.failures),
        }

    def raise_if_failed(self) -> None:
        if self.failures:
            raise ExportError("deploy gate refused the deployment: " + "; ".join(self.failures))


# --------------------------------------------------------------------------- pieces


def classifier_jacobian(classifier: Any, x: np.ndarray) -> np.ndarray:
    """d logits / d x of a ReLU MLP (NumpyClassifier) at each row of x: (N, C, D)."""
    h = np.asarray(x, np.float64)
    jac = None
    for w, b, relu in zip(classifier.weights, classifier.biases, classifier.relu, strict=True):
        h = h @ w + b
        layer = np.broadcast_to(np.asarray(w, np.float64).T, (len(h),) + w.T.shape)
        if relu:
            layer = layer * (h > 0)[:, :, None]
            h = np.maximum(h, 0.0)
        jac = layer if jac is None else np.einsum("noi,nid->nod", layer, jac)
    return jac


def quantization_logit_error(reference: GateReference, levels: Sequence[int],
                             live: np.ndarray, float_pooled: np.ndarray,
                             float_top: np.ndarray) -> np.ndarray:
    """eps_i per frame: the most (first order) the margin between the float top class and any
    other moves when every pooled feature is off by one quantization step of its view's level
    plus its clipping distance outside that level's int8 range."""
    V = len(levels)
    n = float_pooled.shape[0]
    lv = np.asarray(levels, np.int64)
    scale = reference.evaluator.scales[lv].astype(np.float64)
    zp = reference.evaluator.zero_points[lv].astype(np.float64)
    lo, hi = scale * (-128 - zp), scale * (127 - zp)
    feats = np.stack([reference.float_features[int(lv[v])][:, v] for v in range(V)], 1)
    clip = np.maximum(np.maximum(feats - hi[None, :, None], lo[None, :, None] - feats), 0.0)
    err = (clip + scale[None, :, None]).astype(np.float32)
    # Pooling the per-view bounds the same way bounds the pooled error (max, mean, weighted).
    pooled_err, _ = _core.pool(np.ascontiguousarray(err), live, reference.weights,
                               mode=reference.mode)
    eps = np.empty(n)
    for start in range(0, n, JACOBIAN_BATCH):  # (frames, classes, D) per batch bounds memory
        stop = min(n, start + JACOBIAN_BATCH)
        jac = classifier_jacobian(reference.classifier, float_pooled[start:stop])
        diff = jac[np.arange(stop - start), float_top[start:stop]][:, None, :] - jac
        bound = np.abs(diff) @ pooled_err[start:stop, :, None].astype(np.float64)
        eps[start:stop] = np.max(bound, axis=(1, 2))
    return eps


def _quantiles(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {}
    return {("min" if q == 0 else "max" if q == 1 else f"q{round(q * 100):02d}"):
            float(np.quantile(x, q)) for q in QUANTILES}


def _frames(idx: np.ndarray, margins: np.ndarray, delta: np.ndarray) -> str:
    shown = ", ".join(f"{int(i)} (margin {margins[i]:.3g} > delta {delta[i]:.3g})"
                      for i in idx[:LISTED])
    return shown + (f", ... {len(idx) - LISTED} more" if len(idx) > LISTED else "")


def _where(d: DeployedView) -> str:
    return f"device {d.device} (view {d.view}, level {d.level_index})"


# --------------------------------------------------------------------------- the gate


def _float_exactness(d: DeployedView, ref: GateReference, entry: dict[str, Any],
                     failures: list[str]) -> None:
    """A float view's features against the ladder's cached features of its variant."""
    ev = ref.evaluator
    variant = ev.variants[d.view] if ev.variants is not None else "int8"
    if ev.float_views is None or not ev.float_views[d.view]:
        entry["exact"] = False
        failures.append(f"exactness: {_where(d)}: sends float features, the plan's device "
                        f"runs {variant}")
        return
    want = ev.mixed[d.level_index, :, d.view]
    got = np.asarray(d.features.features, np.float32)
    if got.shape != want.shape:
        entry["exact"] = False
        failures.append(f"exactness: {_where(d)}: features {got.shape} vs the ladder's "
                        f"{want.shape}")
        return
    differ = got != want
    if differ.any():
        entry["exact"] = False
        failures.append(
            f"exactness: {_where(d)}: {variant} features differ from the ladder's cached "
            f"{variant} features of level {d.level_index} at {int(np.count_nonzero(differ))} "
            f"of {differ.size} values (up to {float(np.max(np.abs(got - want))):.3g})")


def _device_exactness(views: Sequence[DeployedView], ref: GateReference,
                      failures: list[str]) -> dict[str, Any]:
    ev = ref.evaluator
    modelled = ev.variants is not None
    devices: dict[str, Any] = {}
    for d in views:
        f = d.features
        entry = devices.setdefault(d.device, {"int8": f.quantized, "views": [], "exact": True})
        entry["views"].append(d.view)
        if modelled:
            entry["variant"] = ev.variants[d.view]
        if _fallback(ev, d.view) or (not f.quantized and not modelled):
            # The ladder does not cache what this device computes (float, or TFLite Micro's
            # int8): not checkable here, said in the result's `fallback`.
            entry["exact"] = None
            continue
        if not f.quantized:
            _float_exactness(d, ref, entry, failures)
            continue
        if modelled and ev.float_views[d.view]:
            entry["exact"] = False
            failures.append(f"exactness: {_where(d)}: sends int8 features, the plan's device "
                            f"runs {ev.variants[d.view]}")
            continue
        want = ev.features[d.level_index, :, d.view]
        s, zp = np.float32(ev.scales[d.level_index]), int(ev.zero_points[d.level_index])
        if np.float32(f.scale) != s or int(f.zero_point) != zp:
            entry["exact"] = False
            failures.append(
                f"exactness: {_where(d)}: output scale {float(f.scale):.6g} / zero point "
                f"{int(f.zero_point)}, the ladder's level {d.level_index} has {float(s):.6g} / "
                f"{zp}")
            continue
        if f.features.shape != want.shape:
            entry["exact"] = False
            failures.append(f"exactness: {_where(d)}: features {f.features.shape} vs the "
                            f"ladder's {want.shape}")
            continue
        diff = np.abs(f.features.astype(np.int16) - want.astype(np.int16))
        if diff.any():
            entry["exact"] = False
            failures.append(
                f"exactness: {_where(d)}: int8 features differ from the ladder's cached "
                f"{ev.variants[d.view] if modelled else 'int8'} features of level "
                f"{d.level_index} at {int(np.count_nonzero(diff))} of "
                f"{diff.size} values (up to {int(diff.max())} steps)")
    return devices


def _fallback(ev: Any, view: int) -> bool:
    """Whether the evaluator reads a view as int8 because its ladder lacks the variant."""
    return view in ev.fallback


def run_gate(views: Sequence[DeployedView], ref: GateReference, head_logits: Any,
             shipped_classifier: Any = None) -> GateResult:
    """Judge a deployed system. `head_logits(pooled) -> logits` runs the shipped
    `head.tflite`; `shipped_classifier` is the shipped `classifier.npz` (NumpyClassifier)."""
    from slimedge.model.head import classify_pooled

    V = ref.evaluator.n_views
    n = int(ref.labels.shape[0])
    by_view: dict[int, DeployedView] = {}
    for d in views:
        if d.view in by_view:
            raise ExportError(f"gate: view {d.view} given twice ({by_view[d.view].device}, "
                              f"{d.device})")
        by_view[d.view] = d
    if not by_view:
        raise ExportError("gate: no deployed view")
    levels = [by_view[v].level_index if v in by_view else 0 for v in range(V)]
    live = np.array([v in by_view for v in range(V)], bool)
    failures: list[str] = []

    # 1. Exactness.
    devices = _device_exactness(views, ref, failures)
    deployed = [by_view[v].features if v in by_view else None for v in range(V)]
    pooled, empty = pool_views(deployed, ref.mode, ref.weights)
    logits = np.asarray(head_logits(pooled), np.float32)
    ladder_logits = ref.classifier.logits(pooled)
    pred = np.argmax(logits, axis=1)
    pred[empty] = -1
    head_err = float(np.max(np.abs(logits - ladder_logits))) if n else 0.0
    head_tol = LOGIT_RTOL * max(1.0, float(np.max(np.abs(ladder_logits))) if n else 1.0)
    head_ok = head_err <= head_tol
    if not head_ok:
        failures.append(f"exactness: aggregator head.tflite: logits differ from the ladder's "
                        f"classifier by up to {head_err:.3g} (float rounding allows "
                        f"{head_tol:.2g}): not this model's head")
    npz_ok = shipped_classifier is None or _same_classifier(shipped_classifier, ref.classifier)
    if not npz_ok:
        failures.append("exactness: aggregator classifier.npz is not the ladder's classifier")
    ev = ref.evaluator
    modelled = all(not _fallback(ev, v) and (by_view[v].features.quantized
                                               or ev.variants is not None) for v in by_view)
    if modelled:
        want = ev.predictions(levels, live, ref.weights)
        reference_name = "evaluator"
    else:
        want = ref.classifier.predict(pooled)
        want[empty] = -1
        # A view whose variant the ladder does not cache: not the evaluator's case.
        reference_name = ("ladder classifier (the ladder does not cache every device's "
                          "features)")
    notes = list(ev.fallback.values())
    differ = np.flatnonzero(pred != want)
    if differ.size:
        failures.append(f"exactness: system predictions differ from the {reference_name}'s at "
                        f"{differ.size} of {n} test frames (frames "
                        f"{', '.join(str(int(i)) for i in differ[:LISTED])})")
    exactness = {"ok": bool(differ.size == 0 and head_ok and npz_ok
                            and all(e["exact"] is not False for e in devices.values())),
                 "frames": n, "equal_frames": int(n - differ.size), "reference": reference_name,
                 "fallback": notes,
                 "devices": devices, "head_max_abs_logit": head_err}

    # 2. Int8 vs float, frame by frame.
    float_views = [ViewFeatures(ref.float_features[levels[v]][:, v]) if live[v] else None
                   for v in range(V)]
    float_pooled, float_empty = pool_views(float_views, ref.mode, ref.weights)
    float_logits = classify_pooled(ref.float_head, float_pooled)
    float_pred = np.argmax(float_logits, axis=1)
    float_pred[float_empty] = -1
    margins = top2_margins(float_logits)
    eps = quantization_logit_error(ref, levels, live, float_pooled, np.argmax(float_logits, 1))
    delta = DELTA_STEPS * eps
    disagree = pred != float_pred
    decided = margins > delta
    bad = np.flatnonzero(disagree & decided)
    if bad.size:
        failures.append(
            f"int8 vs float: {bad.size} test frame(s) with a float top-2 margin above delta "
            f"disagree: {_frames(bad, margins, delta)}; devices' feature error against float, "
            "largest: " + _worst_devices(views, ref))

    # 3. Int8 vs float, accuracy.
    counts = PairedCounts.of(float_pred == ref.labels, pred == ref.labels)
    loss, lower, upper = paired_difference_interval(counts, CONFIDENCE)
    if lower > TOLERANCE:
        failures.append(
            f"int8 vs float: test accuracy {np.mean(pred == ref.labels):.2%} against float "
            f"{np.mean(float_pred == ref.labels):.2%} on {n} frames: a loss of {loss:.2%}, "
            f"one-sided {CONFIDENCE:.0%} lower bound {lower:.2%} above the tolerance "
            f"{TOLERANCE:.2%}; devices' feature error against float, largest: "
            + _worst_devices(views, ref))
    return GateResult(
        exactness=exactness,
        float_accuracy=float(np.mean(float_pred == ref.labels)),
        int8_accuracy=float(np.mean(pred == ref.labels)),
        accuracy_loss=float(loss), accuracy_interval=[float(lower), float(upper)],
        tolerance=TOLERANCE, confidence=CONFIDENCE,
        delta={"steps": DELTA_STEPS, "rule": "per frame: steps x the margin's one-step "
               "logit quantization error (first order, with clipping)",
               "quantiles": _quantiles(delta)},
        near_ties=int(np.sum(~decided)), frames=n, agreement=float(np.mean(~disagree)),
        disagreeing=[int(i) for i in np.flatnonzero(disagree)],
        disagreeing_above_delta=[int(i) for i in bad],
        margin_quantiles=_quantiles(margins),
        failures=failures,
        predictions=pred, float_predictions=float_pred, float_logits=float_logits,
    )


def _same_classifier(a: Any, b: Any) -> bool:
    return (len(a.weights) == len(b.weights) and list(a.relu) == list(b.relu)
            and all(x.shape == y.shape and np.array_equal(x, y)
                    for x, y in zip([*a.weights, *a.biases], [*b.weights, *b.biases],
                                    strict=True)))


def _worst_devices(views: Sequence[DeployedView], ref: GateReference, worst: int = 3) -> str:
    """Devices ranked by their features' error against float (relative to full scale)."""
    per: dict[str, tuple[list[ViewFeatures], list[np.ndarray]]] = {}
    for d in views:
        got, want = per.setdefault(d.device, ([], []))
        got.append(d.features)
        want.append(ref.float_features[d.level_index][:, d.view])
    errors = {dev: feature_error(g, w) for dev, (g, w) in per.items()}
    ranked = sorted(errors.items(), key=lambda kv: kv[1].max_rel, reverse=True)[:worst]
    return ", ".join(f"{dev} (max {e.max_rel:.2%}, mean {e.mean_rel:.2%} of full scale)"
                     for dev, e in ranked)


def gate_deployment(deploy_dir: str | Path, ladder_dir: str | Path,
                    dataset: Any = None) -> GateResult:
    """The gate over a deployment directory as it stands: each device's artifact (from the
    manifest) run in LiteRT on the test frames of the views head.json gives it, the shipped
    aggregator head, against the ladder it was exported from (and its dataset: given, or the
    ladder's sibling `dataset`)."""
    import json

    import keras

    from slimedge.export.aggregator_files import AGGREGATOR_DIR, head_logits
    from slimedge.export.artifacts import run_views
    from slimedge.export.inputs import load_checked_dataset
    from slimedge.export.manifest import MANIFEST_NAME, MCU_RUNTIME, DeploymentManifest
    from slimedge.ladder.classifier import NumpyClassifier
    from slimedge.ladder.store import INT8, feature_variant, level_dir, read_manifest
    from slimedge.model.head import load_head
    from slimedge.model.mvcnn import branch_features

    root, ladder_dir = Path(deploy_dir), Path(ladder_dir)
    manifest = DeploymentManifest.from_json((root / MANIFEST_NAME).read_bytes(),
                                            source=str(root / MANIFEST_NAME))
    head_path = root / AGGREGATOR_DIR / "head.json"
    info = json.loads(head_path.read_text())
    ds, _ = load_checked_dataset(dataset, ladder_dir, read_manifest(ladder_dir))
    images = np.asarray(ds.images[ds.indices("test")])
    views = []
    variants = [INT8] * len(info["view_device"])
    for v, dev in enumerate(info["view_device"]):
        if dev is None:
            continue
        entry = manifest.device(dev)
        if v not in entry.views:
            raise ExportError(f"{head_path}: view_device[{v}] is {dev}, whose manifest entry "
                              f"runs views {list(entry.views)}")
        mcu = entry.runtime == MCU_RUNTIME
        variants[v] = feature_variant(entry.format, mcu)
        feats = run_views(root / entry.artifact, images, [v],
                          tflm_arena=entry.memory_budget_bytes if mcu else None)[0]
        views.append(DeployedView(v, dev, entry.level_index, feats))
    float_features = {}
    for j in sorted({d.level_index for d in views}):
        branch = keras.saving.load_model(level_dir(ladder_dir, j) / "branch.keras",
                                         compile=False)
        float_features[j] = branch_features(branch, images)
    weights = info.get("view_weights")
    ref = GateReference.from_ladder(ladder_dir, float_features,
                                    load_head(ladder_dir / "head.keras"),
                                    None if weights is None else np.asarray(weights, np.float32),
                                    variants=variants)
    agg = root / AGGREGATOR_DIR
    return run_gate(views, ref, lambda pooled: head_logits(agg / "head.tflite", pooled),
                    NumpyClassifier.load(agg / "classifier.npz"))
