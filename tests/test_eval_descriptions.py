"""`finetrain eval` on a store described by two models: refused in one line until one set is named,
then scored on exactly that set's descriptions (the tiny model's description stream reads them)."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from toy_store import write_toy_store
from typer.testing import CliRunner

from fineschema import layout, tables, write_parquet_atomic
from finetrain.cli import app
from finetrain.score.predictions import read_predictions


def _add_described_set(store, model: str, prompt: str) -> None:
    """A second describer's part: other words for every clip the first one described."""
    part = store / layout.DESCRIPTIONS_DIR / "part-00000.parquet"
    ids = pq.read_table(part, columns=["clip_id"])["clip_id"].to_pylist()
    n = len(ids)
    text = [f"{model} sees a face number {i} turned {'left' if i % 2 else 'right'}" for i in range(n)]
    table = tables.conform(pa.table({
        "clip_id": ids, "model": [model] * n, "engine": ["toy"] * n, "prompt_id": [prompt] * n,
        "prompt_hash": ["1" * 64] * n, "raw_text": text, "refined_text": text, "status": ["ok"] * n,
    }), tables.DESCRIPTION)
    write_parquet_atomic(table, store / layout.DESCRIPTIONS_DIR / f"part-{model}.parquet")


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run (description stream on) trained on fold 1 of a toy store described by one model."""
    base = tmp_path_factory.mktemp("evaldesc")
    store = write_toy_store(base / "store", clips_per_class=3, frames=4, size=16, folds=2, descriptions=True)
    run = base / "run"
    result = _invoke("run", "--store", store, "--out", run, "--config", "tiny", "--quiet", "optim.epochs=1",
                     "run.fold=1")
    assert result.exit_code == 0, result.output
    return base, store, run


@pytest.mark.slow
def test_two_description_sets_need_a_name(trained, tmp_path):
    base, store, run = trained
    _add_described_set(store, "other", "p2")
    refused = _invoke("eval", "--run", run, "--store", store, "--out", tmp_path / "x")
    assert refused.exit_code == 2
    lines = refused.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), refused.output
    assert "2 (model / prompt) sets (other / p2, toy / toy)" in lines[0] and "--descriptions-model NAME" in lines[0]
    assert not (tmp_path / "x").exists()

    absent = _invoke("eval", "--run", run, "--store", store, "--descriptions-model", "nobody")
    assert absent.exit_code == 2 and "has no descriptions of nobody" in absent.output

    # the set the run trained on: the numbers training wrote for its test fold
    toy = _invoke("eval", "--run", run, "--store", store, "--descriptions-model", "toy", "--out", tmp_path / "toy")
    assert toy.exit_code == 0, toy.output
    trained_preds = read_predictions(run / "predictions.parquet")
    again = read_predictions(tmp_path / "toy" / "predictions.parquet")
    assert again.clip_ids == trained_preds.clip_ids and len(again) == 11  # fold 1 tests on every other clip of 21
    np.testing.assert_allclose(again.probs, trained_preds.probs, atol=1e-5)

    # the other set: what the same model gives on a store that holds only that set
    other = _invoke("eval", "--run", run, "--store", store, "--descriptions-model", "other",
                    "--descriptions-prompt", "p2")
    assert other.exit_code == 0, other.output
    named = read_predictions(run / "eval" / "dfew-store-desc-other-p2" / "predictions.parquet")
    only = tmp_path / "only-other"
    shutil.copytree(store, only)
    (only / layout.DESCRIPTIONS_DIR / "part-00000.parquet").unlink()
    alone = _invoke("eval", "--run", run, "--store", only, "--out", tmp_path / "alone")
    assert alone.exit_code == 0, alone.output
    reference = read_predictions(tmp_path / "alone" / "predictions.parquet")
    assert named.clip_ids == reference.clip_ids == again.clip_ids
    np.testing.assert_allclose(named.probs, reference.probs, atol=1e-6)
    assert np.abs(named.probs - again.probs).max() > 1e-4  # the descriptions do reach the scores
