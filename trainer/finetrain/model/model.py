"""FineCLIPER: a frozen CLIP with per-stream adapters, temporal heads, learned fusion and PN label texts.

Video side. Each visual stream (frames; parsing overlay; landmark dots) runs the one frozen CLIP image
encoder with its own adapter set, frame by frame. A stream's frame embeddings e_1..e_T (L2-normalised)
go through a temporal transformer with a class token; the stream embedding is

    v_s = mean_t(e_t) + W_s cls_s          (W_s zero-initialised: at init v_s is mean-pooled CLIP)

Blendshape coefficients (52 per frame) go through a small MLP into the same space and the same kind of
temporal head. The description of a clip (high level) is encoded by CLIP's text encoder with the
description adapter set and joins as one more stream where the clip has one.

With `model.shared_temporal_head` the visual streams share one head (the paper's budget, see
`variant_parameters`); otherwise each stream has its own.

Fusion. v = normalise(sum_s w_s normalise(v_s)), w = softmax(a) over the streams present for the
clip, with learned logits a (zero at init: equal weights) or fixed weights from the config.

Text side. Class c has a positive text set (template + fine-grained descriptors, encoded with the
positive adapters and averaged: p_c) and, when the negative-descriptor loss is on, a negative text
("... of no {label}", negative adapters: n_c). Logits are logit_scale * (cos(v, p_c) - infer_negative *
cos(v, n_c)); see `losses.py` for training. Similarities, logits and losses are float32 whatever the
autocast around them: in bf16 a cosine near 0.25 resolves to about 0.002 and a logit near 25 to 0.125.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, ConfigError
from ..data.transforms import VISUAL_STREAMS, finalize, needs_finalize
from . import adapters
from .backbone import create_clip
from .losses import float32_region

VISUAL = VISUAL_STREAMS  # the image streams: each runs the CLIP image tower with its own adapter set
MIDDLE = ("parsing", "landmarks")
TEXT_SETS = ("positive", "negative", "description")
PAPER_STREAMS = ("frames", "parsing", "landmarks", "description")  # blendshapes are our addition


def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,M) cosine similarities of the rows of a and b, in float32 whatever autocast is active."""
    with float32_region(a.device):
        return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).t()


def text_adapter_sets(cfg: Config) -> list[str]:
    """Adapter sets of the text tower: positive always, negative when its loss trains it, description
    when that stream is on. An untrained set would only be dead weight (and unused under DDP)."""
    return ["positive"] + (["negative"] if cfg.loss.negative > 0 else []) + \
        (["description"] if "description" in cfg.model.streams else [])


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

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # (B,T,D) -> (B,D)
        """`mask` (B,T) bool: frames to use (others neither attended to nor averaged); None: all."""
        b, t, _ = x.shape
        if t + 1 > self.pos.shape[1]:
            raise ValueError(f"{t} frames, but the temporal head was built for at most {self.pos.shape[1] - 1}")
        h = torch.cat([self.cls.expand(b, -1, -1), x], dim=1) + self.pos[:, : t + 1]
        if mask is None:
            return x.mean(dim=1) + self.out(self.encoder(h)[:, 0])
        mask = mask.to(x.device, torch.bool)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=x.device), ~mask], dim=1)  # cls always kept
        h = self.encoder(h, src_key_padding_mask=pad)
        w = mask.to(x.dtype).unsqueeze(-1)
        return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0) + self.out(h[:, 0])


