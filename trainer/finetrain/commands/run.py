"""`finetrain run`: train FineCLIPER on one fold of a store, pick the checkpoint on validation, test it."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        store: Path = typer.Option(..., "--store", help="A store written by `fineprep extract`."),
        out: Path = typer.Option(..., "--out", help="Run folder: config, checkpoints, metrics, test scores."),
        config: str = typer.Option(None, "--config", help="A preset name (default, tiny) or a YAML file."),
        overrides: list[str] = typer.Argument(None, help="section.key=value settings, e.g. optim.lr=5e-4."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
        fold: str = typer.Option(None, "--fold", help="Fold to train and test (default: run.fold of the config); "
                                 "`all` or a list like 1,2 trains each into OUT/fold<K>/ and writes the fold table."),
        mode: str = typer.Option("supervised", "--mode", help="supervised, or zero-shot (video-text training "
                                 "without labels, classification by label descriptors)."),
        text: str = typer.Option("captions", "--text", help="zero-shot text: captions (MAFW caption_en) or "
                                 "descriptions (STORE/descriptions)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Train on the fold's training clips, select on a validation split carved from them, report the test fold."""
        import sys

        import yaml
        from rich.console import Console

        from fineschema import StoreError

        from ..backbone import BackboneError
        from ..checkpoint import CheckpointError, refuse_pretrained, unreadable_weights
        from ..config import ConfigError, apply, load_config, parse_override, validate
        from ..engine import CONFIG_FILE, train
        from ..folds import parse_folds, run_folds
        from ..runinfo import is_main_process, store_run_info, write_run_info
        from ..split import SplitError
        from ..zeroshot import ZeroShotError, train_zero_shot

        err = Console(stderr=True)
        if mode not in ("supervised", "zero-shot"):
            err.print(f"[red]error:[/] --mode must be supervised or zero-shot, got {mode!r}", highlight=False)
            sys.exit(2)
        try:
            folds = parse_folds(fold)
        except ValueError as exc:
            err.print(f"[red]error:[/] {exc}", highlight=False)
            sys.exit(2)
        single = folds[0] if isinstance(folds, list) and len(folds) == 1 else None
        extra = list(overrides or []) + ([f"run.fold={single}"] if single is not None else [])
        try:
            if resume and (out / CONFIG_FILE).is_file():
                if config is not None:
                    err.print(f"note: --resume uses {out / CONFIG_FILE}; --config {config} is ignored")
                cfg = load_config("default")
                data = yaml.safe_load((out / CONFIG_FILE).read_text(encoding="utf-8"))
                apply(cfg, data, str(out / CONFIG_FILE))
                for item in extra:  # not `text`: that is the --text option
                    apply(cfg, parse_override(item), f"override {item!r}")
                validate(cfg)
            else:
                cfg = load_config(config, extra)
            if folds is not None and single is None:
                run_folds(cfg, store, out, folds, resume=resume, mode=mode, text=text, progress=not quiet)
            elif mode == "zero-shot":
                train_zero_shot(cfg, store, out, text=text, resume=resume, progress=not quiet)
            else:
                from ..data import StoreInfo

                train(cfg, store, out, resume=resume, progress=not quiet)
                if is_main_process():
                    write_run_info(out, mode=mode, fold=cfg.run.fold, **store_run_info(StoreInfo.for_config(store, cfg)))
        except (ConfigError, StoreError, SplitError, BackboneError, CheckpointError, ZeroShotError,
                ValueError) as exc:
            err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except Exception as exc:
            if not unreadable_weights(exc):
                raise
            err.print(f"[red]error:[/] {refuse_pretrained(cfg.model.pretrained, exc)}", highlight=False,
                      soft_wrap=True)
            sys.exit(2)
