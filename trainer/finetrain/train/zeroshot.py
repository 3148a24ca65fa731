"""Zero-shot, EmoCLIP-style: learn video-text alignment from per-clip text, never from labels.

Training sees each training clip of the fold with its text: MAFW's English caption (`--text captions`,
manifest column `caption_en`) or the MLLM description (`--text descriptions`, `refined_text` in
`STORE/descriptions/`). Clips without text are skipped; labels are never read. The objective is a
symmetric InfoNCE between the fused visual embedding v_b (frames, parsing, landmarks, blendshapes;
the same video tower as supervised training) and the text embedding t_b of the clip's text, encoded
by CLIP's text encoder through the *positive* adapter set:

    L = 1/2 [CE(tau * V T^T, Y) + CE(tau * T V^T, Y^T)]

where Y spreads each row's target uniformly over the clips of the batch with the identical text
(captions repeat, and a duplicate is not a negative).

Classification then needs nothing new: the label descriptors (`prompts/descriptors.yaml`) go through
the same positive adapters, and a clip's class is the descriptor nearest to v, which is exactly the
supervised model's forward with `loss.infer_negative = 0`. So a zero-shot run's checkpoint is an
ordinary finetrain checkpoint: `finetrain eval` and `finetrain predict` use it unchanged, and on
another dataset's store it is scored with that dataset's own class descriptors.

No labels means no label-based model selection: the checkpoint of the last epoch is the one tested.
Zero-shot is an objective (`ZeroShot`) and a selection rule (`recipe.LastEpoch`) of the one training
recipe, so it has what supervised runs have: DDP (the loss is taken over the global batch, gathered from
every process), gradient accumulation, `run.max_steps`, `run.checkpoint_every`, steps.jsonl,
metrics.jsonl/.csv and `--resume`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from fineschema import counts_line, layout

from ..config import Config, ConfigError, from_dict
from ..errors import FinetrainError
from ..model.losses import alignment_loss, text_targets
from ..score.protocol import pct, score_line
from .recipe import LastEpoch, Objective, Prepared, Recipe, batch_loader, checked_inputs
from .runtime import gather_rows

__all__ = ["TEXT_SOURCES", "ZeroShot", "ZeroShotError", "alignment_loss", "clip_texts", "text_targets",
           "train_zero_shot", "zero_shot_config"]

TEXT_SOURCES = ("captions", "descriptions")


class ZeroShotError(FinetrainError, ValueError):
    """A zero-shot run that cannot start: no text of the asked kind in the store, a bad option."""


def zero_shot_config(cfg: Config) -> Config:
    """The supervised config turned label-free: no description stream, no label terms, no validation split."""
    data = cfg.to_dict()
    data["model"]["streams"] = [s for s in cfg.model.streams if s != "description"]
    if not data["model"]["streams"]:
        raise ConfigError("zero-shot needs at least one visual stream in model.streams")
    if cfg.model.fusion_weights is not None and len(cfg.model.fusion_weights) != len(data["model"]["streams"]):
        data["model"]["fusion_weights"] = None
    if not cfg.model.text_adapters:
        raise ConfigError("zero-shot trains the text adapters; model.text_adapters must be true")
    data["loss"].update(ce=0.0, negative=0.0, infer_negative=0.0)
    data["data"]["val_fraction"] = 0.0
    return from_dict(data)


def clip_texts(info, text: str) -> dict[str, str]:
    """clip id -> training text of the chosen kind, for the store's usable clips."""
    if text not in TEXT_SOURCES:
        raise ZeroShotError(f"--text must be one of {', '.join(TEXT_SOURCES)}, got {text!r}")
    if text == "descriptions":
        texts = dict(info.descriptions)
        if not texts:
            counts = info.description_counts or {"rows": 0, "failed": 0, "empty": 0, "random": 0, "usable": 0}
            what = ("run `fineprep describe` with a trained model" if counts["rows"] == counts["random"] + counts["failed"]
                    or not counts["rows"] else "describe again with a prompt and model whose text survives refinement")
            raise ZeroShotError(f"store {info.root}: no usable descriptions for --text descriptions "
                                f"({counts_line(counts)}); {what}, or use --text captions on a MAFW store")
        return texts
    table = pq.read_table(info.root / layout.MANIFEST_FILE, columns=["clip_id", "caption_en"]).to_pydict()
    texts = {c: t.strip() for c, t in zip(table["clip_id"], table["caption_en"], strict=True) if t and t.strip()}
    if not texts:
        raise ZeroShotError(f"store {info.root}: 0 of {len(table['clip_id'])} manifest rows have an English caption "
                            "(caption_en); captions come with MAFW's with_caption split; use --text descriptions "
                            "for other datasets")
    return texts


