"""The metrics module against scikit-learn on random predictions, including classes absent from y_true."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from finetrain.score import metrics


@st.composite
def predictions(draw):
    k = draw(st.integers(min_value=2, max_value=11))
    n = draw(st.integers(min_value=1, max_value=200))
    y_true = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    return k, np.array(y_true), np.array(y_pred)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(predictions())
def test_against_sklearn(case):
    k, y_true, y_pred = case
    labels = list(range(k))
    uar, war = metrics.uar_war(y_true, y_pred, k)
    with warnings.catch_warnings():
        # sklearn warns when y_pred holds classes absent from y_true; that is the case we test
        warnings.simplefilter("ignore")
        assert uar == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred), abs=1e-12)
        want_recall = skm.recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    assert war == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)
    cm = metrics.confusion_matrix(y_true, y_pred, k)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y_true, y_pred, labels=labels))
    recall = metrics.per_class_recall(cm)
    absent = ~np.isin(np.arange(k), y_true)
    assert np.all(np.isnan(recall[absent]))
    np.testing.assert_allclose(recall[~absent], want_recall[~absent], atol=1e-12)


def test_absent_class_left_out_of_uar():
    # class 2 never occurs in y_true but is predicted once: it lowers WAR, not the number of classes in UAR
    y_true = [0, 0, 1, 1]
    y_pred = [0, 2, 1, 1]
    uar, war = metrics.uar_war(y_true, y_pred, 3)
    assert uar == pytest.approx((0.5 + 1.0) / 2)
    assert war == pytest.approx(3 / 4)


def test_scores_by_name_round_trip():
    labels = ("happiness", "sadness", "neutral")
    s = metrics.score_names(["happiness", "sadness", "sadness", "neutral"],
                      ["happiness", "neutral", "sadness", "neutral"], labels)
    assert s.recall == {"happiness": 1.0, "sadness": 0.5, "neutral": 1.0}
    assert s.support == {"happiness": 1, "sadness": 2, "neutral": 1}
    assert s.uar == pytest.approx(2.5 / 3)
    assert s.war == pytest.approx(0.75)
    again = metrics.Scores.from_dict(s.to_dict())
    assert again.uar == s.uar and again.recall == s.recall
    np.testing.assert_array_equal(again.confusion, s.confusion)


def test_to_dict_has_no_nan():
    s = metrics.score([0, 0], [0, 1], ("a", "b", "c"))
    d = s.to_dict()
    assert d["per_class_recall"] == {"a": 0.5, "b": None, "c": None}


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="outside 0..2"):
        metrics.uar_war([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="not one of"):
        metrics.score_names(["joy"], ["happiness"], ("happiness",))
    with pytest.raises(ValueError, match="entries"):
        metrics.confusion_matrix([0, 1], [0], 2)


def test_mean_std_skips_missing():
    assert metrics.mean_std([0.5, None, float("nan"), 0.7]) == pytest.approx((0.6, 0.1))
    mean, std = metrics.mean_std([])
    assert np.isnan(mean) and np.isnan(std)
