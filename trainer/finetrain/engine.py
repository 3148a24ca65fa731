"""The training recipe, top to bottom: check inputs, build, train with validation, test the chosen model.

Read `train` as one script. Everything that can be wrong with the inputs (store, config, descriptors,
fold) fails in `prepare`, before any training. The loop: AdamW on the trainable tensors only, linear
warmup then cosine decay per optimiser step, gradient accumulation and clipping, bf16 autocast on GPU,
DDP under torchrun (gloo on CPU, nccl on GPU). Data order and augmentation are functions of
(seed, epoch, clip), and checkpoints carry optimiser and RNG state and the position in the epoch, so
`--resume` continues exactly where the run stopped. The checkpoint used for the test fold is the one
with the best validation score; the test fold is never looked at before that.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fineschema import tables

from . import checkpoint as ckpt
from .batchpool import PooledDataLoader, image_shapes
from .config import Config, ConfigError
from .data import ShardedBatchSampler, StoreDataset, StoreInfo
from .metrics import score
from .predictions import PREDICTIONS_FILE, Predictions, write_predictions
from .split import Split, fold_split

CONFIG_FILE = "config.yaml"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
STEPS_JSONL = "steps.jsonl"
TEST_JSON = "test.json"
LAST, BEST = "last", "best"


@dataclass
class Prepared:
    info: StoreInfo
    split: Split
    cfg: Config
    notes: list[str]


def seeded_model(cfg: Config, info) -> tuple[torch.nn.Module, torch.device, int, int]:
    """Seed, then build the model for the store's labels and frames on the run's device.

    Returns (model, device, trainable parameters, total parameters)."""
    from .model import build_model, count_parameters

    device = resolve_device(cfg.run.device)
    seed_everything(cfg.run.seed)
    frames = min(cfg.data.frames or info.frames, info.frames)
    model = build_model(cfg, info.labels, frames).to(device)
    trainable, total = count_parameters(model)
    prepare_for_device(model, cfg, device)
    return model, device, trainable, total


def prepare_for_device(model, cfg: Config, device: torch.device) -> None:
    """Frozen weights in bf16 where the run autocasts to bf16 (`model.frozen_dtype`), and torch.compile."""
    bf16 = autocasts_bf16(device, cfg.optim.amp)
    dtype = cfg.model.frozen_dtype
    if dtype == "bfloat16" and not bf16:
        raise ConfigError(f"model.frozen_dtype=bfloat16 needs bf16 autocast (optim.amp=bf16, or auto on a GPU); "
                          f"this run has optim.amp={cfg.optim.amp} on {device.type}")
    if dtype == "bfloat16" or (dtype == "auto" and bf16):
        model.cast_frozen(torch.bfloat16)
    if cfg.model.compile:
        model.compile_towers()


def prepare(cfg: Config, store: str | Path) -> Prepared:
    """Validate the store, the fold and the descriptors against the config; raise one-line errors."""
    import fineprompts

    info = StoreInfo.for_config(store, cfg)
    notes = []
    try:
        fineprompts.load_descriptors(info.labels, cfg.model.descriptors)
    except KeyError as exc:
        raise ConfigError(f"store label set {info.attrs['label_set']!r}: {exc.args[0]}") from None
    if cfg.data.random_descriptions and info.random_descriptions:
        info.descriptions = {**info.random_descriptions, **info.descriptions}
        notes.append("using descriptions from a random-weight model (data.random_descriptions=true): "
                     "meaningless text, for plumbing runs only")
    elif info.random_descriptions and not info.descriptions and "description" in cfg.model.streams:
        notes.append("the store's descriptions come from a random-weight model (meaningless text); the description "
                     "stream and loss are off (set data.random_descriptions=true to use them anyway)")
    if "description" in cfg.model.streams and not info.descriptions:
        cfg.model.streams = [s for s in cfg.model.streams if s != "description"]
        if cfg.model.fusion_weights is not None and len(cfg.model.fusion_weights) == len(cfg.model.streams) + 1:
            raise ConfigError("model.fusion_weights names a description stream, but the store has no descriptions")
        if not info.random_descriptions:
            notes.append("the store has no descriptions: the description stream and loss are off")
        if not cfg.model.streams:
            raise ConfigError("model.streams holds only description, and the store has no descriptions")
    split = fold_split(info.train_folds, info.test_folds, info.label_index, cfg.run.fold,
                       cfg.data.val_fraction, cfg.run.seed)
    return Prepared(info=info, split=split, cfg=cfg, notes=notes)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
            return device
        return torch.device("cpu")
    return torch.device(name)


def autocasts_bf16(device: torch.device, amp: str) -> bool:
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


def autocast(device: torch.device, amp: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocasts_bf16(device, amp))


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to `min_ratio` at `total` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False


def init_distributed() -> tuple[int, int]:
    """(world size, rank); starts the process group when launched by torchrun (WORLD_SIZE > 1)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def make_loader(info: StoreInfo, rows, model, cfg: Config, train: bool, world: int = 1, rank: int = 0):
    """A DataLoader over `rows` of the clip table, batched by `ShardedBatchSampler`."""
    dataset = StoreDataset(info, rows, image_size=model.image_size, frames=cfg.data.frames, train=train,
                           data_cfg=cfg.data, streams=model.streams, tokenizer=model.tokenizer, seed=cfg.run.seed)
    sampler = ShardedBatchSampler(len(dataset), cfg.optim.batch_size, world if train else 1, rank if train else 0,
                                  seed=cfg.run.seed, shuffle=train, drop_last=train)
    return PooledDataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                            pooled=image_shapes(dataset), pin_memory=torch.cuda.is_available())


