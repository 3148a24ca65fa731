"""A config's streams are a promise: each one is fed from the store, or the run does not start.

`plan_streams` checks, before any training, that every stream in `model.streams` has data in the
fold's training clips: descriptions with text left after refinement (from a trained describer, or from
a random-weight one when `data.random_descriptions` says so), a measured face mesh for parsing,
landmarks and blendshapes. A stream that cannot be fed stops the run with one line naming the stream,
the numbers behind it and what to do. Training without it is an explicit choice
(`model.missing_streams=drop`, `finetrain run --drop-missing-streams`), and the streams a run really
used, those it dropped and why, and the paper row they make (`paper_row`) go into run.json, test.json,
the fold table and the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fineschema import counts_line, layout

from ..config import Config, ConfigError

MESH_STREAMS = ("parsing", "landmarks", "blendshapes")

# FineCLIPER's ablation rows (the paper's Table 5): * adds the middle level (parsing and landmarks),
# † the high level (MLLM descriptions).
PAPER_ROWS = {
    frozenset({"frames"}): "FineCLIPER",
    frozenset({"frames", "parsing", "landmarks"}): "FineCLIPER*",
    frozenset({"frames", "description"}): "FineCLIPER†",
    frozenset({"frames", "parsing", "landmarks", "description"}): "FineCLIPER*†",
}


def paper_row(streams) -> str | None:
    """The paper's row for a set of streams; ours adds blendshapes, which no paper row has."""
    row = PAPER_ROWS.get(frozenset(s for s in streams if s != "blendshapes"))
    if row is not None and "blendshapes" in streams:
        return f"{row} + blendshapes (not a paper row)"
    return row


@dataclass
class StreamPlan:
    asked: list[str]
    used: list[str]
    dropped: dict[str, str] = field(default_factory=dict)   # stream -> why it could not be fed
    random_descriptions: bool = False                        # descriptions from a random-weight describer
    asked_fusion_weights: list[float] | None = None          # model.fusion_weights as configured

    def asked_config(self, cfg: Config) -> Config:
        """`cfg` with the streams (and fixed fusion weights) as configured, before any was dropped: what
        config.yaml keeps, so a resumed run plans its streams again from the same promise."""
        import copy

        asked = copy.deepcopy(cfg)
        asked.model.streams, asked.model.fusion_weights = list(self.asked), self.asked_fusion_weights
        return asked

    def record(self) -> dict:
        """What run.json and test.json say about the streams."""
        return {"streams": list(self.used), "streams_dropped": dict(self.dropped), "paper_row": paper_row(self.used),
                "random_descriptions": self.random_descriptions}


def measured_mesh(info, rows) -> int:
    """How many of `rows` have at least one frame with a measured face mesh (face_found)."""
    import zarr

    if info.root is None or not len(rows):
        return 0
    found = zarr.open_group(str(info.root / layout.ARRAYS_DIR), mode="r")["face_found"]
    index = np.asarray(info.store_index)[np.asarray(rows, dtype=np.int64)]
    return int(np.asarray(found.get_orthogonal_selection((np.sort(index), slice(None)))).any(axis=1).sum())


def _unfed(cfg: Config, info, rows) -> dict[str, str]:
    """stream -> why it cannot be fed on these training rows (numbers, not adjectives)."""
    why = {}
    streams = cfg.model.streams
    if "description" in streams:
        with_text = sum(1 for r in rows if info.clip_ids[int(r)] in info.descriptions)
        if not with_text:
            why["description"] = (f"{counts_line(info.description_counts)}; 0 of the fold's {len(rows)} training "
                                  "clips have a usable description")
    wanted = [s for s in MESH_STREAMS if s in streams]
    if wanted:
        n = measured_mesh(info, rows)
        if not n:
            for s in wanted:
                why[s] = f"0 of the fold's {len(rows)} training clips have a measured face mesh (face_found)"
    return why


def _remedy(stream: str, counts: dict) -> str:
    if stream == "description":
        random = ("data.random_descriptions=true trains on the random-weight text (a plumbing run), "
                  if counts.get("random") else "")
        return (f"run `fineprep describe` with a trained model, {random}or train without it explicitly with "
                "--drop-missing-streams (model.missing_streams=drop)")
    return "re-extract so that the landmarker finds the faces, or drop it explicitly with --drop-missing-streams"


def plan_streams(cfg: Config, info, rows) -> StreamPlan:
    """Check every stream against the store; refuse (one line) or drop as `model.missing_streams` says.
    A dropped stream leaves `cfg.model.streams` (the model is built without it)."""
    asked, asked_weights = list(cfg.model.streams), cfg.model.fusion_weights
    use_random = bool(cfg.data.random_descriptions and info.random_descriptions and "description" in asked)
    if use_random:
        info.descriptions = {**info.random_descriptions, **info.descriptions}
    why = _unfed(cfg, info, rows)
    if why and cfg.model.missing_streams != "drop":
        stream = next(iter(why))
        raise ConfigError(f"stream {stream} cannot be fed: {why[stream]}; "
                          f"{_remedy(stream, info.description_counts)}")
    used = [s for s in asked if s not in why]
    if not used:
        raise ConfigError(f"none of model.streams {asked} can be fed by this store: "
                          + "; ".join(f"{k}: {v}" for k, v in why.items()))
    if why and cfg.model.fusion_weights is not None and len(cfg.model.fusion_weights) == len(asked):
        cfg.model.fusion_weights = [w for s, w in zip(asked, cfg.model.fusion_weights, strict=True) if s not in why]
    cfg.model.streams = used
    return StreamPlan(asked=asked, used=used, dropped=why, asked_fusion_weights=asked_weights,
                      random_descriptions=use_random and any(c in info.random_descriptions for c in info.clip_ids))


def weights_record(cfg: Config) -> dict:
    """Where the CLIP weights come from; random weights make numbers that check plumbing, never results."""
    pretrained = cfg.model.pretrained
    return {"random_weights": pretrained is None, "weights": pretrained or "random (model.pretrained: null)"}


RANDOM_WEIGHTS_LINE = ("CLIP has random weights (model.pretrained: null): the numbers of this run check the "
                       "plumbing, not the method")
