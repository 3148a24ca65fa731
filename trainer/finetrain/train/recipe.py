"""The training recipe: one loop for every objective, read top to bottom in `Recipe.run`.

`Recipe.setup` checks everything that can be wrong with the inputs (run folder, store, config,
descriptors, fold) before any training, then builds the model, the optimiser and the schedule.
`Recipe.train_epoch` is the loop: AdamW on the trainable tensors only, linear warmup then cosine decay
per optimiser step (`LambdaLR`), gradient accumulation and clipping, bf16 autocast on GPU, DDP under
torchrun (gloo on CPU, nccl on GPU). `Recipe.validate` scores the validation split; `Recipe.test`
scores the test fold with the selected checkpoint, which is chosen before the test fold is looked at.

What differs between kinds of training is two objects:
- an objective (`Supervised` here; `zeroshot.ZeroShot`): which clips train, what the network returns
  for a batch, and the loss;
- a selection rule (`BestOnValidation`; `LastEpoch` where there are no labels to select on).
Everything else (accumulation, DDP, `run.max_steps`, `run.checkpoint_every`, steps.jsonl,
metrics.jsonl/.csv, `--resume`) is the same code for both. Data order and augmentation are functions
of (seed, epoch, clip), and checkpoints carry the optimiser, the schedule, the RNG state and the
position in the epoch, so `--resume` continues exactly where a run stopped.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from fineschema import tables
from fineschema.nolinks import refuse_links_under

from ..config import Config, ConfigError
from ..data.batchpool import PooledDataLoader, image_shapes
from ..data.split import Split, fold_split
from ..data.store import ShardedBatchSampler, StoreDataset, StoreInfo
from ..rundir import (
    BEST,
    CHECKPOINTS,
    CONFIG_FILE,
    LAST,
    METRICS_CSV,
    METRICS_JSONL,
    STEPS_JSONL,
    TEST_JSON,
    RunDir,
)
from ..runinfo import store_run_info, write_run_info
from ..score.metrics import score
from ..score.predictions import Predictions, write_predictions
from ..score.protocol import check_strict, describe, fold_counts, is_partial, pct, score_line
from . import checkpoint as ckpt
from .logger import flat, make_logger
from .resume_check import check_resume, record_changes
from .runtime import autocast, barrier, init_distributed, seeded_model, to_device
from .state_schema import checked_state
from .streams import RANDOM_WEIGHTS_LINE, StreamPlan, paper_row, plan_streams, weights_record

__all__ = ["BEST", "CONFIG_FILE", "LAST", "METRICS_CSV", "METRICS_JSONL", "STEPS_JSONL", "TEST_JSON",
           "BestOnValidation", "LastEpoch", "Objective", "Prepared", "Recipe", "Supervised", "evaluate",
           "checked_inputs", "input_record", "lr_factor", "make_loader", "param_groups", "prepare",
           "train", "trim_logs", "write_test_outputs"]


# ------------------------------------------------------------------------------------------ inputs
@dataclass
class Prepared:
    """The checked inputs of a run: the store, the fold's split, the config as the run uses it."""

    info: StoreInfo
    split: Split
    cfg: Config
    notes: list[str]
    train_rows: np.ndarray | None = None  # rows the objective trains on (default: the split's training rows)
    streams: StreamPlan | None = None     # the streams fed, and those dropped with why (`streams.plan_streams`)
    counts: dict | None = None            # listed / scored / unscored clips per side (`protocol.fold_counts`)

    def __post_init__(self):
        if self.train_rows is None:
            self.train_rows = self.split.train


def _notes(plan: StreamPlan, counts: dict, cfg: Config) -> list[str]:
    """The console notes of a run's inputs: random weights, dropped streams, a partial fold."""
    notes = [RANDOM_WEIGHTS_LINE] if cfg.model.pretrained is None else []
    if plan.random_descriptions:
        notes.append("using descriptions from a random-weight model (data.random_descriptions=true): "
                     "meaningless text, for plumbing runs only")
    for stream, why in plan.dropped.items():
        notes.append(f"stream {stream} dropped (model.missing_streams=drop): {why}")
    if plan.dropped:
        notes.append(f"training streams {', '.join(plan.used)}: paper row {paper_row(plan.used) or 'none'}")
    if is_partial(counts["test"]):
        notes.append(f"fold {counts.get('fold')}: {describe(counts['test'])}: its UAR/WAR are marked partial")
    return notes


