"""Evaluating a run on a store, its own or another dataset's: classes are matched by canonical name.

A model trained on MAFW (11 classes) scores DFEW or FERV39k clips over the 7 classes they share;
a DFEW model scores only the MAFW clips whose label is one of its 7 classes. In both directions the
evaluated class set is the intersection, in the canonical order of `fineschema.labels`, and the
model's probabilities are renormalised over those classes (the same as a softmax over the logits of
the shared classes alone), so a prediction is never a class the target dataset cannot contain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fineschema.labels import MAFW11, MAFW_COMBOS, label_set

from .errors import FinetrainError
from .predictions import Predictions


class ClassMappingError(FinetrainError, ValueError):
    """Two label sets with nothing in common, or a label that is not canonical."""


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
def model_runs(run: str | Path, fold: int | None = None) -> list[tuple[int | None, Path]]:
    """(training fold, folder) of each model in a run: the run itself, or its `fold<K>/` sub-runs."""
    run = Path(run)
    if (run / "checkpoints" / "best").is_dir():
        found = [(_run_fold(run), run)]
    else:
        found = [(_run_fold(d), d) for d in sorted(run.glob("fold*")) if (d / "checkpoints" / "best").is_dir()]
    if not found:
        raise FileNotFoundError(f"{run}: no trained model (checkpoints/best) here or in fold*/ sub-runs")
    if fold is not None:
        found = [(k, d) for k, d in found if k == fold]
        if not found:
            raise ValueError(f"{run}: no model trained on fold {fold}")
    return found


def _run_fold(folder: Path) -> int | None:
    from .checkpoint import read_meta

    return read_meta(folder / "checkpoints" / "best")["config"]["run"]["fold"]


def evaluate_run(run: str | Path, store: str | Path, out: str | Path | None = None, fold: int | None = None,
                 clips: str = "auto", device: str = "cpu", console=None) -> dict:
    """Evaluate every model of a run on a store; write per-clip predictions and the fold table.

    `clips`: `test` scores each fold-K model on the store's test clips of fold K; `all` on every labelled
    clip; `auto` is `test` when the store has the model's fold and `all` otherwise (e.g. FERV39k's single
    split for a DFEW fold-3 model). Supervised models score the classes both datasets share (`ClassMap`);
    zero-shot models are rebuilt with the store's own classes, since their classifier is the descriptors.
    """
    import numpy as np
    import torch
    from rich.console import Console

    from . import engine
    from .data import StoreInfo
    from .folds import build_table, collect, store_folds, to_markdown, write_table
    from .predict import load_model, model_frames, run_labels
    from .predictions import PREDICTIONS_FILE, write_predictions
    from .runinfo import read_run_info

    if clips not in ("auto", "test", "all"):
        raise ValueError(f"--clips must be auto, test or all; got {clips!r}")
    console = console or Console(stderr=True)
    info = StoreInfo.open(store)
    models = model_runs(run, fold)
    if out is None:
        name = f"{info.attrs.get('dataset', 'store')}-{Path(store).resolve().name}"
        name += (f"-fold{fold}" if fold is not None else "") + ("-all" if clips == "all" else "")
        out = Path(run) / "eval" / name
    out = Path(out)
    in_store = store_folds(info)
    for k, folder in models:
        zero_shot = read_run_info(folder).get("mode") == "zero-shot"
        trained = run_labels(folder)
        cmap = class_map(info.labels, info.labels) if zero_shot else class_map(trained, info.labels)
        use_test = clips == "test" or (clips == "auto" and k in in_store)
        if use_test and k not in in_store:
            raise ValueError(f"store {store} has no fold {k} to test the fold-{k} model on; use --clips all")
        rows = np.asarray([i for i in range(len(info)) if (not use_test or k in info.test_folds[i])
                           and info.labels[info.label_index[i]] in cmap.shared], dtype=np.int64)
        if len(rows) == 0:
            raise ValueError(f"store {store}: no clips of the classes {', '.join(cmap.shared)} to evaluate")
        model, cfg = load_model(folder, labels=cmap.source, device=device)
        cfg.data.frames = min(model_frames(folder / "checkpoints" / "best"), info.frames)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        loader = engine.make_loader(info, rows, model, cfg, train=False)
        res = engine.evaluate(model, loader, torch.device(device))
        probs = torch.softmax(torch.from_numpy(res["logits"]), dim=1).numpy()
        preds = Predictions.from_probs(cmap.source, [info.clip_ids[r] for r in res["rows"]], probs,
                                       [info.labels[i] for i in res["labels"]], k)
        mapped = cmap.apply(preds)
        target = out / (f"fold{k}" if len(models) > 1 else "") / PREDICTIONS_FILE
        write_predictions(target, mapped)
        s = mapped.scores()
        console.print(f"{folder.name} (fold {k}, {'zero-shot' if zero_shot else 'supervised'}) on "
                      f"{Path(store).name}: {len(mapped)} {'test' if use_test else 'labelled'} clips, "
                      f"{cmap.describe()}: UAR {s.uar:.4f} WAR {s.war:.4f}")
    table = build_table(collect([out]), info.attrs.get("dataset") if clips != "all" and len(models) > 1 else None)
    js, md = write_table(out, table)
    table["paths"] = {"json": str(js), "markdown": str(md), "markdown_text": to_markdown(table)}
    return table
