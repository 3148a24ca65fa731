"""Evaluating a run on a store, its own or another dataset's: classes are matched by canonical name.

A model trained on MAFW (11 classes) scores DFEW or FERV39k clips over the 7 classes they share;
a DFEW model scores only the MAFW clips whose label is one of its 7 classes. In both directions the
evaluated class set is the intersection, in the canonical order of `fineschema.labels`, and the
model's probabilities are renormalised over those classes (the same as a softmax over the logits of
the shared classes alone), so a prediction is never a class the target dataset cannot contain.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fineschema.labels import MAFW11, MAFW_COMBOS, label_set

from ..errors import FinetrainError
from ..rundir import RunDir
from ..score.predictions import Predictions
from ..score.protocol import score_line


class ClassMappingError(FinetrainError, ValueError):
    """Two label sets with nothing in common, or a label that is not canonical."""


class EvalError(FinetrainError, ValueError):
    """An evaluation that cannot run as asked: a fold the run or store lacks, no clips to score, or a
    description set the store does not hold."""


def _canonical_order(names: set[str]) -> tuple[str, ...]:
    order = {name: i for i, name in enumerate(MAFW11 + MAFW_COMBOS)}
    unknown = sorted(n for n in names if n not in order)
    if unknown:
        raise ClassMappingError(f"labels {unknown} are not canonical names (see fineschema.labels)")
    return tuple(sorted(names, key=order.__getitem__))


@dataclass(frozen=True)
class ClassMap:
    """How the model's classes (`source`) meet the store's classes (`target`)."""

    source: tuple[str, ...]
    target: tuple[str, ...]
    shared: tuple[str, ...]

    @property
    def source_columns(self) -> list[int]:
        """Columns of the model's output that belong to the shared classes, in `shared` order."""
        return [self.source.index(n) for n in self.shared]

    @property
    def dropped_source(self) -> tuple[str, ...]:
        return tuple(n for n in self.source if n not in self.shared)

    @property
    def dropped_target(self) -> tuple[str, ...]:
        return tuple(n for n in self.target if n not in self.shared)

    @property
    def identity(self) -> bool:
        return self.source == self.target

    def describe(self) -> str:
        if self.identity:
            return f"same {len(self.shared)} classes"
        text = f"{len(self.shared)} shared classes ({', '.join(self.shared)})"
        if self.dropped_source:
            text += f"; model classes not scored: {', '.join(self.dropped_source)}"
        if self.dropped_target:
            text += f"; store clips of {', '.join(self.dropped_target)} left out"
        return text

    def restrict_probs(self, probs) -> np.ndarray:
        """Model probabilities (N, len(source)) -> renormalised probabilities over `shared`."""
        p = np.asarray(probs, dtype=np.float64)[:, self.source_columns]
        total = p.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / len(self.shared))
        return out.astype(np.float32)

    def keep_clip(self, true_label: str | None) -> bool:
        """A clip is scored when its label is shared (unlabelled clips are kept for prediction only)."""
        return true_label is None or true_label in self.shared

    def apply(self, preds: Predictions) -> Predictions:
        """Model-space predictions on target clips -> shared-space predictions on the clips it can score."""
        if preds.labels != self.source:
            raise ClassMappingError(f"predictions are over {preds.labels}, the map expects {self.source}")
        kept = preds.select([self.keep_clip(t) for t in preds.true_labels])
        return Predictions.from_probs(
            self.shared, kept.clip_ids, self.restrict_probs(kept.probs), kept.true_labels, kept.folds
        )


def class_map(source: Sequence[str], target: Sequence[str]) -> ClassMap:
    """Match two label sets by canonical name; refuse when they share nothing."""
    source, target = tuple(source), tuple(target)
    if source == target:
        return ClassMap(source, target, source)
    _canonical_order(set(source) | set(target))  # both sides must be canonical names
    shared = _canonical_order(set(source) & set(target))
    if not shared:
        raise ClassMappingError(
            f"the model's classes ({', '.join(source)}) and the store's ({', '.join(target)}) share no class"
        )
    return ClassMap(source, target, shared)


def dataset_map(source_set: str, target_set: str) -> ClassMap:
    """`class_map` between two named label sets, e.g. `dataset_map("mafw", "dfew")`."""
    return class_map(label_set(source_set), label_set(target_set))


# ------------------------------------------------------------------------------ evaluating a run
CLIP_CHOICES = ("auto", "test", "all")


