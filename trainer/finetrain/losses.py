"""The training objective, term by term; each weight is a config value (`loss.*`).

With fused video embedding v_b, positive class embeddings p_c, negative ones n_c (all unit length),
s(a, b) the cosine similarity, tau = loss.logit_scale and y_b the true class:

  L_ce   = CE(tau * s(v_b, p_c) over c, y_b)                                   (classification)
  L_neg  = mean_b softplus(tau * (s(v_b, n_{y_b}) - s(v_b, p_{y_b})))           (negative descriptor)
           the true class's "no {label}" text must score below its positive text for the clip;
           the gradient pushes v_b away from n_{y_b} (and n_{y_b} away from v_b).
  L_desc = 1/2 [CE(tau * V D^T, I) + CE(tau * D V^T, I)]                       (video-description)
           symmetric InfoNCE over the clips of the batch that have a description, between the
           visual-only fusion V (descriptions left out, so the pairing is not trivial) and the
           description embeddings D. Skipped when fewer than two clips of the batch have one.

  L = loss.ce * L_ce + loss.negative * L_neg + loss.description * L_desc
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """Symmetric InfoNCE between row-aligned unit embeddings a and b."""
    logits = scale * a @ b.t()
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def compute_loss(out: dict, labels: torch.Tensor, cfg) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts (floats, for logging). `cfg` is the `loss` config section."""
    tau = cfg.logit_scale
    sim_pos, sim_neg = out["sim_pos"], out["sim_neg"]
    parts: dict[str, torch.Tensor] = {}
    total = sim_pos.new_zeros(())
    if cfg.ce:
        parts["ce"] = F.cross_entropy(tau * sim_pos, labels, label_smoothing=cfg.label_smoothing)
        total = total + cfg.ce * parts["ce"]
    if cfg.negative:
        idx = labels.view(-1, 1)
        gap = sim_neg.gather(1, idx) - sim_pos.gather(1, idx)
        parts["neg"] = F.softplus(tau * gap).mean()
        total = total + cfg.negative * parts["neg"]
    if cfg.description and out.get("visual") is not None:
        has = out["has_description"]
        if int(has.sum()) >= 2:
            parts["desc"] = contrastive(out["visual"][has], out["description"][has], tau)
            total = total + cfg.description * parts["desc"]
    return total, {k: float(v.detach()) for k, v in parts.items()}
