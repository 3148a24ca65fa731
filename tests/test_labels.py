"""Label sets and converters checked against the official numberings and the public repos' orders."""

import pytest

from fineschema import labels as L


def test_canonical_sets_sizes():
    assert len(L.label_set("dfew")) == 7
    assert len(L.label_set("ferv39k")) == 7
    assert len(L.label_set("mafw")) == 11
    assert len(L.label_set("mafw-compound")) == 43
    assert len(set(L.MAFW43)) == 43
    # the seven shared classes have the same index in every canonical set
    for name in L.BASIC7:
        assert L.index_of(name, L.label_set("mafw")) == L.index_of(name, L.label_set("dfew"))


@pytest.mark.parametrize(
    ("number", "name"),
    [(1, "happiness"), (2, "sadness"), (3, "neutral"), (4, "anger"), (5, "surprise"), (6, "disgust"), (7, "fear")],
)
def test_dfew_official_numbering(number, name):
    assert L.from_dfew_official(number) == name
    assert L.to_dfew_official(name) == number


def test_dfew_out_of_range():
    with pytest.raises(L.LabelError, match="outside 1..7"):
        L.from_dfew_official(0)


@pytest.mark.parametrize(
    ("number", "name"),
    [(1, "anger"), (2, "disgust"), (3, "fear"), (4, "happiness"), (5, "neutral"), (6, "sadness"),
     (7, "surprise"), (8, "contempt"), (9, "anxiety"), (10, "helplessness"), (11, "disappointment")],
)
def test_mafw_official_numbering(number, name):
    assert L.from_mafw_official(number) == name
    assert L.to_mafw_official(name) == number


def test_official_strings():
    assert L.canonical_name("Happy", "ferv39k") == "happiness"
    assert L.canonical_name("Angry ", "dfew") == "anger"
    assert L.canonical_name("anger_disgust", "mafw") == "anger_disgust"
    assert L.official_name("surprise", "ferv39k") == "Surprise"
    with pytest.raises(L.LabelError):
        L.canonical_name("contempt", "dfew")
    with pytest.raises(L.LabelError):
        L.canonical_name("bored", "mafw")


def test_public_orders():
    # DFER-CLIP reorders MAFW to follow DFEW: happiness 0 ... disappointment 10
    assert L.to_public_index("happiness", "dfer-clip", "mafw") == 0
    assert L.to_public_index("disappointment", "dfer-clip", "mafw") == 10
    # MAE-DFER and EmoCLIP keep MAFW's official order, 0-based
    assert L.to_public_index("anger", "mae-dfer", "mafw") == 0
    assert L.to_public_index("happiness", "emoclip", "mafw") == 3
    # S2D sorts alphabetically: FERV39k Angry 0 .. Surprise 6; MAFW anger 0, anxiety 1, contempt 2 ... surprise 10
    assert [L.from_public_index(i, "s2d", "ferv39k") for i in range(7)] == [
        "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
    assert L.from_public_index(1, "s2d", "mafw") == "anxiety"
    assert L.from_public_index(10, "s2d", "mafw") == "surprise"
    with pytest.raises(L.LabelError):
        L.public_order("nope", "dfew")


def test_remap_roundtrip():
    s2d = L.public_order("s2d", "mafw")
    canon = L.label_set("mafw")
    idx = list(range(11))
    there = L.remap_indices(idx, s2d, canon)
    assert sorted(there) == idx
    assert L.remap_indices(there, canon, s2d) == idx
    assert there[s2d.index("fear")] == canon.index("fear")
