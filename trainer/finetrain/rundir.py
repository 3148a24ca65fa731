"""The layout of a run folder, in one place (as `fineschema.layout` holds the store's).

    RUN/config.yaml            the resolved config (what `--resume` reads back)
    RUN/run.json               how the run was made: mode, text, store, dataset (`finetrain.runinfo`)
    RUN/steps.jsonl            one row per optimiser step
    RUN/metrics.jsonl, .csv    one row per epoch and split (`fineschema.tables.METRICS`)
    RUN/checkpoints/last/      where `--resume` continues from
    RUN/checkpoints/best/      the checkpoint the test fold is scored with
    RUN/test.json              the test fold's scores; its presence marks a finished run
    RUN/predictions.parquet    per-clip test predictions (`finetrain.score.predictions`)
    RUN/fold<K>/               a sub-run per fold of a `--fold` run, laid out the same way
    RUN/fold_table.json, .md   the per-fold and mean table of such a run
    RUN/eval/<NAME>/           `finetrain eval` of the run on a store (predictions, fold table)
    RUN/report/                `finetrain report`'s PNG, HTML page and fold table
    RUN/tensorboard/           TensorBoard event files (`finetrain.train.logger`, run.logger=tensorboard)

A run folder is input like any file: sub-run names are only ever `fold` + digits, and every path here
is built under the folder, never from names read out of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.yaml"
RUN_INFO_FILE = "run.json"
STEPS_JSONL = "steps.jsonl"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
TEST_JSON = "test.json"
PREDICTIONS_FILE = "predictions.parquet"
FOLD_TABLE_JSON = "fold_table.json"
FOLD_TABLE_MD = "fold_table.md"
CHECKPOINTS = "checkpoints"
EVAL_DIR = "eval"
REPORT_DIR = "report"
TENSORBOARD_DIR = "tensorboard"
LAST, BEST = "last", "best"
_FOLD_DIR = re.compile(r"fold([1-9][0-9]{0,2})")


@dataclass(frozen=True)
class RunDir:
    """One run folder (a whole run, or one `fold<K>` sub-run of it)."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def run_info(self) -> Path:
        return self.root / RUN_INFO_FILE

    @property
    def steps(self) -> Path:
        return self.root / STEPS_JSONL

    @property
    def metrics_jsonl(self) -> Path:
        return self.root / METRICS_JSONL

    @property
    def metrics_csv(self) -> Path:
        return self.root / METRICS_CSV

    @property
    def test_json(self) -> Path:
        return self.root / TEST_JSON

    @property
    def predictions(self) -> Path:
        return self.root / PREDICTIONS_FILE

    @property
    def fold_table_json(self) -> Path:
        return self.root / FOLD_TABLE_JSON

    @property
    def fold_table_md(self) -> Path:
        return self.root / FOLD_TABLE_MD

    @property
    def report(self) -> Path:
        return self.root / REPORT_DIR

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR

    def evaluation(self, name: str) -> Path:
        """Where `finetrain eval` writes its scoring of the run on one store (`name` is a plain folder name)."""
        if not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"an evaluation folder is a plain name, not {name!r}")
        return self.root / EVAL_DIR / name

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    def checkpoint(self, which: str = BEST) -> Path:
        """`checkpoints/last` or `checkpoints/best`."""
        if which not in (LAST, BEST):
            raise ValueError(f"a checkpoint is {LAST!r} or {BEST!r}, not {which!r}")
        return self.root / CHECKPOINTS / which

    @property
    def last(self) -> Path:
        return self.checkpoint(LAST)

    @property
    def best(self) -> Path:
        return self.checkpoint(BEST)

    @property
    def finished(self) -> bool:
        """The test fold was scored (test.json is written last, whole or not at all)."""
        return self.test_json.is_file()

    @property
    def has_model(self) -> bool:
        return self.best.is_dir()

    def fold(self, k: int) -> RunDir:
        """The sub-run of fold `k`."""
        if not 1 <= int(k) <= 999:
            raise ValueError(f"fold numbers run from 1; got {k}")
        return RunDir(self.root / f"fold{int(k)}")

    def folds(self) -> dict[int, RunDir]:
        """The `fold<K>/` sub-runs present, by fold number, in fold order."""
        if not self.root.is_dir():
            return {}
        found = {}
        for child in self.root.iterdir():
            match = _FOLD_DIR.fullmatch(child.name)
            if match and child.is_dir() and not child.is_symlink():
                found[int(match.group(1))] = RunDir(child)
        return dict(sorted(found.items()))

    @property
    def fold_number(self) -> int | None:
        """K for a `fold<K>` sub-run, else None."""
        match = _FOLD_DIR.fullmatch(self.root.name)
        return int(match.group(1)) if match else None
