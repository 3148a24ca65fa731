"""Tolerances for runs that differ only in float32 reduction order (DDP against one process), derived
from the arithmetic rather than measured on one CPU.

A gradient element is a nest of float32 sums, the longest over N terms; summing N terms in another
order changes the result by at most N * u relative (u = 2**-24, the unit roundoff; Higham, "Accuracy
and Stability of Numerical Algorithms", section 4.2). AdamW's update is scale-free in the gradient, so
that relative error reaches each step's update unchanged, and the optimiser steps add up: after S steps
a tensor (and a logged loss) may drift by S * N * u of its norm. A process that met only its own
negatives, or gradients summed instead of averaged, move the losses by percent from the second step on.
"""

from __future__ import annotations

import torch

UNIT_ROUNDOFF = 2.0 ** -24


def reduction_drift(steps: int, terms: int) -> float:
    """Relative drift bound after `steps` optimiser steps whose longest float32 sum has `terms` terms."""
    return steps * terms * UNIT_ROUNDOFF


def informative(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights without the attention key biases (the middle third of `in_proj_bias`): softmax is
    invariant to adding q.b_k to every logit of a row, so their true gradient is exactly zero and what
    AdamW makes of them is rounding noise scaled to the learning rate, different in any two runs."""
    out = {}
    for name, w in weights.items():
        if name.endswith("in_proj_bias"):
            third = w.shape[0] // 3
            w = torch.cat([w[:third], w[2 * third:]])
        out[name] = w
    return out


def relative_drift(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[str, float]:
    """(tensor, ||a - b|| / ||a||) of the tensor that drifted most, over the informative weights."""
    a, b = informative(a), informative(b)
    assert set(a) == set(b)
    drift = {k: float((a[k] - b[k]).norm() / a[k].norm()) for k in a if float(a[k].norm()) > 0}
    worst = max(drift, key=drift.get)
    return worst, drift[worst]