class VideoText(torch.nn.Module):
    """The model's forward for alignment: fused video embedding and the clip's text through the positive
    adapters (what DDP wraps, so its gradient hooks see this forward)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> dict:
        embs, masks = self.model.stream_embeddings(batch)
        video = self.model.fuse(embs, masks)
        words = F.normalize(self.model.encode_text(batch["description"], "positive").float(), dim=-1)
        return {"video": video, "text": words}


class ZeroShot(Objective):
    """Video-text alignment on the fold's training clips that have text of the chosen kind; no labels."""

    mode = "zero-shot"
    loss_name = "video-text loss"

    def __init__(self, text: str = "captions"):
        self.text = text
        self.texts: dict[str, str] = {}

    def rule(self) -> LastEpoch:
        return LastEpoch()

    def prepare(self, cfg: Config, store: str | Path) -> Prepared:
        from ..data.split import fold_split
        from ..data.store import StoreInfo

        cfg = zero_shot_config(cfg)
        info = StoreInfo.for_config(store, cfg)
        self.texts = clip_texts(info, self.text)
        split = fold_split(info.train_folds, info.test_folds, info.label_index, cfg.run.fold, 0.0, cfg.run.seed)
        rows = np.asarray([r for r in split.train if info.clip_ids[r] in self.texts], dtype=np.int64)
        if len(rows) < 2:
            raise ZeroShotError(f"fold {split.fold}: {len(rows)} training clips have {self.text}; need at least 2")
        return checked_inputs(Prepared(info=info, split=split, cfg=cfg, notes=[], train_rows=rows))

    def announce(self, console, prep: Prepared, model, trainable: int, total: int) -> None:
        split, text = prep.split, self.text
        console.print(f"zero-shot ({text}), model {prep.cfg.model.backbone}, streams {', '.join(model.streams)}: "
                      f"{trainable:,} trainable of {total:,} parameters")
        console.print(f"fold {split.fold}: {len(prep.train_rows)} training clips with {text} (of {len(split.train)}), "
                      f"{len(split.test)} test clips; labels are not used for training")

    def run_info(self, prep: Prepared) -> dict:
        return {"mode": self.mode, "text": self.text, "fold": prep.split.fold}

    def train_loader(self, prep: Prepared, model, world: int, rank: int):
        from ..data.store import StoreDataset

        cfg, info = prep.cfg, prep.info
        frames = min(cfg.data.frames or info.frames, info.frames)
        dataset = StoreDataset(dataclasses.replace(info, descriptions=self.texts), prep.train_rows,
                               image_size=model.image_size, frames=frames, train=True, data_cfg=cfg.data,
                               streams=(*model.streams, "description"), tokenizer=model.tokenizer, seed=cfg.run.seed)
        batch = min(cfg.optim.batch_size, len(prep.train_rows))
        return batch_loader(dataset, batch, cfg, train=True, world=world, rank=rank)

    def network(self, model) -> torch.nn.Module:
        return VideoText(model)

    def find_unused(self, cfg: Config) -> bool:
        return False  # the video streams and the positive text adapters all take part in every step

    def param_groups(self, model) -> list[dict]:
        # one group, weight decay on every trainable tensor: zero-shot's optimiser as it has always been
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def loss(self, outputs: dict, batch: dict, cfg: Config, world: int) -> tuple[torch.Tensor, dict]:
        """The alignment loss over the global batch (every process's clips), the same on every process."""
        video = gather_rows(outputs["video"].float(), world)
        text = gather_rows(outputs["text"], world)
        tokens = gather_rows(batch["description"], world)
        return alignment_loss(video, text, text_targets(tokens), cfg.loss.logit_scale), {}

    def grad_scale(self, world: int) -> float:
        return float(world)  # each process's backward reaches only its own rows: see runtime.gather_rows

    def summary(self) -> dict:
        return {"mode": self.mode, "text": self.text}

    def report_test(self, console, run, fold, t: dict, labels, fresh: bool, epoch) -> None:
        console.print(f"zero-shot test fold {fold}: {score_line(t)}; chance {pct(1 / len(labels))}")


def train_zero_shot(cfg: Config, store: str | Path, out: str | Path, text: str = "captions", resume: bool = False,
                    console=None, progress: bool = True) -> dict:
    """Align video and text on the fold's training clips, then classify its test clips by descriptors."""
    return Recipe(cfg, store, out, ZeroShot(text), resume=resume, console=console, progress=progress).run()
