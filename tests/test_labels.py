"""Label sets and converters checked against the official numberings and the public repos' orders."""

import pytest

from fineschema import labels


def test_canonical_sets_sizes():
    assert len(labels.label_set("dfew")) == 7
    assert len(labels.label_set("ferv39k")) == 7
    assert len(labels.label_set("mafw")) == 11
    assert len(labels.label_set("mafw-compound")) == 43
    assert len(set(labels.MAFW43)) == 43
    # the seven shared classes have the same index in every canonical set
    for name in labels.BASIC7:
        assert labels.index_of(name, labels.label_set("mafw")) == labels.index_of(name, labels.label_set("dfew"))


@pytest.mark.parametrize(
    ("number", "name"),
    [(1, "happiness"), (2, "sadness"), (3, "neutral"), (4, "anger"), (5, "surprise"), (6, "disgust"), (7, "fear")],
)
def test_dfew_official_numbering(number, name):
    assert labels.from_dfew_official(number) == name
    assert labels.to_dfew_official(name) == number


def test_dfew_out_of_range():
    with pytest.raises(labels.LabelError, match="outside 1..7"):
        labels.from_dfew_official(0)


@pytest.mark.parametrize(
    ("number", "name"),
    [(1, "anger"), (2, "disgust"), (3, "fear"), (4, "happiness"), (5, "neutral"), (6, "sadness"),
     (7, "surprise"), (8, "contempt"), (9, "anxiety"), (10, "helplessness"), (11, "disappointment")],
)
def test_mafw_official_numbering(number, name):
    assert labels.from_mafw_official(number) == name
    assert labels.to_mafw_official(name) == number


def test_official_strings():
    assert labels.canonical_name("Happy", "ferv39k") == "happiness"
    assert labels.canonical_name("Angry ", "dfew") == "anger"
    assert labels.canonical_name("anger_disgust", "mafw") == "anger_disgust"
    assert labels.official_name("surprise", "ferv39k") == "Surprise"
    with pytest.raises(labels.LabelError):
        labels.canonical_name("contempt", "dfew")
    with pytest.raises(labels.LabelError):
        labels.canonical_name("bored", "mafw")


def test_public_orders():
    # DFER-CLIP reorders MAFW to follow DFEW: happiness 0 ... disappointment 10
    assert labels.to_public_index("happiness", "dfer-clip", "mafw") == 0
    assert labels.to_public_index("disappointment", "dfer-clip", "mafw") == 10
    # MAE-DFER and EmoCLIP keep MAFW's official order, 0-based
    assert labels.to_public_index("anger", "mae-dfer", "mafw") == 0
    assert labels.to_public_index("happiness", "emoclip", "mafw") == 3
    # S2D sorts alphabetically: FERV39k Angry 0 .. Surprise 6; MAFW anger 0, anxiety 1, contempt 2 ... surprise 10
    assert [labels.from_public_index(i, "s2d", "ferv39k") for i in range(7)] == [
        "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
    assert labels.from_public_index(1, "s2d", "mafw") == "anxiety"
    assert labels.from_public_index(10, "s2d", "mafw") == "surprise"
    with pytest.raises(labels.LabelError):
        labels.public_order("nope", "dfew")


def test_remap_roundtrip():
    s2d = labels.public_order("s2d", "mafw")
    canon = labels.label_set("mafw")
    idx = list(range(11))
    there = labels.remap_indices(idx, s2d, canon)
    assert sorted(there) == idx
    assert labels.remap_indices(there, canon, s2d) == idx
    assert there[s2d.index("fear")] == canon.index("fear")