def prepare(cfg: Config, store: str | Path) -> Prepared:
    """Validate the store, the fold, the streams and the descriptors against the config; raise one-line errors."""
    import fineprompts

    info = StoreInfo.for_config(store, cfg)
    try:
        fineprompts.load_descriptors(info.labels, cfg.model.descriptors)
    except KeyError as exc:  # the descriptor file lacks a class of the store's label set
        raise ConfigError(f"store label set {info.attrs['label_set']!r}: {exc.args[0]}") from None
    split = fold_split(info.train_folds, info.test_folds, info.label_index, cfg.run.fold,
                       cfg.data.val_fraction, cfg.run.seed)
    return checked_inputs(Prepared(info=info, split=split, cfg=cfg, notes=[]))


def checked_inputs(prep: Prepared) -> Prepared:
    """The streams planned (refused or dropped) and the fold's counts taken, on a prepared run."""
    prep.streams = plan_streams(prep.cfg, prep.info, prep.train_rows)
    prep.counts = {"fold": prep.split.fold, **fold_counts(prep.info, prep.split)}
    check_strict(prep.counts, prep.split.fold, prep.cfg.run.strict_protocol)
    prep.notes = [*_notes(prep.streams, prep.counts, prep.cfg), *prep.notes]
    return prep


def store_extraction(info: StoreInfo) -> dict | None:
    """The store's extraction settings as checkpoints keep them; None for a store that records none
    (one written straight through the contract, as the trainer's test fixture is)."""
    from fineschema import SettingsError

    try:
        return info.settings.to_dict()
    except SettingsError:
        return None


def input_record(prep: Prepared) -> dict:
    """What run.json and test.json say about a run's inputs: streams, weights, clip counts."""
    return {**prep.streams.record(), **weights_record(prep.cfg), "clips": prep.counts}