class FineCLIPER(nn.Module):
    def __init__(self, cfg: Config, labels: tuple[str, ...], texts: dict[str, dict[str, list[str]]],
                 frames: int):
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.labels = tuple(labels)
        self.streams = tuple(m.streams)
        self.clip, self.tokenizer = create_clip(m.backbone, m.pretrained, m.weights_origin)
        dim = self._embed_dim()
        self.embed_dim = dim
        self.visual_sets = [s for s in self.streams if s in VISUAL]
        middle = m.middle_adapter_ratio or m.adapter_ratio
        vratios = {s: middle if s in MIDDLE else m.adapter_ratio for s in self.visual_sets}
        self.vswitch = adapters.inject(self.clip.visual.transformer, vratios, m.adapter_scale) if self.visual_sets else None
        self.negatives = cfg.loss.negative > 0
        tratio = m.text_adapter_ratio or m.adapter_ratio
        self.tswitch = adapters.inject(self._text_transformer(), {s: tratio for s in text_adapter_sets(cfg)},
                                m.adapter_scale) if m.text_adapters else None
        self.set_grad_checkpointing(m.grad_checkpointing)

        def head() -> TemporalHead:
            return TemporalHead(dim, frames, m.temporal_layers, m.temporal_heads, m.temporal_mlp_ratio,
                                m.temporal_dropout)

        temporal = [s for s in self.streams if s != "description"]
        if m.shared_temporal_head and any(s in VISUAL for s in temporal):
            temporal = ["visual"] + [s for s in temporal if s not in VISUAL]
        self.heads = nn.ModuleDict({s: head() for s in temporal})
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
        if self.negatives:
            self.register_buffer("neg_tokens", self.tokenizer(neg), persistent=False)
            self.register_buffer("neg_class", torch.tensor(neg_cls), persistent=False)
        self._label_cache = None

    # --- towers -------------------------------------------------------------------------------------
    def _embed_dim(self) -> int:
        import open_clip

        return int(open_clip.get_model_config(self.cfg.model.backbone)["embed_dim"])

    def _head(self, stream: str) -> TemporalHead:
        return self.heads["visual"] if stream in VISUAL and "visual" in self.heads else self.heads[stream]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute adapted blocks in the backward pass; the adapter set is bound at forward time."""
        for switch in (self.vswitch, self.tswitch):
            if switch is not None:
                switch.checkpointing = bool(enable)

    def cast_frozen(self, dtype: torch.dtype) -> None:
        """Keep the frozen CLIP weights in `dtype` (bf16 halves their memory; run under bf16 autocast).
        Trainable tensors stay float32 for the optimiser."""
        for p in self.clip.parameters():
            if not p.requires_grad:
                p.data = p.data.to(dtype)

    def compile_towers(self, **kwargs) -> None:
        """torch.compile both CLIP transformers in place (parameter names unchanged, so checkpoints fit)."""
        self.clip.visual.transformer.compile(**kwargs)
        self._text_transformer().compile(**kwargs)

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
        with float32_region(feats.device):
            feats = F.normalize(feats.float(), dim=-1)
            out = torch.zeros(len(self.labels), feats.shape[-1], device=feats.device, dtype=feats.dtype)
            out.index_add_(0, cls, feats)
            return F.normalize(out, dim=-1)

    def label_embeddings(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(positive, negative) class embeddings, each (C, D), unit length, float32; negative is None
        without the negative descriptors. Cached in eval mode."""
        if not self.training and self._label_cache is not None:
            return self._label_cache
        pos = self._pool(self.encode_text(self.pos_tokens, "positive"), self.pos_class)
        neg = self._pool(self.encode_text(self.neg_tokens, "negative"), self.neg_class) if self.negatives else None
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
        if needs_finalize(batch):
            batch = finalize(batch)
        embs, masks = [], []
        for s in self.streams:
            if s in VISUAL:
                x = batch[s]
                b, t = x.shape[:2]
                f = self.encode_image(x.flatten(0, 1), s).float().view(b, t, -1)
                v = self._head(s)(F.normalize(f, dim=-1))
                present = torch.ones(b, dtype=torch.bool, device=x.device)
            elif s == "blendshapes":
                x = batch["blendshapes"].float()
                found = batch.get("blendshapes_mask")  # frames where the landmarker measured them
                v = self.heads[s](F.normalize(self.blend_mlp(x), dim=-1), found)
                present = torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if found is None else \
                    found.to(x.device, torch.bool).any(dim=1)
            elif "description" in batch:
                present = batch["has_description"].bool()
                v = self.encode_text(batch["description"], "description").float()
            else:  # clips without descriptions (e.g. a new video): the stream is left out of the fusion
                ref = next(v for v in batch.values() if torch.is_tensor(v))
                v = torch.zeros(ref.shape[0], self.embed_dim, device=ref.device)
                present = torch.zeros(ref.shape[0], dtype=torch.bool, device=ref.device)
            embs.append(F.normalize(v.float(), dim=-1))
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
        with float32_region(mask.device):
            w = torch.softmax(logits.float().expand(mask.shape[0], -1).masked_fill(~mask, float("-inf")), dim=1)
            w = torch.nan_to_num(w, nan=0.0)
            fused = (torch.stack([e.float() for e in embs], dim=1) * w.unsqueeze(-1)).sum(dim=1)
            return F.normalize(fused, dim=-1)

    def fusion_weights(self) -> dict[str, float]:
        logits = self.fusion_logits if self.cfg.model.fusion == "learned" else torch.log(self.fusion_fixed)
        return dict(zip(self.streams, torch.softmax(logits.detach().float(), 0).tolist(), strict=True))

    def forward(self, batch: dict) -> dict:
        """`batch` as the DataLoader gives it (uint8 images are finalised on the model's device)."""
        embs, masks = self.stream_embeddings(batch)
        video = self.fuse(embs, masks)
        pos, neg = self.label_embeddings()
        sim_pos = similarity(video, pos)
        out = {"video": video, "sim_pos": sim_pos}
        if neg is not None:
            out["sim_neg"] = similarity(video, neg)
        out["logits"] = prediction_logits(sim_pos, out.get("sim_neg"), self.cfg.loss.logit_scale,
                                          self.cfg.loss.infer_negative)
        if "description" in self.streams:
            i = self.streams.index("description")
            visual_only = tuple(s for s in self.streams if s != "description")
            out["visual"] = self.fuse(embs, masks, only=visual_only) if visual_only else None
            out["description"] = embs[i]
            out["has_description"] = masks[i]
        return out


