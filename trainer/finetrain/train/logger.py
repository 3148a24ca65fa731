"""Training curves through a real logger, beside the run's own JSONL files.

`run.logger` (`finetrain run --logger`) picks one: `tensorboard` (default; event files under
RUN/tensorboard/, read by TensorBoard and its `EventAccumulator`), `wandb` (offline mode, under
RUN/wandb/, when the wandb package is installed; `wandb sync` uploads it later) or `none`. The same
numbers go to `steps.jsonl` and `metrics.jsonl`, which stay the record the report and the tests read.
Under DDP only rank 0 logs. A resumed run drops the events after the step it resumes from
(TensorBoard's purge_step), so its curves are those of an unbroken run.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError
from ..rundir import RunDir

LOGGERS = ("tensorboard", "wandb", "none")


class MetricLogger:
    """The interface, and the `none` logger."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        pass

    def text(self, tag: str, text: str) -> None:
        pass

    def hparams(self, params: dict, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger(MetricLogger):
    def __init__(self, folder: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            if value is not None:
                self.writer.add_scalar(tag, float(value), global_step=step)

    def text(self, tag: str, text: str) -> None:
        self.writer.add_text(tag, "```\n" + text + "\n```")

    def hparams(self, params: dict, metrics: dict[str, float]) -> None:
        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
        self.writer.add_hparams(clean, {k: float(v) for k, v in metrics.items() if v is not None}, run_name=".")

    def close(self) -> None:
        self.writer.close()


class WandbLogger(MetricLogger):
    def __init__(self, folder: Path, config: dict):
        import wandb

        self.run = wandb.init(mode="offline", dir=str(folder), config=config, reinit=True)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log({k: v for k, v in values.items() if v is not None}, step=step)

    def text(self, tag: str, text: str) -> None:
        self.run.summary[tag] = text

    def hparams(self, params: dict, metrics: dict[str, float]) -> None:
        self.run.summary.update(metrics)

    def close(self) -> None:
        self.run.finish()


def make_logger(kind: str, folder: Path, main: bool, config: dict, purge_step: int | None = None) -> MetricLogger:
    """The run's logger (rank 0 only; others get the silent one). An unavailable choice is refused."""
    if kind not in LOGGERS:
        raise ConfigError(f"run.logger must be one of {', '.join(LOGGERS)}, got {kind!r}")
    if not main or kind == "none":
        return MetricLogger()
    try:
        if kind == "tensorboard":
            return TensorBoardLogger(RunDir(folder).tensorboard, purge_step)
        return WandbLogger(folder, config)
    except ImportError as exc:
        raise ConfigError(f"run.logger={kind} needs the {exc.name} package (pip install {exc.name}), or choose "
                          "--logger none") from None


def flat(config: dict, prefix: str = "") -> dict:
    """{"optim.lr": 0.001, ...}: a nested config as the flat keys hparams take."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, name + "."))
        else:
            out[name] = value
    return out
