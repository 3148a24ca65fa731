"""What a fold's numbers cover: the clips its split files list, how many were scored, and why the rest
were not.

The official DFEW / FERV39k / MAFW protocols score every listed test clip. The store keeps arrays for
every clip whose frames decode (faceless ones with their middle-level inputs masked), so a clip goes
unscored only when it cannot be read at all (missing, corrupt, refused path, ...). A fold with any
unscored test clip is `partial`: its UAR/WAR are not the protocol's numbers, and every place that
shows them says so; `run.strict_protocol` turns a partial fold into a refusal before training.
"""

from __future__ import annotations

from collections import Counter

from fineschema import tables

from ..errors import FinetrainError


class ProtocolError(FinetrainError, ValueError):
    """A fold that cannot be scored whole while run.strict_protocol asks for it."""


def _side(scored_rows, info, unscored: Counter) -> dict:
    without_face = Counter(info.face_status[int(r)] for r in scored_rows
                           if info.face_status and info.face_status[int(r)] != tables.STATUS_OK)
    return {"listed": len(scored_rows) + sum(unscored.values()), "scored": len(scored_rows),
            "unscored": dict(sorted(unscored.items())), "scored_without_face": dict(sorted(without_face.items()))}


def fold_counts(info, split) -> dict:
    """{"train": ..., "validation": ..., "test": ...}: listed, scored, unscored by status, and the scored
    clips whose face was measured in too few frames or none (few_faces, no_face)."""
    fold = split.fold
    if fold is None:  # a store without folds trains on everything listed
        train_out = Counter(u["status"] for u in info.unscored)
        test_out: Counter = Counter()
    else:
        train_out = Counter(u["status"] for u in info.unscored if fold in u["train_folds"])
        test_out = Counter(u["status"] for u in info.unscored if fold in u["test_folds"])
    train = _side([*split.train, *split.val], info, train_out)
    val = _side(split.val, info, Counter())
    return {"train": train, "validation": {"scored": val["scored"], "scored_without_face": val["scored_without_face"]},
            "test": _side(split.test, info, test_out)}


def scored_counts(info, rows, fold: int | None) -> dict:
    """Listed / scored / unscored of an evaluation: `rows` scored, and the unreadable clips of the store
    listed in `fold`'s test set (in any fold's split when `fold` is None)."""
    out = Counter(u["status"] for u in info.unscored if fold is None or fold in u["test_folds"])
    return _side(rows, info, out)


def is_partial(side: dict | None) -> bool:
    return bool(side and side.get("unscored"))


def describe(side: dict, what: str = "test") -> str:
    """'3 of 5 listed test clips scored (partial: 1 missing, 1 corrupt); 1 scored without a face (no_face)'."""
    text = f"{side['scored']} of {side['listed']} listed {what} clips scored"
    if side.get("unscored"):
        text += " (partial: " + ", ".join(f"{n} {k}" for k, n in side["unscored"].items()) + ")"
    faceless = side.get("scored_without_face") or {}
    if faceless:
        text += (f"; {sum(faceless.values())} scored with the face measured in few or no frames ("
                 + ", ".join(f"{n} {k}" for k, n in faceless.items()) + ")")
    return text


def check_strict(counts: dict, fold, strict: bool) -> None:
    """Refuse a partial test fold when the run asks for the protocol's numbers only."""
    if strict and is_partial(counts["test"]):
        raise ProtocolError(f"fold {fold}: {describe(counts['test'])}; run.strict_protocol refuses a fold that "
                            "cannot be scored whole: restore those files and re-run `fineprep extract`, or drop "
                            "--strict-protocol to report a partial fold")


def pct(x: float) -> str:
    """A fraction as a person reads it: percent with two decimals (JSON keeps the fraction)."""
    return "–" if x is None or x != x else f"{100 * x:.2f}%"


def score_line(t: dict) -> str:
    """'UAR 45.67% WAR 50.00% (3 of 5 listed test clips scored (partial: ...); streams ...; random weights)'."""
    line = f"UAR {pct(t['uar'])} WAR {pct(t['war'])}"
    bits = [describe(t["clips"])] if t.get("clips") else [f"{t.get('count', '?')} clips"]
    if t.get("streams"):
        bits.append(f"streams {', '.join(t['streams'])} ({t.get('paper_row') or 'no paper row'})")
    if t.get("random_weights"):
        bits.append("random CLIP weights: plumbing, not a result")
    return f"{line} ({'; '.join(bits)})"