def model_runs(run: str | Path, fold: int | None = None) -> list[tuple[int | None, Path]]:
    """(training fold, folder) of each model in a run: the run itself, or its `fold<K>/` sub-runs."""
    top = RunDir(run)
    subs = [top] if top.has_model else [sub for sub in top.folds().values() if sub.has_model]
    found = [(_run_fold(sub), sub.root) for sub in subs]
    if not found:
        raise FileNotFoundError(f"{run}: no trained model (checkpoints/best) here or in fold<K>/ sub-runs")
    if fold is not None:
        found = [(k, d) for k, d in found if k == fold]
        if not found:
            raise EvalError(f"{run}: no model trained on fold {fold}")
    return found


def _run_fold(run: RunDir) -> int | None:
    from ..train.checkpoint import read_meta

    return read_meta(run.best)["config"]["run"]["fold"]


@dataclass(frozen=True)
class DescriptionSet:
    """The (describer model, prompt) whose descriptions a store's clips are scored with; None: not named."""

    model: str | None = None
    prompt: str | None = None

    @property
    def named(self) -> bool:
        return self.model is not None or self.prompt is not None

    def describe(self) -> str:
        return " / ".join(x for x in (self.model, self.prompt) if x is not None)

    @classmethod
    def of_run(cls, folder: str | Path) -> DescriptionSet:
        """The set the run trained on, as its config named it (`data.descriptions_model` / `_prompt`)."""
        from ..train.checkpoint import read_meta

        data = read_meta(RunDir(folder).best)["config"].get("data") or {}
        return cls(data.get("descriptions_model"), data.get("descriptions_prompt"))


def open_store(store: str | Path, chosen: DescriptionSet):
    """The store (`data.StoreInfo`) with the descriptions of `chosen`, or of the store's only set.

    A store described by several sets with none chosen is refused in one line, as training refuses it,
    but naming the `finetrain eval` options; a named set the store lacks is refused too rather than
    scoring the description stream on nothing."""
    from fineschema import DescriptionChoiceError, description_sets, read_descriptions

    from ..data.store import StoreInfo

    try:
        info = StoreInfo.open(store, chosen.model, chosen.prompt)
    except DescriptionChoiceError as exc:
        raise DescriptionChoiceError(_with_eval_options(str(exc))) from None
    if chosen.named and not info.descriptions and not info.random_descriptions:
        present = description_sets(read_descriptions(store))
        if present:
            listed = ", ".join(f"{m} / {p}" for m, p in present)
            raise EvalError(f"store {store} has no descriptions of {chosen.describe()}; it has {listed}: "
                            "name one with --descriptions-model (and --descriptions-prompt)")
    return info


def _with_eval_options(message: str) -> str:
    """Training's refusal names the config keys; `finetrain eval` sets them through its options."""
    return (message.replace("data.descriptions_model=...", "--descriptions-model NAME")
            .replace("data.descriptions_prompt=...", "--descriptions-prompt ID"))


def default_out(run: str | Path, store: str | Path, info, fold: int | None, clips: str,
                chosen: DescriptionSet = DescriptionSet()) -> Path:
    """RUN/eval/<dataset>-<store folder>[-fold<K>][-all][-desc-<set>]."""
    name = f"{info.attrs.get('dataset', 'store')}-{Path(store).resolve().name}"
    name += (f"-fold{fold}" if fold is not None else "") + ("-all" if clips == "all" else "")
    if chosen.named:
        name += "-desc-" + re.sub(r"[^A-Za-z0-9._-]+", "_", chosen.describe().replace(" / ", "-"))
    return RunDir(run).evaluation(name)


def _use_test(clips: str, k: int | None, in_store: list[int], store: str | Path) -> bool:
    use_test = clips == "test" or (clips == "auto" and k in in_store)
    if use_test and k not in in_store:
        raise EvalError(f"store {store} has no fold {k} to test the fold-{k} model on; use --clips all")
    return use_test


def _rows(info, test_fold: int | None, cmap: ClassMap, store: str | Path) -> np.ndarray:
    """Store rows to score: labelled clips of the shared classes (of the test fold, when one is given)."""
    rows = np.asarray([i for i in range(len(info)) if (test_fold is None or test_fold in info.test_folds[i])
                       and info.labels[info.label_index[i]] in cmap.shared], dtype=np.int64)
    if len(rows) == 0:
        raise EvalError(f"store {store}: no clips of the classes {', '.join(cmap.shared)} to evaluate")
    return rows


