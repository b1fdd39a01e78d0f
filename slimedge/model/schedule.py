"""Learning-rate schedules shared by the joint training and the head failout stage."""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine")


def scheduled_lr(epoch: int, epochs: int, learning_rate: float, schedule: str,
                 final_fraction: float) -> float:
    """Learning rate of (0-based) ``epoch`` of ``epochs``. Cosine decays from
    ``learning_rate`` to ``learning_rate * final_fraction`` at the last epoch: late epochs'
    small steps keep the validation accuracy from swinging between epochs."""
    if schedule == "constant" or epochs <= 1:
        return float(learning_rate)
    t = epoch / (epochs - 1)
    low = learning_rate * final_fraction
    return float(low + (learning_rate - low) * 0.5 * (1.0 + math.cos(math.pi * t)))
