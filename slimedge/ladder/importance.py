"""How much each view matters, measured from cached features (no surrogate):

- leave-one-out: accuracy drop when only that view is dead;
- exact Shapley values of the views as players, v(S) = accuracy with live set S
  (all 2^V live sets; v(∅) = 0: no view, no prediction);
- the published ratio |Δdrop| / Δsingle, normalized to sum 1 (Δsingle = full accuracy minus the
  accuracy of that view alone), for comparison with arXiv 2512.22136.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from slimedge.failure_sets import live_masks
from slimedge.ladder.evaluator import Evaluator
from slimedge.ladder.store import LadderError

MAX_EXACT_VIEWS = 16  # 65,536 live sets


def subset_values(ev: Evaluator, levels: Sequence[int]) -> np.ndarray:
    """v[mask] for every live-set bitmask (bit v set = view v live)."""
    V = ev.n_views
    if V > MAX_EXACT_VIEWS:
        raise LadderError(f"exact Shapley values need 2^V evaluations; V = {V} exceeds "
                          f"{MAX_EXACT_VIEWS}")
    live = ~live_masks(np.arange(1 << V), V)  # bit v of the code set = view v live
    values = np.zeros(1 << V)
    values[1:] = ev.accuracy_over_masks(levels, live[1:])
    return values


def shapley_from_values(values: np.ndarray, V: int) -> np.ndarray:
    """Exact Shapley values from v over all 2^V coalitions (bitmask-indexed)."""
    codes = np.arange(1 << V)
    sizes = np.array([bin(c).count("1") for c in codes])
    # weight of coalition S (not containing i) = |S|! (V - |S| - 1)! / V!
    w_by_size = np.array([math.factorial(s) * math.factorial(V - s - 1) / math.factorial(V)
                          for s in range(V)])
    phi = np.zeros(V)
    for i in range(V):
        bit = 1 << i
        without = codes[(codes & bit) == 0]
        phi[i] = np.sum(w_by_size[sizes[without]] * (values[without | bit] - values[without]))
    return phi


def view_importance(ev: Evaluator, levels: Sequence[int] | None = None) -> dict[str, Any]:
    V = ev.n_views
    lv = [0] * V if levels is None else list(levels)
    values = subset_values(ev, lv)
    full_code = (1 << V) - 1
    full = float(values[full_code])
    loo = [full - float(values[full_code & ~(1 << i)]) for i in range(V)]
    single = [float(values[1 << i]) for i in range(V)]
    delta_single = np.array([full - s for s in single])
    raw = np.abs(np.array(loo)) / np.where(delta_single > 0, delta_single, np.nan)
    raw = np.nan_to_num(raw, nan=0.0)
    ratio = (raw / raw.sum()).tolist() if raw.sum() > 0 else [0.0] * V
    shapley = shapley_from_values(values, V)
    return {
        "levels": lv,
        "full_accuracy": full,
        "single_view_accuracy": single,
        "leave_one_out": loo,
        "shapley": shapley.tolist(),
        "shapley_sum": float(shapley.sum()),  # efficiency: equals v(all) - v(∅) = full
        "ratio": ratio,
        "evaluations": (1 << V) - 1,
    }