def _predict_rows(folder: Path, info, rows: np.ndarray, labels: tuple[str, ...], k: int | None,
                  chosen: DescriptionSet, device: str) -> Predictions:
    """Model-space predictions of one run's model on `rows` of the store."""
    import torch

    from ..train import recipe
    from .predict import load_model, model_frames

    model, cfg = load_model(folder, labels=labels, device=device)
    cfg.data.frames = min(model_frames(RunDir(folder).best), info.frames)
    if chosen.named:  # the set the store was opened with is the one the config now names
        cfg.data.descriptions_model, cfg.data.descriptions_prompt = chosen.model, chosen.prompt
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    loader = recipe.make_loader(info, rows, model, cfg, train=False)
    res = recipe.evaluate(model, loader, torch.device(device))
    probs = torch.softmax(torch.from_numpy(res["logits"]), dim=1).numpy()
    return Predictions.from_probs(labels, [info.clip_ids[r] for r in res["rows"]], probs,
                                  [info.labels[i] for i in res["labels"]], k), cfg


def _evaluate_model(folder: Path, k: int | None, info, store: str | Path, clips: str, in_store: list[int],
                    chosen: DescriptionSet, device: str) -> tuple[Predictions, str]:
    """Shared-space predictions of one model, and the line that reports them."""
    from ..runinfo import read_run_info
    from .predict import run_labels

    zero_shot = read_run_info(folder).get("mode") == "zero-shot"
    cmap = class_map(info.labels, info.labels) if zero_shot else class_map(run_labels(folder), info.labels)
    use_test = _use_test(clips, k, in_store, store)
    rows = _rows(info, k if use_test else None, cmap, store)
    preds, cfg = _predict_rows(folder, info, rows, cmap.source, k, chosen, device)
    mapped = cmap.apply(preds)
    s = mapped.scores()
    record = _coverage(info, rows, k if use_test else None, cfg, s)
    line = (f"{folder.name} (fold {k}, {'zero-shot' if zero_shot else 'supervised'}) on {Path(store).name}: "
            f"{cmap.describe()}: {score_line(record)}")
    return mapped, line, record


def _coverage(info, rows, fold: int | None, cfg, s) -> dict:
    """What an evaluation's numbers cover, as test.json says it for training (`folds.RECORD_KEYS`)."""
    from ..score.protocol import is_partial, scored_counts
    from ..train.streams import paper_row, weights_record

    clips = scored_counts(info, rows, fold)
    return {"fold": fold, "uar": s.uar, "war": s.war, "count": int(len(rows)), "clips": clips,
            "partial": is_partial(clips), "streams": list(cfg.model.streams), "paper_row": paper_row(cfg.model.streams),
            **weights_record(cfg)}


def evaluate_run(run: str | Path, store: str | Path, out: str | Path | None = None, fold: int | None = None,
                 clips: str = "auto", device: str = "cpu", console=None,
                 descriptions: DescriptionSet | None = None) -> dict:
    """Evaluate every model of a run on a store; write per-clip predictions and the fold table.

    `clips`: `test` scores each fold-K model on the store's test clips of fold K; `all` on every labelled
    clip; `auto` is `test` when the store has the model's fold and `all` otherwise (e.g. FERV39k's single
    split for a DFEW fold-3 model). Supervised models score the classes both datasets share (`ClassMap`);
    zero-shot models are rebuilt with the store's own classes, since their classifier is the descriptors.
    `descriptions` names the store's description set; by default the one the run trained on, if its
    config named one, else the store's only set (`open_store`).
    """
    from rich.console import Console

    from ..score.folds import build_table, collect, store_folds, to_markdown, write_table
    from ..score.predictions import write_predictions

    if clips not in CLIP_CHOICES:
        raise EvalError(f"--clips must be {', '.join(CLIP_CHOICES[:-1])} or {CLIP_CHOICES[-1]}; got {clips!r}")
    console = console or Console(stderr=True)
    models = model_runs(run, fold)
    chosen = descriptions if descriptions is not None and descriptions.named else DescriptionSet.of_run(models[0][1])
    info = open_store(store, chosen)
    out = RunDir(out if out is not None else default_out(run, store, info, fold, clips,
                                                         descriptions or DescriptionSet()))
    in_store = store_folds(info)
    for k, folder in models:
        mapped, line, record = _evaluate_model(folder, k, info, store, clips, in_store, chosen, device)
        where = out.fold(k) if len(models) > 1 else out
        write_predictions(where.predictions, mapped)
        where.test_json.write_text(json.dumps(record, indent=1), encoding="utf-8")  # what the numbers cover
        console.print(line)
    table = build_table(collect([out.root]),
                        info.attrs.get("dataset") if clips != "all" and len(models) > 1 else None)
    js, md = write_table(out.root, table)
    table["paths"] = {"json": str(js), "markdown": str(md), "markdown_text": to_markdown(table)}
    return table