# --------------------------------------------------------------------------------- optimiser, schedule
def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to `min_ratio` at `total` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_schedule(optimizer, cfg: Config, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate of optimiser step k (from 0) is optim.lr * lr_factor(k); `LambdaLR` sets it
    after each optimiser step, and its state dict (the position) goes into the checkpoint."""
    warmup, min_ratio = cfg.optim.warmup_steps, cfg.optim.min_lr_ratio
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup, min_ratio))


def schedule_state(sched) -> dict:
    """The schedule's position as plain JSON numbers (its lambda is rebuilt from the config)."""
    return {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}


def restore_schedule(sched, saved: dict | None, step: int) -> None:
    """Put the schedule back where a checkpoint left it; a checkpoint without its state is at `step`."""
    if saved is None:
        sched.last_epoch = step
        return
    sched.load_state_dict({**saved, "lr_lambdas": [None] * len(sched.lr_lambdas)})


def param_groups(model) -> list[dict]:
    """Weight decay on matrices only: biases, norms and the temporal heads' cls/pos tokens are exempt."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and not name.endswith((".cls", ".pos")) else no_decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


# ------------------------------------------------------------------------------------- loaders, eval
def batch_loader(dataset, batch_size: int, cfg: Config, train: bool, world: int = 1, rank: int = 0):
    """Batches by `ShardedBatchSampler`: shuffled, sharded and without a short last batch in training."""
    sampler = ShardedBatchSampler(len(dataset), batch_size, world if train else 1, rank if train else 0,
                                  seed=cfg.run.seed, shuffle=train, drop_last=train)
    return PooledDataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                            pooled=image_shapes(dataset), pin_memory=torch.cuda.is_available())


def make_loader(info: StoreInfo, rows, model, cfg: Config, train: bool, world: int = 1, rank: int = 0):
    """A DataLoader over `rows` of the clip table, with the streams the model reads."""
    dataset = StoreDataset(info, rows, image_size=model.image_size, frames=cfg.data.frames, train=train,
                           data_cfg=cfg.data, streams=model.streams, tokenizer=model.tokenizer, seed=cfg.run.seed)
    return batch_loader(dataset, cfg.optim.batch_size, cfg, train, world, rank)


def _empty_result(net) -> dict:
    return {"logits": np.zeros((0, len(net.labels)), np.float32), "labels": np.zeros(0, np.int64),
            "rows": np.zeros(0, np.int64)}


@torch.no_grad()
def evaluate(model, loader, device: torch.device | None = None, amp: str = "off") -> dict:
    """Logits (N,C), labels (N,) and clip-table rows (N,) over a loader, in loader order."""
    net = model.module if hasattr(model, "module") else model
    device = device or next(net.parameters()).device
    was_training = net.training
    net.eval()
    kept = {"logits": [], "labels": [], "rows": [], "sim_pos": [], "sim_neg": []}
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, amp):
            out = net(batch)
        kept["logits"].append(out["logits"].float().cpu())
        kept["labels"].append(batch["label"].cpu())
        kept["rows"].append(batch["row"].cpu())
        for key in ("sim_pos", "sim_neg"):
            if key in out:
                kept[key].append(out[key].float().cpu())
    net.train(was_training)
    if not kept["logits"]:
        return _empty_result(net)
    return {key: torch.cat(parts).numpy() for key, parts in kept.items() if parts}


def _uar_war(res: dict, num_classes: int) -> tuple[float, float]:
    from ..score.metrics import uar_war

    if len(res["labels"]) == 0:
        return float("nan"), float("nan")
    return uar_war(res["labels"], res["logits"].argmax(1), num_classes)


def validation_loss(cfg: Config, res: dict) -> dict:
    """The label terms of the training loss on validation clips ({"loss", "ce", "neg"}; the description
    term needs the clips' texts and is left out): the curve that shows over-fitting beside the train loss."""
    from ..model.losses import negative_loss

    if "sim_pos" not in res or not len(res["labels"]):
        return {}
    labels = torch.from_numpy(res["labels"])
    tau = cfg.loss.logit_scale
    parts = {"ce": float(torch.nn.functional.cross_entropy(tau * torch.from_numpy(res["sim_pos"]), labels))}
    total = cfg.loss.ce * parts["ce"]
    if cfg.loss.negative and "sim_neg" in res:
        parts["neg"] = float(negative_loss(torch.from_numpy(res["sim_neg"]), labels, tau))
        total += cfg.loss.negative * parts["neg"]
    return {"loss": total, **parts}


def validation_recall(cfg: Config, res: dict, labels) -> dict[str, float]:
    """Per-class validation recall of the predictions at the chosen negative weight (NaN: no clip)."""
    if not len(res["labels"]):
        return {}
    logits = res["sim_pos"] - cfg.loss.infer_negative * res["sim_neg"] if "sim_neg" in res else res["logits"]
    recall = score(res["labels"], logits.argmax(1), labels).recall
    return {name: float(r) for name, r in recall.items() if r == r}  # a class without clips has no recall


def with_negative_weight(cfg: Config, res: dict) -> tuple[float, float, str]:
    """Validation (UAR, WAR) at the negative-descriptor weight chosen on `res` (`loss.infer_negative_grid`),
    which is set in `cfg.loss.infer_negative`; returns (uar, war, note)."""
    from ..score.metrics import choose_negative_weight

    if "sim_neg" not in res or not cfg.loss.infer_negative_grid:
        uar, war = _uar_war(res, res["logits"].shape[1])
        return uar, war, ""
    w, table = choose_negative_weight(res["labels"], res["sim_pos"], res["sim_neg"], cfg.loss.infer_negative_grid,
                                      cfg.run.select_metric)
    cfg.loss.infer_negative = w
    uar, war = table[w]
    return uar, war, f", negatives weighted {w:g}"


# ---------------------------------------------------------------------------------------------- logs
def _read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _write_metrics_csv(run: RunDir) -> None:
    """metrics.csv: metrics.jsonl as a table with the contract's columns (`fineschema.tables.METRICS`)."""
    with open(run.metrics_csv, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in tables.METRICS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(_read_rows(run.metrics_jsonl))


def append_row(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def write_metrics(run: RunDir, row: dict) -> None:
    append_row(run.metrics_jsonl, row)
    _write_metrics_csv(run)


def _kept_lines(path: Path, key: str, last: int) -> list[str]:
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if isinstance(row, dict) and isinstance(row.get(key), int) and row[key] <= last:
            kept.append(line + "\n")
    return kept


def trim_logs(out: str | Path, step: int, epoch: int) -> None:
    """Make the logs agree with the checkpoint a run resumes from: drop the steps after `step` and the
    epoch rows after `epoch` (and a line cut short by a kill); they are written again as the run replays."""
    run = RunDir(out)
    for path, key, last in ((run.steps, "step", step), (run.metrics_jsonl, "epoch", epoch)):
        if not path.is_file():
            continue
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(_kept_lines(path, key, last)), encoding="utf-8")
        os.replace(tmp, path)
    if run.metrics_jsonl.is_file():
        _write_metrics_csv(run)


def write_test_outputs(out: str | Path, info: StoreInfo, result: dict, fold, epoch, selected: str,
                       inputs: dict | None = None) -> dict:
    """test.json (UAR, WAR, per-class recall, confusion; with `inputs` (`input_record`) the clips listed,
    scored and unscored, `partial`, the streams and the weights) and predictions.parquet for the test fold."""
    run = RunDir(out)
    scores = score(result["labels"], result["logits"].argmax(1), info.labels)
    probs = torch.softmax(torch.from_numpy(result["logits"]), dim=1).numpy()
    clip_ids = [info.clip_ids[r] for r in result["rows"]]
    true = [info.labels[i] for i in result["labels"]]
    preds = Predictions.from_probs(info.labels, clip_ids, probs, true_labels=true, fold=fold)
    write_predictions(run.predictions, preds)
    summary = {"fold": fold, "selected": selected, "epoch": epoch, **scores.to_dict()}
    if inputs is not None:
        clips = inputs["clips"]["test"]
        summary.update({k: v for k, v in inputs.items() if k != "clips"}, clips=clips, partial=is_partial(clips))
    tmp = run.test_json.with_name(TEST_JSON + ".tmp")  # test.json marks a finished run: whole or not at all
    tmp.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    os.replace(tmp, run.test_json)
    return summary


# ------------------------------------------------------------------------------------------ objectives
class Objective:
    """What a run trains for. This base is supervised training: the store's labelled training clips, the
    model's forward, `losses.compute_loss` (classification, negative descriptors, video-description
    alignment), selected on validation. A subclass changes what it must (`zeroshot.ZeroShot`)."""

    mode = "supervised"
    loss_name = "train loss"

    def rule(self) -> BestOnValidation | LastEpoch:
        return BestOnValidation()

    def prepare(self, cfg: Config, store: str | Path) -> Prepared:
        return prepare(cfg, store)

    def announce(self, console, prep: Prepared, model, trainable: int, total: int) -> None:
        cfg, info, split = prep.cfg, prep.info, prep.split
        console.print(f"model {cfg.model.backbone} ({cfg.model.pretrained or 'random weights'}), streams "
                      f"{', '.join(model.streams)}: {trainable:,} trainable of {total:,} parameters")
        console.print(f"fold {split.fold}: {len(split.train)} train, {len(split.val)} validation, "
                      f"{len(split.test)} test clips; {len(info.labels)} classes ({info.attrs['label_set']})")
        console.print(f"  {describe(prep.counts['train'], 'training')}; {describe(prep.counts['test'])}")

    def run_info(self, prep: Prepared) -> dict:
        return {"mode": self.mode, "fold": prep.cfg.run.fold}

    def train_loader(self, prep: Prepared, model, world: int, rank: int):
        return make_loader(prep.info, prep.train_rows, model, prep.cfg, train=True, world=world, rank=rank)

    def network(self, model) -> torch.nn.Module:
        """The module whose forward a training batch goes through (and that DDP wraps)."""
        return model

    def find_unused(self, cfg: Config) -> bool:
        # every trainable tensor takes part in every step (no unused adapter sets: model.text_adapter_sets),
        # except the positive set when loss.ce is 0
        return not cfg.loss.ce

    def param_groups(self, model) -> list[dict]:
        return param_groups(model)

    def loss(self, outputs: dict, batch: dict, cfg: Config, world: int) -> tuple[torch.Tensor, dict]:
        """(loss to log, its parts); each process's loss is the mean over its own clips."""
        from ..model.losses import compute_loss

        return compute_loss(outputs, batch["label"], cfg.loss)

    def grad_scale(self, world: int) -> float:
        """Factor on the loss before backward so that DDP's average over processes is the global gradient."""
        return 1.0

    def summary(self) -> dict:
        return {}

    def report_test(self, console, run: RunDir, fold, t: dict, labels, fresh: bool, epoch) -> None:
        where = (f"test fold {fold} (checkpoint of epoch {epoch}, chosen on validation)" if fresh
                 else f"{run.root} is finished; test")
        console.print(f"{where}: {score_line(t)}")


class Supervised(Objective):
    """Training on the labels (the base objective, named)."""


# ------------------------------------------------------------------------------------ selection rules
class BestOnValidation:
    """Validate every `run.eval_every` epochs (and after the last); the best score is the tested checkpoint.
    A fold without validation clips keeps each epoch's weights as `best`, so the last one is tested."""

    selected = BEST

    def after_epoch(self, recipe: Recipe, epoch: int, row: dict) -> None:
        cfg, split, state = recipe.cfg, recipe.prep.split, recipe.state
        last_epoch = epoch + 1 == cfg.optim.epochs
        if len(split.val) and ((epoch + 1) % cfg.run.eval_every == 0 or last_epoch):
            uar, war, weighted = recipe.validate()
            metric = uar if cfg.run.select_metric == "uar" else war
            write_metrics(recipe.rundir, {**row, "split": "val", "loss": None, **recipe.val_loss, "uar": uar,
                                          "war": war})
            msg = f"epoch {epoch + 1}: train loss {row['loss']:.4f}, val UAR {pct(uar)} WAR {pct(war)}{weighted}"
            if state.best is None or metric > state.best:
                state.best, state.best_epoch = metric, epoch + 1
                recipe.save_best(cfg.to_json(), {"epoch": epoch + 1, "step": state.step, "val_uar": uar,
                                                  "val_war": war})
                msg += " (best)"
            recipe.console.print(msg)
        elif not len(split.val):
            state.best, state.best_epoch = None, epoch + 1
            recipe.save_best(recipe.cfg_json, {"epoch": epoch + 1, "step": state.step})
            recipe.console.print(f"epoch {epoch + 1}: train loss {row['loss']:.4f} (no validation clips)")

    def after_training(self, recipe: Recipe) -> None:
        pass


class LastEpoch:
    """No labels to select on: the weights of the last epoch are the tested checkpoint."""

    selected = LAST

    def after_epoch(self, recipe: Recipe, epoch: int, row: dict) -> None:
        recipe.console.print(f"epoch {epoch + 1}: {recipe.objective.loss_name} {row['loss']:.4f}")

    def after_training(self, recipe: Recipe) -> None:
        if not recipe.rundir.best.exists():
            recipe.save_best(recipe.cfg_json, {"epoch": recipe.state.epoch, "step": recipe.state.step,
                                               "selected": "last epoch (no labels to select on)"})


# ---------------------------------------------------------------------------------------------- recipe
@dataclass
class LoopState:
    """Where the run is; saved in every checkpoint's state.json."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    best: float | None = None
    best_epoch: int | None = None
    done: bool = False

    @classmethod
    def from_checkpoint(cls, saved: dict) -> LoopState:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


class Recipe:
    """One training run into one run folder; see the module docstring. `run()` is the whole recipe."""

    def __init__(self, cfg: Config, store: str | Path, out: str | Path, objective: Objective | None = None,
                 rule: BestOnValidation | LastEpoch | None = None, resume: bool = False, console=None,
                 progress: bool = True):
        self.cfg, self.store, self.rundir = cfg, store, RunDir(out)
        self.objective = objective or Supervised()
        self.rule = rule or self.objective.rule()
        self.resume, self.progress, self.console = resume, progress, console
        self.state = LoopState()
        self.stopped = False

    # --- setup -----------------------------------------------------------------------------------
    def _check_run_folder(self) -> None:
        """Refuse to overwrite a run, or to resume one that is not there, or a folder holding links."""
        refuse_links_under(self.rundir.root)  # nothing the run writes goes through a planted link
        for name in (LAST, BEST):  # a kill inside checkpoint.save leaves the previous checkpoint to restore
            ckpt.recover(self.rundir.checkpoint(name))
        out, has_last = self.rundir.root, self.rundir.last.exists()
        if has_last and not self.resume:
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
        if self.resume and not has_last:
            if not self.rundir.config.is_file():
                raise ConfigError(f"{out}: nothing to resume (no {CHECKPOINTS}/{LAST}); run without --resume")
            self.console.print("[yellow]note:[/] the run stopped before its first checkpoint; starting it from "
                               "the beginning")
            self.resume = False

    def setup(self) -> None:
        """Inputs checked, model built, optimiser and schedule made, state restored on --resume, DDP wrapped."""
        from rich.console import Console

        self.world, rank = init_distributed()
        self.main = rank == 0
        self.console = self.console or Console(stderr=True, quiet=not self.main)
        if self.cfg.run.threads:
            torch.set_num_threads(self.cfg.run.threads)
        self._check_run_folder()
        self.prep = self.objective.prepare(self.cfg, self.store)
        self.cfg, self.info = self.prep.cfg, self.prep.info
        # config.yaml keeps the streams as asked (`StreamPlan.asked_config`): compare like with like
        changes = check_resume(self.rundir, self.prep.streams.asked_config(self.cfg), self.info) if self.resume else {}
        for note in self.prep.notes:
            self.console.print(f"[yellow]note:[/] {note}")
        self.model, self.device, self.trainable, self.total = seeded_model(self.cfg, self.info)
        self.objective.announce(self.console, self.prep, self.model, self.trainable, self.total)
        if self.main:
            self.rundir.root.mkdir(parents=True, exist_ok=True)
            self.prep.streams.asked_config(self.cfg).dump(self.rundir.config)  # as asked; run.json: as fed
            write_run_info(self.rundir.root, **self.objective.run_info(self.prep), **store_run_info(self.info),
                           **input_record(self.prep))
            record_changes(self.rundir, changes)
        self._setup_training(rank)

    def _start_logger(self) -> None:
        """TensorBoard (or `run.logger`) from the step the run starts at; the config as text."""
        import yaml

        purge = self.state.step + 1 if self.state.step else None  # a resumed run rewrites what came after
        self.logger = make_logger(self.cfg.run.logger, self.rundir.root, self.main, self.cfg.to_dict(), purge)
        self.logger.text("config", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        self.val_scores = None

    def _setup_training(self, rank: int) -> None:
        cfg = self.cfg
        self.optimizer = torch.optim.AdamW(self.objective.param_groups(self.model), lr=cfg.optim.lr,
                                           weight_decay=cfg.optim.weight_decay)
        self.train_loader = self.objective.train_loader(self.prep, self.model, self.world, rank)
        self.val_loader = make_loader(self.info, self.prep.split.val, self.model, cfg, train=False)
        sampler = self.train_loader.batch_sampler
        if self.world > 1 and sampler.n < sampler.batch_size * self.world:  # a process would get no batch, and wait
            raise ConfigError(f"fold {self.prep.split.fold}: {sampler.n} training clips, fewer than one global batch "
                              f"(optim.batch_size {sampler.batch_size} x {self.world} processes); lower "
                              "optim.batch_size or start fewer processes")
        self.batches = len(sampler)
        self.steps_per_epoch = max(1, self.batches // cfg.optim.accumulate)
        self.schedule = make_schedule(self.optimizer, cfg, self.steps_per_epoch * cfg.optim.epochs)
        if self.resume:
            self._restore()
        elif self.main:
            trim_logs(self.rundir.root, 0, 0)  # rows of a start killed before its first checkpoint
        self.last_lr = self._lr_of_step(self.state.step - 1) if self.state.step else cfg.optim.lr
        self.cfg_json = cfg.to_json()
        self._start_logger()
        self._clips, self._step_started = 0, time.perf_counter()
        self.net = self.objective.network(self.model)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                           find_unused_parameters=self.objective.find_unused(cfg))

    def _restore(self) -> None:
        saved = checked_state(ckpt.read_state(self.rundir.last), self.rundir.last / ckpt.STATE_FILE,
                              self.cfg.optim.epochs, self.batches, self.steps_per_epoch * self.cfg.optim.epochs)
        saved = ckpt.load(self.rundir.last, self.model, self.optimizer)
        self.state = LoopState.from_checkpoint(saved)
        restore_schedule(self.schedule, saved.get("scheduler"), self.state.step)
        if self.main:
            trim_logs(self.rundir.root, self.state.step, self.state.epoch)
        self.console.print(f"resumed at epoch {self.state.epoch}, step {self.state.step}")

    def _lr_of_step(self, step: int) -> float:
        """The learning rate optimiser step `step` (from 0) used."""
        return self.schedule.base_lrs[0] * self.schedule.lr_lambdas[0](step)

    # --- checkpoints -----------------------------------------------------------------------------
    def save_last(self) -> None:
        if self.main:
            state = {**self.state.to_dict(), "scheduler": schedule_state(self.schedule)}
            ckpt.save(self.rundir.last, self.model, self.cfg_json, self.info.labels, state, self.optimizer,
                      extraction=store_extraction(self.info))

    def save_best(self, cfg_json: str, state: dict) -> None:
        ckpt.save(self.rundir.best, self.model, cfg_json, self.info.labels, state, extraction=store_extraction(self.info))

    # --- the loop --------------------------------------------------------------------------------
    def _micro_step(self, batch: dict, epoch: int) -> None:
        """Forward and backward of one batch; an optimiser step every `optim.accumulate` batches."""
        cfg, world, accum = self.cfg, self.world, self.cfg.optim.accumulate
        boundary = (self.state.batch_in_epoch + 1) % accum == 0
        sync = boundary or world == 1
        with self.net.no_sync() if (world > 1 and not sync) else nullcontext():
            with autocast(self.device, cfg.optim.amp):
                outputs = self.net(batch)
            loss, parts = self.objective.loss(outputs, batch, cfg, world)
            (loss * self.objective.grad_scale(world) / accum).backward()
        self.losses.append(float(loss.detach()))
        self._clips += len(batch["label"]) * world
        self.state.batch_in_epoch += 1
        if boundary:
            self._optimizer_step(epoch, parts)

    def _optimizer_step(self, epoch: int, parts: dict) -> None:
        cfg, accum = self.cfg, self.cfg.optim.accumulate
        lr = self.optimizer.param_groups[0]["lr"]
        # the gradient's norm before clipping (an infinite limit clips nothing and still measures it)
        norm = float(torch.nn.utils.clip_grad_norm_(
            [p for p in self.model.parameters() if p.grad is not None],
            cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        self.state.step += 1
        self.last_lr = lr
        step = self.state.step
        now = time.perf_counter()
        speed, self._clips, self._step_started = self._clips / max(now - self._step_started, 1e-9), 0, now
        if self.main:
            row = {"step": step, "epoch": epoch, "loss": float(np.mean(self.losses[-accum:])), "lr": lr, **parts,
                   "grad_norm": norm, "clips_per_s": speed}
            append_row(self.rundir.steps, row)
            self.logger.scalars(step, {f"train/{k}": v for k, v in row.items() if k not in ("step", "epoch")})
        if cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0:
            self.save_last()
        if cfg.run.max_steps and step >= cfg.run.max_steps:
            self.stopped = True

    def train_epoch(self, epoch: int) -> bool:
        """Train from the saved position in `epoch`; True when the epoch ran to its end."""
        self.state.epoch = epoch
        self.train_loader.batch_sampler.set_epoch(epoch, start=self.state.batch_in_epoch)
        self.train_loader.dataset.set_epoch(epoch)
        task = self.bar.add_task(f"epoch {epoch + 1}/{self.cfg.optim.epochs}", total=self.batches,
                                 completed=self.state.batch_in_epoch, info="")
        self.net.train()
        t0, self.losses = time.perf_counter(), []
        for batch in self.train_loader:
            self._micro_step(to_device(batch, self.device), epoch)
            self.bar.update(task, advance=1, info=f"loss {self.losses[-1]:.3f}")
            if self.stopped:
                break
        self.seconds = time.perf_counter() - t0
        self.bar.remove_task(task)
        return not self.stopped or self.state.batch_in_epoch >= self.batches

    def end_epoch(self, epoch: int) -> None:
        """The epoch's metrics row, the selection rule's turn (validation, `best`), the position moved on."""
        row = {"run": self.rundir.root.name, "fold": self.prep.split.fold, "epoch": epoch + 1, "step": self.state.step,
               "split": "train", "loss": float(np.mean(self.losses)) if self.losses else None, "uar": None,
               "war": None, "lr": self.last_lr, "seconds": self.seconds}
        if self.main:
            write_metrics(self.rundir, row)
            self.val_scores = None
            self.rule.after_epoch(self, epoch, row)
            self._log_epoch(row)
        self.state.epoch, self.state.batch_in_epoch = epoch + 1, 0
        self.state.done = epoch + 1 == self.cfg.optim.epochs

    def _log_epoch(self, row: dict) -> None:
        """The epoch's train loss and, when it validated, its validation loss, UAR, WAR, per-class recall."""
        values = {"epoch/train_loss": row["loss"]}
        if self.val_scores is not None:
            values.update({f"val/{k}": v for k, v in self.val_scores.items() if k != "recall"})
            values.update({f"val/recall/{name}": r for name, r in self.val_scores["recall"].items()})
        self.logger.scalars(self.state.step, values)

    def validate(self) -> tuple[float, float, str]:
        """Validation (UAR, WAR, note) of the current weights, at the negative weight chosen on them; the
        validation loss is kept in `self.val_loss` for the epoch's metrics row."""
        res = evaluate(self.model, self.val_loader, self.device, self.cfg.optim.amp)
        self.val_loss = validation_loss(self.cfg, res)
        uar, war, note = with_negative_weight(self.cfg, res)
        self.val_scores = {**self.val_loss, "uar": uar, "war": war, "recall": validation_recall(self.cfg, res,
                                                                                                 self.info.labels)}
        return uar, war, note

    def test(self) -> dict | None:
        """Score the test fold with the selected checkpoint (once: a finished run reads its test.json)."""
        split = self.prep.split
        if not (self.main and len(split.test)):
            return None
        if self.rundir.finished:
            t = json.loads(self.rundir.test_json.read_text())
            self.objective.report_test(self.console, self.rundir, split.fold, t, self.info.labels, False, t["epoch"])
            return t
        ckpt.load(self.rundir.best, self.model)
        # the negative-descriptor weight chosen on validation with that checkpoint
        self.cfg.loss.infer_negative = ckpt.read_meta(self.rundir.best)["config"]["loss"]["infer_negative"]
        epoch = ckpt.read_state(self.rundir.best)["epoch"]
        loader = make_loader(self.info, split.test, self.model, self.cfg, train=False)
        res = evaluate(self.model, loader, self.device, self.cfg.optim.amp)
        t = write_test_outputs(self.rundir.root, self.info, res, split.fold, epoch, self.rule.selected,
                               input_record(self.prep))
        self.logger.hparams(flat(self.cfg.to_dict()), {"test/uar": t["uar"], "test/war": t["war"]})
        self.objective.report_test(self.console, self.rundir, split.fold, t, self.info.labels, True, epoch)
        return t

    def _progress(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[info]}"), console=self.console,
                        disable=not (self.progress and self.main))

    def run_epochs(self) -> None:
        """Epochs from the saved position to the end, or to `run.max_steps` (then `self.stopped`)."""
        with self._progress() as self.bar:
            for epoch in range(self.state.epoch, self.cfg.optim.epochs):
                if self.state.done:
                    break
                if self.train_epoch(epoch):
                    self.end_epoch(epoch)
                self.save_last()
                barrier(self.world)
                if self.stopped:
                    return

    def run(self) -> dict:
        """setup, the epochs, the test: the whole recipe. Returns a summary of the run."""
        self.setup()
        self.run_epochs()
        if self.stopped:
            self.logger.close()
            self.console.print(f"stopped at step {self.state.step} (run.max_steps); continue with --resume")
            return {"step": self.state.step, "stopped": True}
        if self.main:
            self.rule.after_training(self)
        summary = {"step": self.state.step, "best_val": self.state.best, "best_epoch": self.state.best_epoch,
                   "fusion_weights": self.model.fusion_weights(), "trainable": self.trainable, "total": self.total,
                   **self.objective.summary()}
        test = self.test()
        self.logger.close()
        if test is not None:
            summary["test"] = test
        barrier(self.world)
        return summary


def train(cfg: Config, store: str | Path, out: str | Path, resume: bool = False, console=None,
          progress: bool = True) -> dict:
    """Train one fold with labels, select on validation, test; return a summary (see `Recipe`)."""
    return Recipe(cfg, store, out, Supervised(), resume=resume, console=console, progress=progress).run()
