"""FineCLIPER: a frozen CLIP with per-stream adapters, temporal heads, learned fusion and PN label texts.

Video side. Each visual stream (frames; parsing overlay; landmark dots) runs the one frozen CLIP image
encoder with its own adapter set, frame by frame. A stream's frame embeddings e_1..e_T (L2-normalised)
go through a temporal transformer with a class token; the stream embedding is

    v_s = mean_t(e_t) + W_s cls_s          (W_s zero-initialised: at init v_s is mean-pooled CLIP)

Blendshape coefficients (52 per frame) go through a small MLP into the same space and the same kind of
temporal head. The description of a clip (high level) is encoded by CLIP's text encoder with the
description adapter set and joins as one more stream where the clip has one.

Fusion. v = normalise(sum_s w_s normalise(v_s)), w = softmax(a) over the streams present for the
clip, with learned logits a (zero at init: equal weights) or fixed weights from the config.

Text side. Class c has a positive text set (template + fine-grained descriptors, encoded with the
positive adapters and averaged: p_c) and a negative text ("... of no {label}", negative adapters: n_c).
Logits are logit_scale * (cos(v, p_c) - infer_negative * cos(v, n_c)); see `losses.py` for training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import adapters as A
from .backbone import create_clip
from .config import Config, ConfigError
from .data import finalize

VISUAL = ("frames", "parsing", "landmarks")
TEXT_SETS = ("positive", "negative", "description")


class TemporalHead(nn.Module):
    """Class token + positions + transformer over T frame embeddings; output = mean + W cls."""

    def __init__(self, dim: int, frames: int, layers: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, frames + 1, dim) * 0.02)
        heads = heads if dim % heads == 0 else 1
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,T,D) -> (B,D)
        b, t, _ = x.shape
        if t + 1 > self.pos.shape[1]:
            raise ValueError(f"{t} frames, but the temporal head was built for at most {self.pos.shape[1] - 1}")
        h = torch.cat([self.cls.expand(b, -1, -1), x], dim=1) + self.pos[:, : t + 1]
        h = self.encoder(h)
        return x.mean(dim=1) + self.out(h[:, 0])


class FineCLIPER(nn.Module):
    def __init__(self, cfg: Config, labels: tuple[str, ...], texts: dict[str, dict[str, list[str]]],
                 frames: int):
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.labels = tuple(labels)
        self.streams = tuple(m.streams)
        self.clip, self.tokenizer = create_clip(m.backbone, m.pretrained)
        dim = self._embed_dim()
        self.embed_dim = dim
        self.visual_sets = [s for s in self.streams if s in VISUAL]
        self.vswitch = A.inject(self.clip.visual.transformer, self.visual_sets, m.adapter_ratio, m.adapter_scale) \
            if self.visual_sets else None
        text_sets = ["positive", "negative"] + (["description"] if "description" in self.streams else [])
        self.tswitch = A.inject(self._text_transformer(), text_sets, m.adapter_ratio, m.adapter_scale) \
            if m.text_adapters else None
        self.heads = nn.ModuleDict({
            s: TemporalHead(dim, frames, m.temporal_layers, m.temporal_heads, m.temporal_mlp_ratio, m.temporal_dropout)
            for s in self.streams if s != "description"
        })
        if "blendshapes" in self.streams:
            self.blend_mlp = nn.Sequential(nn.Linear(52, m.blendshape_hidden), nn.GELU(),
                                           nn.Linear(m.blendshape_hidden, dim))
        if m.fusion == "learned":
            self.fusion_logits = nn.Parameter(torch.zeros(len(self.streams)))
        else:
            w = torch.tensor(m.fusion_weights or [1.0] * len(self.streams), dtype=torch.float32)
            if (w < 0).any() or w.sum() <= 0:
                raise ConfigError(f"model.fusion_weights must be non-negative with a positive sum, got {w.tolist()}")
            self.register_buffer("fusion_fixed", w / w.sum(), persistent=False)
        pos, pos_cls, neg, neg_cls = [], [], [], []
        for c, name in enumerate(self.labels):
            pos += texts[name]["positive"]
            pos_cls += [c] * len(texts[name]["positive"])
            neg += texts[name]["negative"]
            neg_cls += [c] * len(texts[name]["negative"])
        self.register_buffer("pos_tokens", self.tokenizer(pos), persistent=False)
        self.register_buffer("pos_class", torch.tensor(pos_cls), persistent=False)
        self.register_buffer("neg_tokens", self.tokenizer(neg), persistent=False)
        self.register_buffer("neg_class", torch.tensor(neg_cls), persistent=False)
        self._label_cache = None

    # --- towers -------------------------------------------------------------------------------------
    def _embed_dim(self) -> int:
        with torch.no_grad():
            return int(self.clip.encode_text(self.tokenizer(["a"])).shape[-1])

    def _text_transformer(self) -> nn.Module:
        return self.clip.text.transformer if hasattr(self.clip, "text") else self.clip.transformer

    @property
    def image_size(self) -> int:
        size = self.clip.visual.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    def encode_image(self, images: torch.Tensor, adapter: str | None) -> torch.Tensor:
        """CLIP image features of (N,3,H,W) through one adapter set (None: plain CLIP)."""
        if self.vswitch is None:
            return self.clip.encode_image(images)
        with self.vswitch.use(adapter):
            return self.clip.encode_image(images)

    def encode_text(self, tokens: torch.Tensor, adapter: str | None) -> torch.Tensor:
        if self.tswitch is None:
            return self.clip.encode_text(tokens)
        with self.tswitch.use(adapter):
            return self.clip.encode_text(tokens)

    # --- labels -------------------------------------------------------------------------------------
    def _pool(self, feats: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        feats = F.normalize(feats.float(), dim=-1)
        out = torch.zeros(len(self.labels), feats.shape[-1], device=feats.device, dtype=feats.dtype)
        out.index_add_(0, cls, feats)
        return F.normalize(out, dim=-1)

    def label_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive, negative) class embeddings, each (C, D) and unit length. Cached in eval mode."""
        if not self.training and self._label_cache is not None:
            return self._label_cache
        pos = self._pool(self.encode_text(self.pos_tokens, "positive"), self.pos_class)
        neg = self._pool(self.encode_text(self.neg_tokens, "negative"), self.neg_class)
        if not self.training:
            self._label_cache = (pos, neg)
        return pos, neg

    def train(self, mode: bool = True):
        self._label_cache = None
        super().train(mode)
        self.clip.eval()  # the frozen backbone never switches to training behaviour
        return self

    # --- video --------------------------------------------------------------------------------------
    def stream_embeddings(self, batch: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per stream: unit (B,D) embedding and a (B,) presence mask. uint8 images are finalised here."""
        batch = finalize(batch)
        embs, masks = [], []
        for s in self.streams:
            if s in VISUAL:
                x = batch[s]
                b, t = x.shape[:2]
                f = self.encode_image(x.flatten(0, 1), s).float().view(b, t, -1)
                v = self.heads[s](F.normalize(f, dim=-1))
                present = torch.ones(b, dtype=torch.bool, device=x.device)
            elif s == "blendshapes":
                x = batch["blendshapes"].float()
                v = self.heads[s](F.normalize(self.blend_mlp(x), dim=-1))
                present = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
            elif "description" in batch:
                present = batch["has_description"].bool()
                v = self.encode_text(batch["description"], "description").float()
            else:  # clips without descriptions (e.g. a new video): the stream is left out of the fusion
                ref = next(v for v in batch.values() if torch.is_tensor(v))
                v = torch.zeros(ref.shape[0], self.embed_dim, device=ref.device)
                present = torch.zeros(ref.shape[0], dtype=torch.bool, device=ref.device)
            embs.append(F.normalize(v, dim=-1))
            masks.append(present)
        return embs, masks

    def fuse(self, embs: list[torch.Tensor], masks: list[torch.Tensor], only: tuple[str, ...] | None = None):
        """Weighted sum of unit stream embeddings over the streams present per clip, renormalised."""
        if self.cfg.model.fusion == "learned":
            logits = self.fusion_logits
        else:
            logits = torch.log(self.fusion_fixed.clamp_min(1e-12))
        mask = torch.stack(masks, dim=1)  # (B,S)
        if only is not None:
            keep = torch.tensor([s in only for s in self.streams], device=mask.device)
            mask = mask & keep
        w = torch.softmax(logits.float().expand(mask.shape[0], -1).masked_fill(~mask, float("-inf")), dim=1)
        w = torch.nan_to_num(w, nan=0.0)
        fused = (torch.stack(embs, dim=1) * w.unsqueeze(-1)).sum(dim=1)
        return F.normalize(fused, dim=-1)

    def fusion_weights(self) -> dict[str, float]:
        logits = self.fusion_logits if self.cfg.model.fusion == "learned" else torch.log(self.fusion_fixed)
        return dict(zip(self.streams, torch.softmax(logits.detach().float(), 0).tolist(), strict=True))

    def forward(self, batch: dict) -> dict:
        """`batch` as the DataLoader gives it (uint8 images are finalised on the model's device)."""
        embs, masks = self.stream_embeddings(batch)
        video = self.fuse(embs, masks)
        pos, neg = self.label_embeddings()
        scale = self.cfg.loss.logit_scale
        sim_pos = video @ pos.t()
        sim_neg = video @ neg.t()
        out = {"video": video, "sim_pos": sim_pos, "sim_neg": sim_neg,
               "logits": scale * (sim_pos - self.cfg.loss.infer_negative * sim_neg)}
        if "description" in self.streams:
            i = self.streams.index("description")
            visual_only = tuple(s for s in self.streams if s != "description")
            out["visual"] = self.fuse(embs, masks, only=visual_only) if visual_only else None
            out["description"] = embs[i]
            out["has_description"] = masks[i]
        return out


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the tuned tensors: what a checkpoint holds."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def build_model(cfg: Config, labels: tuple[str, ...], frames: int) -> FineCLIPER:
    """The model for a label set; descriptors come from prompts/ (or model.descriptors)."""
    import fineprompts

    try:
        texts = fineprompts.load_descriptors(labels, cfg.model.descriptors)
    except KeyError as exc:
        raise ConfigError(exc.args[0]) from None
    except OSError as exc:
        raise ConfigError(f"model.descriptors: cannot read {cfg.model.descriptors} ({exc.strerror})") from None
    return FineCLIPER(cfg, labels, texts, frames)
