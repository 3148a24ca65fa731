"""A config's streams are a promise: a stream the store cannot feed stops the run in one line with its
numbers, unless the run says explicitly that it trains without it; then every output names the streams
it used and the paper row they make. Runs on the toy store (tiny random-weight CLIP: plumbing only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from toy_store import write_toy_store  # noqa: E402

from fineschema import layout, tables, write_parquet_atomic  # noqa: E402
from finetrain.config import ConfigError, load_config  # noqa: E402
from finetrain.train.recipe import prepare  # noqa: E402
from finetrain.train.streams import paper_row  # noqa: E402
from finetrain.train.zeroshot import ZeroShotError, clip_texts  # noqa: E402

BIN = Path(sys.executable).parent
REFUSE = ["model.missing_streams=refuse", "model.streams=[frames, description]"]


def _rewrite_descriptions(store: Path, **columns) -> None:
    part = store / layout.DESCRIPTIONS_DIR / "part-00000.parquet"
    table = pq.read_table(part)
    for name, value in columns.items():
        import pyarrow as pa

        table = table.set_column(table.schema.get_field_index(name), name,
                                 pa.array([value] * table.num_rows, table.schema.field(name).type))
    write_parquet_atomic(tables.conform(table, tables.DESCRIPTION), part)


def test_paper_rows_name_the_ablations():
    assert paper_row(["frames", "parsing", "landmarks", "description"]) == "FineCLIPER*†"
    assert paper_row(["frames", "parsing", "landmarks"]) == "FineCLIPER*"
    assert paper_row(["frames", "description"]) == "FineCLIPER†"
    assert paper_row(["frames"]) == "FineCLIPER"
    assert paper_row(["frames", "blendshapes"]) == "FineCLIPER + blendshapes (not a paper row)"
    assert paper_row(["parsing"]) is None


def test_no_descriptions_refuses_with_the_numbers(tmp_path):
    store = write_toy_store(tmp_path / "s", clips_per_class=3)
    with pytest.raises(ConfigError) as err:
        prepare(load_config("tiny", REFUSE), store)
    msg = str(err.value)
    assert msg.startswith("stream description cannot be fed: 0 description rows; 0 of the fold's ")
    assert "--drop-missing-streams" in msg and "\n" not in msg


def test_descriptions_empty_after_refinement_are_counted(tmp_path):
    store = write_toy_store(tmp_path / "s", clips_per_class=2, descriptions=True)
    _rewrite_descriptions(store, refined_text="")
    with pytest.raises(ConfigError, match=r"14 description rows, 14 empty after refinement, 0 usable"):
        prepare(load_config("tiny", REFUSE), store)
    cfg = load_config("tiny", [*REFUSE, "data.random_descriptions=true"])  # there are no random rows to use
    with pytest.raises(ConfigError, match="14 empty after refinement"):
        prepare(cfg, store)
    info = prepare(load_config("tiny", ["model.streams=[frames]"]), store).info
    with pytest.raises(ZeroShotError, match=r"14 description rows, 14 empty after refinement, 0 usable"):
        clip_texts(info, "descriptions")


def test_random_weight_descriptions_refuse_unless_asked_for(tmp_path):
    store = write_toy_store(tmp_path / "s", clips_per_class=2, descriptions=True)
    _rewrite_descriptions(store, random_weights=True)
    with pytest.raises(ConfigError, match=r"14 from a random-weight model.*data.random_descriptions=true"):
        prepare(load_config("tiny", REFUSE), store)
    prep = prepare(load_config("tiny", [*REFUSE, "data.random_descriptions=true"]), store)
    assert prep.streams.used == ["frames", "description"] and prep.streams.random_descriptions
    assert any("random-weight model" in n for n in prep.notes)


def test_a_store_without_a_measured_mesh_cannot_feed_the_middle_level(tmp_path):
    import zarr

    store = write_toy_store(tmp_path / "s", clips_per_class=2)
    found = zarr.open_group(str(store / layout.ARRAYS_DIR), mode="r+")["face_found"]
    found[:] = False
    cfg = load_config("tiny", ["model.missing_streams=refuse", "model.streams=[frames, parsing, landmarks]"])
    with pytest.raises(ConfigError, match=r"stream parsing cannot be fed: 0 of the fold's \d+ training clips have a "
                       r"measured face mesh"):
        prepare(cfg, store)
    cfg = load_config("tiny", ["model.missing_streams=drop", "model.streams=[frames, parsing, landmarks]"])
    prep = prepare(cfg, store)
    assert prep.streams.used == ["frames"] and set(prep.streams.dropped) == {"parsing", "landmarks"}
    assert prep.cfg.model.streams == ["frames"]


def _run(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(BIN / "finetrain"), "run", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600)


def test_a_paper_config_refuses_a_store_without_descriptions_in_one_line(tmp_path):
    store = write_toy_store(tmp_path / "s", clips_per_class=2)
    proc = _run("--store", store, "--config", "dfew-b16", "--out", tmp_path / "run", "--quiet")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error: stream description cannot be fed: 0 description rows"), proc.stderr
    assert "--drop-missing-streams" in " ".join(proc.stderr.split())
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_the_explicit_ablation_trains_and_every_output_names_its_streams(tmp_path):
    store = write_toy_store(tmp_path / "s", clips_per_class=2)
    run = tmp_path / "run"
    proc = _run("--store", store, "--config", "tiny", "--out", run, "--quiet", "--drop-missing-streams",
                "model.missing_streams=refuse", "optim.epochs=1", "model.streams=[frames, parsing, landmarks, description]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = " ".join(proc.stderr.split())
    assert "stream description dropped" in said and "paper row FineCLIPER*" in said
    for name in ("run.json", "test.json"):
        rec = json.loads((run / name).read_text())
        assert rec["streams"] == ["frames", "parsing", "landmarks"] and rec["paper_row"] == "FineCLIPER*"
        assert set(rec["streams_dropped"]) == {"description"} and rec["random_weights"] is True
    report = subprocess.run([str(BIN / "finetrain"), "report", "--run", str(run)], capture_output=True, text=True,
                            timeout=600)
    assert report.returncode == 0, report.stderr[-2000:]
    table = json.loads((run / "report" / "fold_table.json").read_text())
    assert table["streams"] == ["frames", "parsing", "landmarks"] and table["paper_row"] == "FineCLIPER*"
    assert "paper row: FineCLIPER*" in (run / "report" / "fold_table.md").read_text()
    assert "FineCLIPER*" in (run / "report" / "report.html").read_text()