def prediction_logits(sim_pos: torch.Tensor, sim_neg: torch.Tensor | None, scale: float, weight: float):
    """tau * (s(v, p_c) - weight * s(v, n_c)), float32; the negatives only where the model has them."""
    with float32_region(sim_pos.device):
        if sim_neg is None or weight == 0:
            return scale * sim_pos.float()
        return scale * (sim_pos.float() - weight * sim_neg.float())


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


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


# The paper's four variants (Table 1): their inputs, and the tunable parameters it reports for ViT-B/16.
PAPER_VARIANTS: dict[str, tuple[tuple[str, ...], int]] = {
    "FineCLIPER": (("frames",), 13),
    "FineCLIPER*": (("frames", "parsing", "landmarks"), 19),
    "FineCLIPER†": (("frames", "description"), 14),
    "FineCLIPER*†": (("frames", "parsing", "landmarks", "description"), 20),
}


def variant_parameters(cfg: Config, labels: tuple[str, ...] | None = None) -> dict[str, int]:
    """Trainable parameters of each paper variant built with `cfg`'s model and loss settings, its streams
    replaced by the variant's. Built on the meta device: no memory, no weights, a few seconds each."""
    from fineschema.labels import BASIC7

    from ..config import replace

    counts = {}
    for name, (streams, _) in PAPER_VARIANTS.items():
        variant = replace(cfg, model={"streams": list(streams), "pretrained": None})
        with torch.device("meta"):
            model = build_model(variant, labels or BASIC7, cfg.data.frames or 16)
        counts[name] = count_parameters(model)[0]
    return counts


def parameter_table(configs: tuple[str, ...] = ("dfew-b16", "dfew-l14")) -> str:
    """Markdown: our tunable parameters per variant for each preset, beside the paper's (ViT-B/16)."""
    from ..config import load_config

    counts = {name: variant_parameters(load_config(name)) for name in configs}
    head = "| variant | inputs | paper (M) | " + " | ".join(f"`{c}` (M)" for c in configs) + " |"
    lines = [head, "|" + "---|" * (3 + len(configs))]
    for variant, (streams, paper) in PAPER_VARIANTS.items():
        ours = " | ".join(f"{counts[c][variant] / 1e6:.1f}" for c in configs)
        lines.append(f"| {variant} | {', '.join(streams)} | {paper} | {ours} |")
    return "\n".join(lines)