@torch.no_grad()
def evaluate(model, loader, device: torch.device | None = None, amp: str = "off") -> dict:
    """Logits (N,C), labels (N,) and clip-table rows (N,) over a loader, in loader order."""
    net = model.module if hasattr(model, "module") else model
    device = device or next(net.parameters()).device
    was_training = net.training
    net.eval()
    logits, labels, rows, sims = [], [], [], {"sim_pos": [], "sim_neg": []}
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, amp):
            out = net(batch)
        logits.append(out["logits"].float().cpu())
        labels.append(batch["label"].cpu())
        rows.append(batch["row"].cpu())
        for key, kept in sims.items():
            if key in out:
                kept.append(out[key].float().cpu())
    net.train(was_training)
    if not logits:
        return {"logits": np.zeros((0, len(net.labels)), np.float32), "labels": np.zeros(0, np.int64),
                "rows": np.zeros(0, np.int64)}
    res = {"logits": torch.cat(logits).numpy(), "labels": torch.cat(labels).numpy(),
           "rows": torch.cat(rows).numpy()}
    res.update({key: torch.cat(kept).numpy() for key, kept in sims.items() if kept})
    return res


def with_negative_weight(cfg: Config, res: dict) -> tuple[float, float, str]:
    """Validation (UAR, WAR) at the negative-descriptor weight chosen on `res` (`loss.infer_negative_grid`),
    which is set in `cfg.loss.infer_negative`; returns (uar, war, note)."""
    from .metrics import choose_negative_weight

    if "sim_neg" not in res or not cfg.loss.infer_negative_grid:
        uar, war = _uar_war(res, res["logits"].shape[1])
        return uar, war, ""
    w, table = choose_negative_weight(res["labels"], res["sim_pos"], res["sim_neg"], cfg.loss.infer_negative_grid,
                                      cfg.run.select_metric)
    cfg.loss.infer_negative = w
    uar, war = table[w]
    return uar, war, f", negatives weighted {w:g}"


