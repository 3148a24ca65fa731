"""`finetrain run`: train FineCLIPER on one fold of a store, pick the checkpoint on validation, test it."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def _fail(err, message) -> None:
    err.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(2)


def _interrupted(out: Path) -> str:
    """One line for Ctrl-C: where the last checkpoint is and how to continue from it."""
    from ..rundir import RunDir
    from ..train.checkpoint import read_state

    run = RunDir(out)
    saved = []
    for sub in (run, *run.folds().values()):
        try:
            state = read_state(sub.last)
            saved.append(f"{sub.root.name} epoch {state.get('epoch')}, step {state.get('step')}")
        except (OSError, ValueError):  # no checkpoint there (CheckpointError is a ValueError)
            continue
    where = f"the last checkpoint: {'; '.join(saved)}" if saved else "no checkpoint yet (a re-run starts over)"
    return f"training interrupted ({where}); run the same command with --resume to continue"


def _config(out: Path, config: str | None, extra: list[str], resume: bool, err):
    """The run's config: OUT/config.yaml on --resume (plus overrides), else the preset or file with overrides."""
    import yaml

    from ..config import apply, load_config, parse_override, validate
    from ..rundir import RunDir

    saved = RunDir(out).config
    if not (resume and saved.is_file()):
        return load_config(config, extra)
    if config is not None:
        err.print(f"note: --resume uses {saved}; --config {config} is ignored")
    cfg = load_config("default")
    apply(cfg, yaml.safe_load(saved.read_text(encoding="utf-8")), str(saved))
    for item in extra:  # not `text`: that is the --text option
        apply(cfg, parse_override(item), f"override {item!r}")
    validate(cfg)
    return cfg


def _train(cfg, store: Path, out: Path, folds, single, resume: bool, mode: str, text: str, quiet: bool) -> None:
    from ..train.foldrun import run_folds
    from ..train.recipe import train
    from ..train.zeroshot import train_zero_shot

    if folds is not None and single is None:
        run_folds(cfg, store, out, folds, resume=resume, mode=mode, text=text, progress=not quiet)
    elif mode == "zero-shot":
        train_zero_shot(cfg, store, out, text=text, resume=resume, progress=not quiet)
    else:
        train(cfg, store, out, resume=resume, progress=not quiet)


def run_command(store: Path, out: Path, config: str | None, overrides: list[str] | None, resume: bool,
                fold: str | None, mode: str, text: str, quiet: bool, strict_protocol: bool = False,
                drop_missing_streams: bool = False, logger: str | None = None, print_config: bool = False) -> None:
    """Check the options, load the config, train; every refusal is one line and exit status 2."""
    import pickle

    from rich.console import Console
    from safetensors import SafetensorError

    from fineschema.errors import SchemaError
    from fineschema.oserrors import machine_error_line

    from ..errors import FinetrainError
    from ..train.checkpoint import refuse_pretrained
    from ..train.foldrun import MODES, parse_folds

    err = Console(stderr=True)
    cfg = None
    try:
        if mode not in MODES:
            _fail(err, f"--mode must be supervised or zero-shot, got {mode!r}")
        folds = parse_folds(fold)
        single = folds[0] if isinstance(folds, list) and len(folds) == 1 else None
        extra = list(overrides or []) + ([f"run.fold={single}"] if single is not None else [])
        extra += ["run.strict_protocol=true"] * strict_protocol + ["model.missing_streams=drop"] * drop_missing_streams
        extra += [f"run.logger={logger}"] if logger else []
        cfg = _config(out, config, extra, resume, err)
        if print_config:
            import yaml

            sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            return
        _train(cfg, store, out, folds, single, resume, mode, text, quiet)
    except KeyboardInterrupt:
        err.print(f"[yellow]{_interrupted(out)}", highlight=False, soft_wrap=True)
        sys.exit(130)  # the shell's code for SIGINT
    except (FinetrainError, SchemaError) as exc:
        _fail(err, exc)
    except Exception as exc:
        if (line := machine_error_line(exc, f"finetrain run into {out}")) is not None:
            _fail(err, line)  # a full disk while writing a checkpoint is not a bad model.pretrained
        if not isinstance(exc, (pickle.UnpicklingError, SafetensorError)):
            raise
        _fail(err, refuse_pretrained(cfg.model.pretrained if cfg else None, exc))  # torch's weights-only refusal


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        store: Path = typer.Option(..., "--store", help="A store written by `fineprep extract`."),
        out: Path = typer.Option(..., "--out", help="Run folder: config, checkpoints, metrics, test scores."),
        config: str = typer.Option(None, "--config", help="A preset name (`finetrain configs` lists them) or a YAML "
                                   "file."),
        overrides: list[str] = typer.Argument(None, help="section.key=value settings, e.g. optim.lr=5e-4."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
        fold: str = typer.Option(None, "--fold", help="Fold to train and test (default: run.fold of the config); "
                                 "`all` or a list like 1,2 trains each into OUT/fold<K>/ and writes the fold table."),
        mode: str = typer.Option("supervised", "--mode", help="supervised, or zero-shot (video-text training "
                                 "without labels, classification by label descriptors)."),
        text: str = typer.Option("captions", "--text", help="zero-shot text: captions (MAFW caption_en) or "
                                 "descriptions (STORE/descriptions)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
        strict_protocol: bool = typer.Option(False, "--strict-protocol", help="Refuse a fold whose listed test "
                                             "clips cannot all be scored (run.strict_protocol=true)."),
        drop_missing_streams: bool = typer.Option(False, "--drop-missing-streams", help="Train without the config's "
                                                  "streams the store cannot feed, and record it (an ablation; "
                                                  "model.missing_streams=drop)."),
        logger: str = typer.Option(None, "--logger", help="tensorboard (default: RUN/tensorboard/), wandb "
                                   "(offline, when installed) or none (run.logger)."),
        print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    ) -> None:
        """Train on the fold's training clips, select on a validation split carved from them, report the test fold."""
        run_command(store, out, config, overrides, resume, fold, mode, text, quiet, strict_protocol,
                    drop_missing_streams, logger, print_config)
