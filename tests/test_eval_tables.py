"""Predictions Parquet, fold tables (incl. merging folds run as separate jobs) and cross-dataset class maps."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn import metrics as skm

from fineschema import tables
from fineschema.labels import BASIC7, MAFW11, MAFW_OFFICIAL
from finetrain.evaluate import crossdata
from finetrain.score import folds
from finetrain.score.predictions import Predictions, concat, read_predictions, write_predictions


def _random_preds(labels, n, fold, seed, strength=1.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(labels), n)
    logits = rng.normal(size=(n, len(labels)))
    logits[np.arange(n), y] += strength
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    return Predictions.from_probs(labels, [f"f{fold}-{i:03d}" for i in range(n)], p, [labels[i] for i in y], fold), y


def test_predictions_round_trip_and_recompute(tmp_path):
    labels = BASIC7
    preds, y = _random_preds(labels, 50, 3, seed=1)
    path = write_predictions(tmp_path / "predictions.parquet", preds)
    # the file follows the contract's Arrow schema and records its class order
    schema = pq.read_schema(path)
    for field in tables.PREDICTIONS:
        assert schema.field(field.name).type == field.type
    assert json.loads(schema.metadata[b"labels"]) == list(labels)
    back = read_predictions(path)
    assert back.labels == labels and back.clip_ids == preds.clip_ids and back.folds == [3] * 50
    np.testing.assert_allclose(back.probs, preds.probs)
    s = back.scores()
    pred_idx = np.argmax(preds.probs, axis=1)
    assert s.uar == pytest.approx(skm.balanced_accuracy_score(y, pred_idx))
    assert s.war == pytest.approx(skm.accuracy_score(y, pred_idx))
    # unlabelled rows are kept but not scored
    extra = Predictions.from_probs(labels, ["x"], np.eye(7)[:1], [None], 3)
    both = concat([back, extra])
    assert len(both) == 51 and both.scores().count == 50


def test_read_refuses_other_class_order(tmp_path):
    preds, _ = _random_preds(BASIC7, 5, 1, seed=0)
    path = write_predictions(tmp_path / "p.parquet", preds)
    with pytest.raises(ValueError, match="written for classes"):
        read_predictions(path, labels=MAFW11)
    with pytest.raises(FileNotFoundError, match="finetrain eval"):
        read_predictions(tmp_path / "absent.parquet")


def test_top_k():
    preds = Predictions.from_probs(("a", "b", "c"), ["x"], [[0.2, 0.5, 0.3]])
    assert preds.pred_labels == ["b"]
    assert preds.top_k(2) == [[("b", 0.5), ("c", pytest.approx(0.3))]]


def _run_with_folds(root, name, fold_ids, labels=BASIC7, layout="sub"):
    run = root / name
    parts = []
    for k in fold_ids:
        preds, _ = _random_preds(labels, 40, k, seed=k)
        parts.append(preds)
        if layout == "sub":
            write_predictions(run / f"fold{k}" / "predictions.parquet", preds)
    if layout == "flat":
        write_predictions(run / "predictions.parquet", concat(parts))
    return run, parts


def test_fold_table_numbers(tmp_path):
    run, parts = _run_with_folds(tmp_path, "all", [1, 2, 3, 4, 5])
    table = folds.build_table(folds.collect([run]), "dfew")
    assert [f["fold"] for f in table["folds"]] == [1, 2, 3, 4, 5]
    assert table["complete"] and table["missing_folds"] == []
    uars = [p.scores().uar for p in parts]
    wars = [p.scores().war for p in parts]
    for f, u, w in zip(table["folds"], uars, wars, strict=True):
        assert f["uar"] == pytest.approx(u) and f["war"] == pytest.approx(w)
    assert table["mean"]["uar"] == pytest.approx(np.mean(uars))
    assert table["mean"]["war"] == pytest.approx(np.mean(wars))
    assert table["mean"]["uar_std"] == pytest.approx(np.std(uars))
    happy = [p.scores().recall["happiness"] for p in parts]
    assert table["mean"]["per_class_recall"]["happiness"] == pytest.approx(np.mean(happy))
    js, md = folds.write_table(tmp_path / "out", table)
    assert json.loads(js.read_text()) == json.loads(json.dumps(table))
    text = md.read_text()
    assert text.count("\n| ") == 6  # five folds and the mean row below the header
    assert f"{100 * np.mean(uars):.2f}" in text


def test_merge_separate_jobs_equals_one_run(tmp_path):
    one, _ = _run_with_folds(tmp_path, "one", [1, 2, 3])
    a, _ = _run_with_folds(tmp_path, "a", [1, 2], layout="flat")
    b, _ = _run_with_folds(tmp_path, "b", [3])
    t_one = folds.build_table(folds.collect([one]), "mafw")
    t_merged = folds.build_table(folds.collect([a, b]), "mafw")
    assert t_merged["mean"] == t_one["mean"]
    assert t_merged["missing_folds"] == [4, 5] and not t_merged["complete"]
    assert "Incomplete: folds 4, 5" in folds.to_markdown(t_merged)


def test_merge_refuses_duplicate_folds_and_mixed_classes(tmp_path):
    a, _ = _run_with_folds(tmp_path, "a", [1, 2])
    b, _ = _run_with_folds(tmp_path, "b", [2])
    with pytest.raises(ValueError, match="fold 2 appears in both"):
        folds.collect([a, b])
    c, _ = _run_with_folds(tmp_path, "c", [3], labels=MAFW11)
    with pytest.raises(ValueError, match="differ"):
        folds.collect([a, c])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no predictions.parquet"):
        folds.collect([tmp_path / "empty"])


def test_class_map_mafw_to_dfew_and_back():
    m = crossdata.dataset_map("mafw", "dfew")
    assert m.shared == BASIC7
    assert m.dropped_source == ("contempt", "anxiety", "helplessness", "disappointment")
    assert m.source_columns == [0, 1, 2, 3, 4, 5, 6]
    back = crossdata.dataset_map("dfew", "mafw")
    assert back.shared == BASIC7 and back.dropped_target == m.dropped_source
    assert crossdata.dataset_map("dfew", "ferv39k").identity
    # a source order that differs from the target's still maps by name
    m2 = crossdata.class_map(MAFW_OFFICIAL, BASIC7)
    assert [MAFW_OFFICIAL[i] for i in m2.source_columns] == list(BASIC7)


def test_class_map_apply_restricts_and_renormalises():
    src = MAFW11
    probs = np.full((3, 11), 0.01, dtype=np.float32)
    probs[0, src.index("contempt")] = 0.9  # best class is not shared: falls back to the best shared one
    probs[0, src.index("anger")] = 0.05
    probs[1, src.index("fear")] = 0.5
    probs[2, src.index("happiness")] = 0.5
    preds = Predictions.from_probs(src, ["a", "b", "c"], probs, ["anger", "fear", None], 1)
    out = crossdata.dataset_map("mafw", "dfew").apply(preds)
    assert out.labels == BASIC7
    assert out.pred_labels == ["anger", "fear", "happiness"]
    np.testing.assert_allclose(out.probs.sum(1), 1.0, rtol=1e-6)
    # DFEW model on MAFW clips: clips of MAFW-only classes are left out
    dprobs = np.eye(7, dtype=np.float32)[[0, 1, 2]]
    dpreds = Predictions.from_probs(BASIC7, ["a", "b", "c"], dprobs, ["happiness", "contempt", "neutral"], 2)
    kept = crossdata.dataset_map("dfew", "mafw").apply(dpreds)
    assert kept.clip_ids == ["a", "c"] and kept.scores().war == pytest.approx(1.0)


def test_class_map_refuses_disjoint_or_unknown():
    with pytest.raises(crossdata.ClassMappingError, match="share no class"):
        crossdata.class_map(("contempt",), ("fear",))
    with pytest.raises(crossdata.ClassMappingError, match="not canonical"):
        crossdata.class_map(("Happy",), ("happiness",))
