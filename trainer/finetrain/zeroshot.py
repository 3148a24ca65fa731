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
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from fineschema import layout

from . import checkpoint as ckpt
from .batchpool import PooledDataLoader, image_shapes
from .config import Config, ConfigError, from_dict
from .errors import FinetrainError
from .runinfo import store_run_info, write_run_info

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
            raise ZeroShotError(f"store {info.root} has no descriptions; run `fineprep describe` first, "
                                "or use --text captions on a MAFW store")
        return texts
    table = pq.read_table(info.root / layout.MANIFEST_FILE, columns=["clip_id", "caption_en"]).to_pydict()
    texts = {c: t.strip() for c, t in zip(table["clip_id"], table["caption_en"], strict=True) if t and t.strip()}
    if not texts:
        raise ZeroShotError(f"store {info.root} has no English captions (manifest caption_en); captions come "
                            "with MAFW's with_caption split; use --text descriptions for other datasets")
    return texts


def text_targets(tokens: torch.Tensor) -> torch.Tensor:
    """(B,B) row-stochastic targets: clips with identical text share the probability mass."""
    same = (tokens[:, None, :] == tokens[None, :, :]).all(dim=-1).float()
    return same / same.sum(dim=1, keepdim=True)


def alignment_loss(video: torch.Tensor, text: torch.Tensor, targets: torch.Tensor, scale: float) -> torch.Tensor:
    logits = scale * video @ text.t()
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets.t()))


def train_zero_shot(cfg: Config, store: str | Path, out: str | Path, text: str = "captions", resume: bool = False,
                    console=None, progress: bool = True) -> dict:
    """Align video and text on the fold's training clips, then classify its test clips by descriptors."""
    import os

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from . import engine
    from .data import ShardedBatchSampler, StoreDataset, StoreInfo
    from .split import fold_split

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ZeroShotError("zero-shot training runs in one process; start it without torchrun")
    out = Path(out)
    console = console or Console(stderr=True)
    cfg = zero_shot_config(cfg)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    last_dir = out / "checkpoints" / engine.LAST
    # a kill inside checkpoint.save leaves the previous checkpoint to restore
    for name in (engine.LAST, engine.BEST):
        ckpt.recover(out / "checkpoints" / name)
    if last_dir.exists() and not resume:
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    info = StoreInfo.for_config(store, cfg)
    texts = clip_texts(info, text)
    split = fold_split(info.train_folds, info.test_folds, info.label_index, cfg.run.fold, 0.0, cfg.run.seed)
    rows = np.asarray([r for r in split.train if info.clip_ids[r] in texts], dtype=np.int64)
    if len(rows) < 2:
        raise ZeroShotError(f"fold {split.fold}: {len(rows)} training clips have {text}; need at least 2")
    model, device, trainable, total = engine.seeded_model(cfg, info)
    frames = min(cfg.data.frames or info.frames, info.frames)
    console.print(f"zero-shot ({text}), model {cfg.model.backbone}, streams {', '.join(model.streams)}: "
                  f"{trainable:,} trainable of {total:,} parameters")
    console.print(f"fold {split.fold}: {len(rows)} training clips with {text} (of {len(split.train)}), "
                  f"{len(split.test)} test clips; labels are not used for training")
    out.mkdir(parents=True, exist_ok=True)
    cfg.dump(out / engine.CONFIG_FILE)
    write_run_info(out, mode="zero-shot", text=text, fold=split.fold, **store_run_info(info))

    text_info = dataclasses.replace(info, descriptions=texts)
    dataset = StoreDataset(text_info, rows, image_size=model.image_size, frames=frames, train=True,
                           data_cfg=cfg.data, streams=(*model.streams, "description"), tokenizer=model.tokenizer,
                           seed=cfg.run.seed)
    batch = min(cfg.optim.batch_size, len(rows))
    sampler = ShardedBatchSampler(len(dataset), batch, seed=cfg.run.seed, shuffle=True, drop_last=True)
    loader = PooledDataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                              pooled=image_shapes(dataset))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    state = {"epoch": 0, "step": 0, "batch_in_epoch": 0, "best": None, "best_epoch": None, "done": False}
    if resume and last_dir.exists():
        state = ckpt.load(last_dir, model, optimizer)
        engine.trim_logs(out, state["step"], state["epoch"])
        console.print(f"resumed after epoch {state['epoch']}, step {state['step']}")
    else:
        engine.trim_logs(out, 0, 0)  # rows of a start killed before its first checkpoint
    total_steps = max(1, len(sampler) * cfg.optim.epochs)
    step = state["step"]
    cfg_json = cfg.to_json()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}"), console=console, disable=not progress)
    with bar:
        for epoch in range(state["epoch"], cfg.optim.epochs):
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.optim.epochs}", total=len(sampler), info="")
            model.train()
            t0, losses = time.perf_counter(), []
            for b in loader:
                b = engine.to_device(b, device)
                with engine.autocast(device, cfg.optim.amp):
                    embs, masks = model.stream_embeddings(b)
                    video = model.fuse(embs, masks)
                    words = F.normalize(model.encode_text(b["description"], "positive").float(), dim=-1)
                loss = alignment_loss(video.float(), words, text_targets(b["description"]), cfg.loss.logit_scale)
                lr = cfg.optim.lr * engine.lr_factor(step, total_steps, cfg.optim.warmup_steps,
                                                     cfg.optim.min_lr_ratio)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
                optimizer.step()
                step += 1
                losses.append(float(loss.detach()))
                bar.update(task, advance=1, info=f"loss {losses[-1]:.3f}")
            bar.remove_task(task)
            row = {"run": out.name, "fold": split.fold, "epoch": epoch + 1, "step": step, "split": "train",
                   "loss": float(np.mean(losses)) if losses else None, "uar": None, "war": None, "lr": lr,
                   "seconds": time.perf_counter() - t0}
            with open(out / engine.METRICS_JSONL, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            console.print(f"epoch {epoch + 1}: video-text loss {row['loss']:.4f}")
            state.update(epoch=epoch + 1, step=step, done=epoch + 1 == cfg.optim.epochs)
            ckpt.save(last_dir, model, cfg_json, info.labels, state, optimizer)

    summary = {"step": step, "mode": "zero-shot", "text": text, "trainable": trainable, "total": total}
    if not (out / "checkpoints" / engine.BEST).exists():
        ckpt.save(out / "checkpoints" / engine.BEST, model, cfg_json, info.labels,
                  {"epoch": state["epoch"], "step": step, "selected": "last epoch (no labels to select on)"})
    if len(split.test):
        if not (out / engine.TEST_JSON).exists():
            model.eval()
            test_loader = engine.make_loader(info, split.test, model, cfg, train=False)
            res = engine.evaluate(model, test_loader, device, cfg.optim.amp)
            summary["test"] = engine.write_test_outputs(out, info, res, split.fold, state["epoch"], "last")
        else:
            summary["test"] = json.loads((out / engine.TEST_JSON).read_text())
        t = summary["test"]
        chance = 1 / len(info.labels)
        console.print(f"zero-shot test fold {split.fold}: UAR {t['uar']:.4f} WAR {t['war']:.4f} "
                      f"(chance {chance:.4f})")
    return summary
