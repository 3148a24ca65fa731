"""`--resume` continues the run that is in the folder, or refuses in one line naming what differs.

A resumed run must be the run it was: the same store (a fingerprint of its settings and of the clips,
labels and folds the trainer reads, recorded in run.json as `store_fingerprint`), the same fold, the
same config and streams (compared with RUN/config.yaml, which holds the config as the run used it).
Continuing fold-1 weights on fold 2, or on another store, would score a test fold the weights trained
on; a changed learning rate would be written to config.yaml while the restored optimiser runs the old.

What may change is only what does not change the result: the keys in `OPERATIONAL` (where to stop,
threads, loader workers, device, checkpoint spacing). Such a change is recorded in run.json under
`resumed_with`, one entry per resume that changed something.
"""

from __future__ import annotations

from ..errors import FinetrainError
from ..runinfo import FINGERPRINT_KEY, read_run_info, store_fingerprint, write_run_info

OPERATIONAL = ("run.max_steps", "run.threads", "run.device", "run.checkpoint_every", "data.num_workers")


class ResumeError(FinetrainError, ValueError):
    """`--resume` with a store, fold or setting other than the ones the run was started with."""


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def saved_config(run) -> dict:
    """RUN/config.yaml as the flat `section.key -> value` dict of a full config."""
    import yaml

    from ..config import apply, load_config

    cfg = load_config("default")
    apply(cfg, yaml.safe_load(run.config.read_text(encoding="utf-8")), str(run.config))
    return _flat(cfg.to_dict())


def config_changes(run, cfg) -> dict[str, tuple]:
    """key -> (recorded value, new value) for every key where `cfg` differs from the run's config.yaml."""
    before, now = saved_config(run), _flat(cfg.to_dict())
    return {k: (before.get(k), now.get(k)) for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)}


def _refuse(run, key: str, old, new) -> ResumeError:
    if key == "run.fold":
        return ResumeError(f"{run.root}: --resume on fold {new}, but this run trains fold {old}; its weights "
                           f"have seen fold {new}'s test clips. Resume it without --fold {new}, or train fold "
                           f"{new} into another --out")
    what = "streams" if key == "model.streams" else key
    return ResumeError(f"{run.root}: --resume would change {what} from {old!r} to {new!r}; a resumed run keeps "
                       f"the settings it was started with (only {', '.join(OPERATIONAL)} may change). "
                       "Resume without the change, or start a new --out")


def check_store(run, info, recorded: dict) -> None:
    """Refuse a store other than the one recorded in run.json (runs without a fingerprint predate it)."""
    old = recorded.get(FINGERPRINT_KEY)
    if old is None:
        return
    new = store_fingerprint(info)
    if new != old:
        raise ResumeError(f"{run.root}: was trained on store {recorded.get('store')} (fingerprint {old}); "
                          f"--store {info.root} is another store or holds other clips (fingerprint {new}). "
                          "Resume with the run's own store, or start a new --out")


def check_resume(run, cfg, info) -> dict:
    """Refuse a resume that is not the same run; return the operational changes (key -> new value)."""
    check_store(run, info, read_run_info(run.root))
    if not run.config.is_file():
        return {}
    changes = config_changes(run, cfg)
    for key, (old, new) in changes.items():
        if key not in OPERATIONAL:
            raise _refuse(run, key, old, new)
    return {k: new for k, (_, new) in changes.items()}


def record_changes(run, changes: dict) -> None:
    """Append this resume's operational changes to run.json's `resumed_with` (nothing when none)."""
    if changes:
        past = list(read_run_info(run.root).get("resumed_with") or [])
        write_run_info(run.root, resumed_with=[*past, changes])


def check_own_store(run, info) -> None:
    """For a `--fold` run folder: its folds are one table, so every fold must come from the store its
    run.json records (checked before that file is rewritten)."""
    import json

    if run.run_info.is_file():
        try:
            recorded = json.loads(run.run_info.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ResumeError(f"{run.run_info}: not readable JSON ({exc})") from None
        check_store(run, info, recorded if isinstance(recorded, dict) else {})