def _write_metrics(out: Path, row: dict) -> None:
    with open(out / METRICS_JSONL, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in (out / METRICS_JSONL).read_text().splitlines() if line]
    names = [f.name for f in tables.METRICS]
    with open(out / METRICS_CSV, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def trim_logs(out: Path, step: int, epoch: int) -> None:
    """Make the logs agree with the checkpoint a run resumes from: drop the steps after `step` and the
    epoch rows after `epoch` (and a line cut short by a kill); they are written again as the run replays."""
    for name, key, last in ((STEPS_JSONL, "step", step), (METRICS_JSONL, "epoch", epoch)):
        path = out / name
        if not path.is_file():
            continue
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get(key), int) and row[key] <= last:
                kept.append(line + "\n")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)
    if (out / METRICS_JSONL).is_file():
        rows = [json.loads(line) for line in (out / METRICS_JSONL).read_text().splitlines() if line]
        with open(out / METRICS_CSV, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=[f.name for f in tables.METRICS], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def _param_groups(model) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and not name.endswith((".cls", ".pos")) else no_decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def write_test_outputs(out: Path, info: StoreInfo, result: dict, fold, epoch, selected: str) -> dict:
    """test.json (UAR, WAR, per-class recall, confusion) and predictions.parquet for the test fold."""
    scores = score(result["labels"], result["logits"].argmax(1), info.labels)
    probs = torch.softmax(torch.from_numpy(result["logits"]), dim=1).numpy()
    clip_ids = [info.clip_ids[r] for r in result["rows"]]
    true = [info.labels[i] for i in result["labels"]]
    preds = Predictions.from_probs(info.labels, clip_ids, probs, true_labels=true, fold=fold)
    write_predictions(out / PREDICTIONS_FILE, preds)
    summary = {"fold": fold, "selected": selected, "epoch": epoch, **scores.to_dict()}
    tmp = out / (TEST_JSON + ".tmp")  # test.json marks a finished run: it appears whole or not at all
    tmp.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    os.replace(tmp, out / TEST_JSON)
    return summary


def train(cfg: Config, store: str | Path, out: str | Path, resume: bool = False, console=None,
          progress: bool = True) -> dict:
    """Train one fold; return a summary (validation best, test scores). See the module docstring."""
    from rich.console import Console

    out = Path(out)
    world, rank = init_distributed()
    main = rank == 0
    console = console or Console(stderr=True, quiet=not main)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    last_dir = out / "checkpoints" / LAST
    for name in (LAST, BEST):  # a kill inside checkpoint.save leaves the previous checkpoint to restore
        ckpt.recover(out / "checkpoints" / name)
    if last_dir.exists() and not resume:
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    if resume and not last_dir.exists():
        if not (out / CONFIG_FILE).is_file():
            raise ConfigError(f"{out}: nothing to resume (no checkpoints/{LAST}); run without --resume")
        console.print("[yellow]note:[/] the run stopped before its first checkpoint; starting it from the beginning")
        resume = False

    prep = prepare(cfg, store)
    info, split = prep.info, prep.split
    for note in prep.notes:
        console.print(f"[yellow]note:[/] {note}")
    model, device, trainable, total = seeded_model(cfg, info)
    console.print(f"model {cfg.model.backbone} ({cfg.model.pretrained or 'random weights'}), streams "
                  f"{', '.join(model.streams)}: {trainable:,} trainable of {total:,} parameters")
    console.print(f"fold {split.fold}: {len(split.train)} train, {len(split.val)} validation, "
                  f"{len(split.test)} test clips; {len(info.labels)} classes ({info.attrs['label_set']})")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.dump(out / CONFIG_FILE)

    optimizer = torch.optim.AdamW(_param_groups(model), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    for g in optimizer.param_groups:
        g["initial_lr"] = cfg.optim.lr
    state = {"epoch": 0, "step": 0, "batch_in_epoch": 0, "best": None, "best_epoch": None, "done": False}
    if resume:
        state = ckpt.load(last_dir, model, optimizer)
        if main:
            trim_logs(out, state["step"], state["epoch"])
        console.print(f"resumed at epoch {state['epoch']}, step {state['step']}")
    elif main:
        trim_logs(out, 0, 0)  # rows of a start killed before its first checkpoint
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # every trainable tensor takes part in every step (no unused adapter sets: model.text_adapter_sets),
        # except the positive set when loss.ce is 0
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                  find_unused_parameters=not cfg.loss.ce)

    train_loader = make_loader(info, split.train, model, cfg, train=True, world=world, rank=rank)
    val_loader = make_loader(info, split.val, model, cfg, train=False)
    accum = cfg.optim.accumulate
    steps_per_epoch = max(1, len(train_loader.batch_sampler) // accum)
    total_steps = steps_per_epoch * cfg.optim.epochs
    cfg_json = cfg.to_json()
    step = state["step"]
    stop = False

    def save_last(epoch: int, batch_in_epoch: int) -> None:
        if main:
            ckpt.save(last_dir, model, cfg_json, info.labels, {**state, "epoch": epoch, "step": step,
                                                              "batch_in_epoch": batch_in_epoch}, optimizer)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}"), console=console, disable=not (progress and main))
    with bar:
        for epoch in range(state["epoch"], cfg.optim.epochs):
            if state["done"]:
                break
            start_batch = state["batch_in_epoch"] if epoch == state["epoch"] else 0
            train_loader.batch_sampler.set_epoch(epoch, start=start_batch)
            train_loader.dataset.set_epoch(epoch)
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.optim.epochs}", total=len(train_loader.batch_sampler),
                                completed=start_batch, info="")
            net.train()
            t0 = time.perf_counter()
            losses = []
            batch_in_epoch = start_batch
            for batch in train_loader:
                batch = to_device(batch, device)
                boundary = (batch_in_epoch + 1) % accum == 0
                sync = boundary or world == 1
                ctx = net.no_sync() if (world > 1 and not sync) else _null()
                with ctx:
                    with autocast(device, cfg.optim.amp):
                        outputs = net(batch)
                    from .losses import compute_loss

                    loss, parts = compute_loss(outputs, batch["label"], cfg.loss)
                    (loss / accum).backward()
                losses.append(float(loss.detach()))
                batch_in_epoch += 1
                if boundary:
                    lr = cfg.optim.lr * lr_factor(step, total_steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    if cfg.optim.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    if main:
                        with open(out / STEPS_JSONL, "a", encoding="utf-8") as fh:
                            fh.write(json.dumps({"step": step, "epoch": epoch, "loss": float(np.mean(losses[-accum:])),
                                                 "lr": lr, **parts}) + "\n")
                    if cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0:
                        save_last(epoch, batch_in_epoch)
                    if cfg.run.max_steps and step >= cfg.run.max_steps:
                        stop = True
                bar.update(task, advance=1, info=f"loss {losses[-1]:.3f}")
                if stop:
                    break
            seconds = time.perf_counter() - t0
            bar.remove_task(task)
            if stop and batch_in_epoch < len(train_loader.batch_sampler):
                save_last(epoch, batch_in_epoch)
                _barrier(world)
                console.print(f"stopped at step {step} (run.max_steps); continue with --resume")
                return {"step": step, "stopped": True}
            lr_now = optimizer.param_groups[0]["lr"]
            train_row = {"run": out.name, "fold": split.fold, "epoch": epoch + 1, "step": step, "split": "train",
                         "loss": float(np.mean(losses)) if losses else None, "uar": None, "war": None,
                         "lr": lr_now, "seconds": seconds}
            if main:
                _write_metrics(out, train_row)
                last_epoch = epoch + 1 == cfg.optim.epochs
                if len(split.val) and ((epoch + 1) % cfg.run.eval_every == 0 or last_epoch):
                    res = evaluate(model, val_loader, device, cfg.optim.amp)
                    uar, war, weighted = with_negative_weight(cfg, res)
                    metric = uar if cfg.run.select_metric == "uar" else war
                    _write_metrics(out, {**train_row, "split": "val", "loss": None, "uar": uar, "war": war})
                    msg = (f"epoch {epoch + 1}: train loss {train_row['loss']:.4f}, val UAR {uar:.4f} WAR {war:.4f}"
                           f"{weighted}")
                    if state["best"] is None or metric > state["best"]:
                        state["best"], state["best_epoch"] = metric, epoch + 1
                        ckpt.save(out / "checkpoints" / BEST, model, cfg.to_json(), info.labels,
                                  {"epoch": epoch + 1, "step": step, "val_uar": uar, "val_war": war})
                        msg += " (best)"
                    console.print(msg)
                elif not len(split.val):
                    state["best"], state["best_epoch"] = None, epoch + 1
                    ckpt.save(out / "checkpoints" / BEST, model, cfg_json, info.labels, {"epoch": epoch + 1,
                                                                                        "step": step})
                    console.print(f"epoch {epoch + 1}: train loss {train_row['loss']:.4f} (no validation clips)")
            state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
            state["done"] = epoch + 1 == cfg.optim.epochs
            save_last(epoch + 1, 0)
            _barrier(world)
            if stop:
                console.print(f"stopped at step {step} (run.max_steps); continue with --resume")
                return {"step": step, "stopped": True}

    summary = {"step": step, "best_val": state["best"], "best_epoch": state["best_epoch"],
               "fusion_weights": model.fusion_weights(), "trainable": trainable, "total": total}
    if main and len(split.test):
        if not (out / TEST_JSON).exists():
            best_dir = out / "checkpoints" / BEST
            ckpt.load(best_dir, model)
            # the negative-descriptor weight chosen on validation with that checkpoint
            cfg.loss.infer_negative = ckpt.read_meta(best_dir)["config"]["loss"]["infer_negative"]
            best_epoch = json.loads((best_dir / ckpt.STATE_FILE).read_text())["epoch"]
            test_loader = make_loader(info, split.test, model, cfg, train=False)
            res = evaluate(model, test_loader, device, cfg.optim.amp)
            summary["test"] = write_test_outputs(out, info, res, split.fold, best_epoch, BEST)
            t = summary["test"]
            console.print(f"test fold {split.fold} (checkpoint of epoch {best_epoch}, chosen on validation): "
                          f"UAR {t['uar']:.4f} WAR {t['war']:.4f}")
        else:
            summary["test"] = json.loads((out / TEST_JSON).read_text())
            console.print(f"{out} is finished; test UAR {summary['test']['uar']:.4f} WAR {summary['test']['war']:.4f}")
    _barrier(world)
    return summary


def _uar_war(res: dict, num_classes: int) -> tuple[float, float]:
    from .metrics import uar_war

    if len(res["labels"]) == 0:
        return float("nan"), float("nan")
    return uar_war(res["labels"], res["logits"].argmax(1), num_classes)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
