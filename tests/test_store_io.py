"""fineschema.store_io: one way to pick a clip's description, read the manifest and write Parquet."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from toy_store import write_toy_store
from typer.testing import CliRunner

import fineschema
from fineschema import (
    DescriptionChoiceError,
    choose_descriptions,
    layout,
    read_descriptions,
    read_manifest,
    tables,
    write_parquet_atomic,
)
from finetrain.config import load_config
from finetrain.data.store import StoreDataset
from finetrain.train.recipe import prepare

ROOT = Path(__file__).resolve().parents[1]
OTHER = "other-vlm"


def _add_part(store: Path, name: str, rows: list[dict]) -> None:
    base = {"engine": "hf", "prompt_id": "toy", "prompt_hash": "0" * 64, "status": "ok",
            "created_at": datetime(2026, 1, 2, tzinfo=UTC)}
    table = tables.conform(pa.Table.from_pylist([{**base, **r} for r in rows]), tables.DESCRIPTION)
    write_parquet_atomic(table, store / layout.DESCRIPTIONS_DIR / name)


@pytest.fixture
def two_model_store(tmp_path):
    """The toy store (model `toy`, one text per clip) described again by a second model for 9 clips."""
    store = write_toy_store(tmp_path / "store", clips_per_class=2, frames=2, size=16, descriptions=True)
    ids = read_manifest(store, columns=["clip_id"])["clip_id"].to_pylist()
    other = {c: f"second model text for {c} with eyes narrowed" for c in ids[:9]}
    _add_part(store, "part-other.parquet", [
        {"clip_id": c, "model": OTHER, "raw_text": t, "refined_text": t} for c, t in other.items()])
    return store, ids, other


def test_training_without_naming_a_set_is_refused_in_one_line(two_model_store, tmp_path):
    store, _, _ = two_model_store
    with pytest.raises(DescriptionChoiceError) as err:
        prepare(load_config("tiny", []), store)
    msg = str(err.value)
    assert "\n" not in msg
    assert "toy / toy" in msg and f"{OTHER} / toy" in msg and "2 (model / prompt) sets" in msg
    assert "data.descriptions_model=" in msg and "data.descriptions_prompt=" in msg

    from finetrain.cli import app
    r = CliRunner().invoke(app, ["run", "--store", str(store), "--out", str(tmp_path / "run"), "--config", "tiny",
                                 "--quiet"])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if "error" in line]
    assert len(errors) == 1 and "data.descriptions_model=" in errors[0], r.output
    assert "Traceback" not in r.output and not (tmp_path / "run" / "checkpoints").exists()


def _texts(info, rows) -> dict[str, str]:
    """The description text each clip of the dataset feeds the model (the tokenizer sees it verbatim)."""
    cfg = load_config("tiny", [])
    ds = StoreDataset(info, rows, image_size=16, frames=2, data_cfg=cfg.data, streams=("frames", "description"),
                      tokenizer=lambda texts: texts)
    return {info.clip_ids[r]: ds[i]["description"] for i, r in enumerate(rows)}


def test_naming_a_model_trains_on_exactly_its_rows(two_model_store):
    store, ids, other = two_model_store
    prep = prepare(load_config("tiny", [f"data.descriptions_model={OTHER}"]), store)
    assert prep.info.descriptions == other
    assert "description" in prep.cfg.model.streams
    texts = _texts(prep.info, range(len(prep.info)))
    assert texts == {c: other.get(c, "") for c in ids}

    toy = prepare(load_config("tiny", ["data.descriptions_model=toy", "data.descriptions_prompt=toy"]), store)
    assert sorted(toy.info.descriptions) == sorted(ids)
    assert all(t.startswith("the face looks") for t in _texts(toy.info, range(len(ids))).values())


def test_read_descriptions_filters_model_prompt_and_random(two_model_store):
    store, ids, other = two_model_store
    _add_part(store, "part-random.parquet", [
        {"clip_id": ids[0], "model": "rand", "prompt_id": "p2", "prompt_hash": "f" * 64, "raw_text": "noise",
         "refined_text": "noise", "random_weights": True}])
    # an older error row and a newer ok row of the same (clip, model, prompt): the ok row is kept
    _add_part(store, "part-retry.parquet", [
        {"clip_id": ids[1], "model": OTHER, "status": "error", "error": "oom",
         "created_at": datetime(2026, 1, 3, tzinfo=UTC)}])
    every = read_descriptions(store)
    assert every.schema.equals(tables.DESCRIPTION, check_metadata=False)
    assert every.num_rows == len(ids) + len(other) and "rand" not in every["model"].to_pylist()
    assert read_descriptions(store, include_random=True).num_rows == len(ids) + len(other) + 1
    mine = read_descriptions(store, model=OTHER).to_pylist()
    assert {r["clip_id"]: r["refined_text"] for r in mine} == other and {r["status"] for r in mine} == {"ok"}
    assert read_descriptions(store, prompt="toy").num_rows == len(ids) + len(other)
    assert read_descriptions(store, prompt="0" * 64).num_rows == len(ids) + len(other)   # by prompt hash too
    assert read_descriptions(store, prompt="p2", include_random=True)["model"].to_pylist() == ["rand"]
    assert read_descriptions(store, model="nobody").num_rows == 0

    rows, chosen = choose_descriptions(store, newest=True)
    assert chosen == (OTHER, "toy") and {c: r["refined_text"] for c, r in rows.items()} == other
    rows, chosen = choose_descriptions(store, random_weights=True)
    assert chosen == ("rand", "p2") and list(rows) == [ids[0]]


def test_fineprep_show_says_which_set_it_shows(two_model_store):
    from fineprep.inspect.store import description_text, open_store

    store, ids, other = two_model_store
    view = open_store(store)
    text = description_text(view.latest_descriptions()[ids[0]])
    assert text == f"{other[ids[0]]} [{OTHER}, prompt toy, the newest of 2 description sets]"


def test_write_parquet_atomic_replaces_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "t.parquet"
    write_parquet_atomic(pa.table({"x": [1, 2]}), path)
    write_parquet_atomic(pa.table({"x": [3]}), path)
    assert pq.read_table(path)["x"].to_pylist() == [3]
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.parquet"]

    def broken(table, where, **kw):
        Path(where).write_bytes(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(fineschema.store_io.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(pa.table({"x": [4]}), path)
    assert pq.read_table(path)["x"].to_pylist() == [3], "the old file stays whole"
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.parquet"], "the temp file is removed"


def test_read_manifest_selects_statuses_and_columns(tmp_path):
    store = write_toy_store(tmp_path / "store", clips_per_class=1, frames=2, size=16)
    full = pq.read_table(store / layout.MANIFEST_FILE)
    assert read_manifest(store).equals(full)
    ok = read_manifest(store, statuses=[tables.STATUS_OK], columns=["clip_id"])
    assert ok.column_names == ["clip_id"] and ok.num_rows == full.num_rows
    assert read_manifest(store, statuses=["no_face"]).num_rows == 0


PARQUET_WRITE = re.compile(r"(\bpq|\bparquet)\.(write_table|write_to_dataset|ParquetWriter)\b"
                           r"|from\s+pyarrow\.parquet\s+import[^\n]*\b(write_table|ParquetWriter)\b")


def test_one_atomic_parquet_writer_in_the_source_tree():
    """Every Parquet file the programs write goes through fineschema.write_parquet_atomic: no other module
    calls pyarrow's writer on a path (an in-memory buffer is fine) or defines the writer again."""
    offenders, definitions = [], []
    for top in ("pipeline", "trainer", "schemas"):
        for py in sorted((ROOT / top).rglob("*.py")):
            text = py.read_text(encoding="utf-8")
            rel = py.relative_to(ROOT).as_posix()
            definitions += [rel for _ in re.finditer(r"^\s*def write_parquet_atomic\(", text, re.M)]
            if rel == "schemas/fineschema/store_io.py":
                continue
            for m in PARQUET_WRITE.finditer(text):
                line = text[text.rfind("\n", 0, m.start()) + 1: text.find("\n", m.end())]
                if "BytesIO" not in line:
                    offenders.append(f"{rel}: {line.strip()}")
    assert definitions == ["schemas/fineschema/store_io.py"]
    assert offenders == [], "write Parquet with fineschema.write_parquet_atomic: " + "; ".join(offenders)
    assert len(re.findall(r"os\.replace\(", (ROOT / "schemas/fineschema/store_io.py").read_text())) == 1
