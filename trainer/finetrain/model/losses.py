"""The training objective, term by term; each weight is a config value (`loss.*`).

With fused video embedding v_b, positive class embeddings p_c, negative ones n_c (all unit length),
s(a, b) the cosine similarity, tau = loss.logit_scale and y_b the true class:

  L_ce   = CE(tau * s(v_b, p_c) over c, y_b)                                   (classification)
  L_neg  = CE(-tau * s(v_b, n_c) over c, y_b)                                  (negative descriptors)
           among the "no {label}" texts, the true class's must be the *least* similar to the clip
           (the paper's Fig. 3: "no Surprise" scores lowest on a surprised face). Only differences
           between classes count: moving every negative text away from every video by the same amount
           leaves the term at log C, so it cannot be met by the negative adapters alone; it needs a video
           embedding that tells the classes apart and negatives that are class-specific.
  L_desc = 1/2 [CE(tau * V D^T, I) + CE(tau * D V^T, I)]                       (video-description)
           symmetric InfoNCE over the clips of the batch that have a description, between the
           visual-only fusion V (descriptions left out, so the pairing is not trivial) and the
           description embeddings D. Skipped when fewer than two clips of the batch have one.

  L = loss.ce * L_ce + loss.negative * L_neg + loss.description * L_desc

Zero-shot training (`finetrain.train.zeroshot`) has one term instead, between v_b and the embedding t_b of the
clip's own text (caption or description), with targets Y spread over the clips of identical text:

  L_align = 1/2 [CE(tau * V T^T, Y) + CE(tau * T V^T, Y^T)]                   (`alignment_loss`)

Everything here is computed in float32 with autocast off, whatever the caller's context.
At prediction the negatives enter as tau * (s(v, p_c) - w * s(v, n_c)), w chosen on validation
(`metrics.choose_negative_weight`).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F


def float32_region(device: torch.device):
    """Autocast off on `device`, so what runs inside stays float32 (a no-op where autocast does not exist,
    e.g. the meta device that counts parameters and FLOPs)."""
    return torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda", "xpu") else nullcontext()


def contrastive(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """Symmetric InfoNCE between row-aligned unit embeddings a and b (float32)."""
    with float32_region(a.device):
        logits = scale * a.float() @ b.float().t()
        target = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def negative_loss(sim_neg: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """CE over -tau * s(v, n_c): the true class's negative text must be the least similar one."""
    with float32_region(sim_neg.device):
        return F.cross_entropy(-scale * sim_neg.float(), labels)


def compute_loss(out: dict, labels: torch.Tensor, cfg) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts (floats, for logging). `cfg` is the `loss` config section."""
    tau = cfg.logit_scale
    sim_pos = out["sim_pos"]
    parts: dict[str, torch.Tensor] = {}
    with float32_region(sim_pos.device):
        total = sim_pos.new_zeros((), dtype=torch.float32)
        if cfg.ce:
            parts["ce"] = F.cross_entropy(tau * sim_pos.float(), labels, label_smoothing=cfg.label_smoothing)
            total = total + cfg.ce * parts["ce"]
        if cfg.negative and out.get("sim_neg") is not None:
            parts["neg"] = negative_loss(out["sim_neg"], labels, tau)
            total = total + cfg.negative * parts["neg"]
        if cfg.description and out.get("visual") is not None:
            has = out["has_description"]
            if int(has.sum()) >= 2:
                parts["desc"] = contrastive(out["visual"][has], out["description"][has], tau)
                total = total + cfg.description * parts["desc"]
    return total, {k: float(v.detach()) for k, v in parts.items()}


def text_targets(tokens: torch.Tensor) -> torch.Tensor:
    """(B,B) row-stochastic targets: clips with identical text share the probability mass (captions repeat,
    and a duplicate is not a negative)."""
    same = (tokens[:, None, :] == tokens[None, :, :]).all(dim=-1).float()
    return same / same.sum(dim=1, keepdim=True)


def alignment_loss(video: torch.Tensor, text: torch.Tensor, targets: torch.Tensor, scale: float) -> torch.Tensor:
    """Symmetric InfoNCE between unit video and text embeddings with soft targets (float32)."""
    with float32_region(video.device):
        logits = scale * video.float() @ text.float().t()
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets.t()))
