"""Index readers on small hand-made trees in each dataset's official layout, good and bad cases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fineprep.datasets import (
    LABEL_SET,
    SOURCES,
    DatasetLayoutError,
    OutsideRootError,
    frame_files,
    index_dataset,
    natural_sorted,
    resolve_inside,
)
from fineschema import labels, tables


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


def _frames(folder: Path, names=("a_1.jpg", "a_2.jpg", "a_10.jpg")) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"\xff\xd8fake")


def _by_id(entries):
    ids = [e.clip_id for e in entries]
    assert len(ids) == len(set(ids)), "every clip appears once"
    return {e.clip_id: e for e in entries}


# ------------------------------------------------------------------------------------------- helpers
def test_natural_sort_and_frame_files(tmp_path):
    assert natural_sorted(["x_10.jpg", "x_2.jpg", "x_1.png"]) == ["x_1.png", "x_2.jpg", "x_10.jpg"]
    _frames(tmp_path / "c", ("f_10.JPG", "f_2.png", "f_1.jpeg", "f_3.bmp", "notes.txt"))
    from fineprep.entries import ClipEntry

    entry = ClipEntry("c", "folder", "c", media="frames")
    assert [p.name for p in frame_files(tmp_path, entry)] == ["f_1.jpeg", "f_2.png", "f_3.bmp", "f_10.JPG"]


def test_resolve_inside_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert resolve_inside(root, "a/b") == (root / "a/b").resolve()
    for bad in ("../x", "a/../../x", "/etc/passwd", "C:/x", ""):
        with pytest.raises(OutsideRootError, match="outside|absolute"):
            resolve_inside(root, bad)
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(OutsideRootError, match="outside the dataset root"):
        resolve_inside(root, "link/other")


def test_registry():
    assert set(SOURCES) == set(LABEL_SET) == {"dfew", "ferv39k", "mafw", "folder"}
    assert SOURCES["dfew"][0] == "clip_224x224" and SOURCES["ferv39k"][0] == "2_ClipsforFaceCrop"
    for name in LABEL_SET.values():
        labels.label_set(name)
    with pytest.raises(DatasetLayoutError, match="unknown dataset"):
        index_dataset("afew", Path("."))


# ---------------------------------------------------------------------------------------------- DFEW
def _dfew(root: Path, *, spelling="single-labeled", crlf=False, bom=False, unpadded_folds=2) -> Path:
    """Five folds over clips 1..6; fold k tests clip k (clip 6 always trains); ids unpadded in folds 1-2."""
    for fold in range(1, 6):
        train, test = ["video_name,label"], ["video_name,label"]
        for clip in range(1, 7):
            cid = str(clip) if fold <= unpadded_folds else f"{clip:05d}"
            label = (clip % 7) + 1
            (test if clip == fold else train).append(f"{cid},{label}")
        nl = "\r\n" if crlf else "\n"
        for split, rows in (("train", train), ("test", test)):
            data = (nl.join(rows) + nl + nl).encode()
            _write(root / "EmoLabel_DataSplit" / f"{split}({spelling})" / f"set_{fold}.csv",
                   (b"\xef\xbb\xbf" if bom else b"") + data)
    for clip in range(1, 6):  # clip 6 is listed but absent
        _frames(root / "Clip" / "clip_224x224" / f"{clip:05d}")
        _write(root / "Clip" / "original" / f"{clip:05d}.mp4", b"\x00")
    return root


@pytest.mark.parametrize("spelling,crlf,bom", [("single-labeled", False, False), ("single_labeled", True, True)])
def test_dfew_folds_labels_and_missing(tmp_path, spelling, crlf, bom):
    root = _dfew(tmp_path / "dfew", spelling=spelling, crlf=crlf, bom=bom)
    entries = _by_id(index_dataset("dfew", root))
    assert sorted(entries) == [f"{i:05d}" for i in range(1, 7)]
    e = entries["00002"]
    assert (e.train_folds, e.test_folds) == ([1, 3, 4, 5], [2])
    assert e.label == labels.from_dfew_official(3) == "neutral"
    assert (e.media, e.source_path, e.status) == ("frames", "Clip/clip_224x224/00002", tables.STATUS_PENDING)
    assert entries["00006"].status == tables.STATUS_MISSING
    assert entries["00006"].train_folds == [1, 2, 3, 4, 5] and entries["00006"].test_folds == []
    assert "absent" in entries["00006"].error


def test_dfew_unpadded_folders_on_disk_and_original_source(tmp_path):
    root = _dfew(tmp_path / "dfew")
    os.rename(root / "Clip/clip_224x224/00003", root / "Clip/clip_224x224/3")
    entries = _by_id(index_dataset("dfew", root))
    assert entries["00003"].source_path == "Clip/clip_224x224/3" and entries["00003"].status == "pending"
    padded = _dfew(tmp_path / "padded", unpadded_folds=0)
    os.rename(padded / "Clip/clip_224x224/00004", padded / "Clip/clip_224x224/4")
    assert _by_id(index_dataset("dfew", padded))["00004"].source_path == "Clip/clip_224x224/4"
    outside = tmp_path / "elsewhere"
    _frames(outside)
    (root / "Clip/clip_224x224/00006").symlink_to(outside)  # the listed-but-absent clip, now a link out
    linked = _by_id(index_dataset("dfew", root))["00006"]
    assert linked.status == tables.STATUS_OUTSIDE_ROOT and "not followed" in linked.error
    videos = _by_id(index_dataset("dfew", root, source="original"))
    assert videos["00001"].media == "video" and videos["00001"].source_path == "Clip/original/00001.mp4"
    with pytest.raises(DatasetLayoutError, match="unknown DFEW source"):
        index_dataset("dfew", root, source="clip_112")


def test_dfew_bad_lines_and_conflicts(tmp_path):
    root = _dfew(tmp_path / "dfew")
    path = root / "EmoLabel_DataSplit/test(single-labeled)/set_1.csv"
    path.write_text("video_name,label\n00001,5\n00007,9\ngarbage line\n")  # 00001 is 2 (sad) in folds 2..5
    entries = _by_id(index_dataset("dfew", root))
    assert entries["00007"].status == tables.STATUS_BAD_ANNOTATION
    assert "test(single-labeled)/set_1.csv:3" in entries["00007"].error
    bad = entries["EmoLabel_DataSplit/test(single-labeled)/set_1.csv:4"]
    assert bad.status == tables.STATUS_BAD_ANNOTATION and "not a number" in bad.error
    first = entries["00001"]
    assert first.test_folds == [1] and first.status == tables.STATUS_PENDING
    assert first.label == "sadness", "four files say sadness, one surprise: the majority is kept"
    assert first.error is None
    assert "label conflict" in first.notes_text and "'surprise' 1x" in first.notes_text


def test_dfew_no_splits_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetLayoutError, match="EmoLabel_DataSplit"):
        index_dataset("dfew", tmp_path)


# ------------------------------------------------------------------------------------------- FERV39k
def test_ferv39k_split_frames_and_escapes(tmp_path):
    root = tmp_path / "ferv"
    _write(root / "4_setups/All_scenes/train_All.csv",
           "Action/Sad/0010 Sad\r\nAction/Happy/0002 Happy\r\n../../outside Sad\r\nbroken\r\n")
    _write(root / "4_setups/All_scenes/test_All.csv", "Talkshow/Fear/0001 Fear\n/etc/passwd Fear\nA/B/1 Bored\n")
    for clip in ("Action/Sad/0010", "Talkshow/Fear/0001"):
        _frames(root / "2_ClipsforFaceCrop" / clip)
        _write(root / "0_7_LabelClips" / f"{clip}.mp4", b"\x00")
    entries = _by_id(index_dataset("ferv39k", root))
    sad = entries["Action/Sad/0010"]
    assert (sad.label, sad.train_folds, sad.test_folds, sad.media) == ("sadness", [1], [], "frames")
    assert entries["Talkshow/Fear/0001"].test_folds == [1]
    assert entries["Action/Happy/0002"].status == tables.STATUS_MISSING
    assert entries["../../outside"].status == tables.STATUS_OUTSIDE_ROOT
    assert entries["/etc/passwd"].status == tables.STATUS_OUTSIDE_ROOT
    assert entries["4_setups/All_scenes/train_All.csv:4"].status == tables.STATUS_BAD_ANNOTATION
    assert "Bored" in entries["A/B/1"].error
    raw = _by_id(index_dataset("ferv39k", root, source="0_7_LabelClips"))
    assert raw["Action/Sad/0010"].source_path == "0_7_LabelClips/Action/Sad/0010.mp4"


# ---------------------------------------------------------------------------------------------- MAFW
ZH = "一个男人对着面前的激动地说话。眉头紧蹙，微微皱鼻。"
EN = "A man speaks excitedly to the man in front of him. The deep frown and the slightly wrinkled nose."


def _mafw(root: Path) -> Path:
    split = root / "Train & Test Set"
    rows = {"03747": "anger", "00025": "anger", "00100": "neutral", "00200": "happiness"}
    compound = {"03747": "anger", "00025": "anger_disgust", "00100": "neutral", "00200": "happiness_surprise"}
    for fold in range(1, 6):
        ids = list(rows)
        test = [ids[(fold - 1) % len(ids)]]
        for split_name in ("train", "test"):
            chosen = [i for i in ids if (i in test) == (split_name == "test")]
            body = "".join(f"{i}.mp4 {rows[i]}\r\n" for i in chosen)
            _write(split / "single/no_caption" / f"set_{fold}" / f"{split_name}.txt", body)
            _write(split / "compound/no_caption" / f"set_{fold}" / f"{split_name}.txt",
                   "".join(f"{i}.mp4 {compound[i]}\r\n" for i in chosen))
            cap = "".join(f"{i}.mp4\t{rows[i]}\t{ZH}\t{EN}\r\n" for i in chosen if rows[i] != "neutral")
            _write(split / "single/with_caption" / f"set_{fold}" / f"{split_name}.txt", cap.encode("gbk"))
    for i in ("03747", "00025", "00100"):
        _write(root / "data/clips" / f"{i}.mp4", b"\x00")
    return root


def test_mafw_captions_compound_and_folds(tmp_path):
    root = _mafw(tmp_path / "mafw")
    entries = _by_id(index_dataset("mafw", root))
    assert set(entries) == {"00025", "00100", "00200", "03747"}
    a = entries["03747"]
    assert a.caption_zh == ZH and a.caption_en == EN, "GBK decoded, CR stripped"
    assert (a.label, a.media, a.source_path) == ("anger", "video", "data/clips/03747.mp4")
    assert entries["00025"].compound_label == "anger_disgust" and entries["00025"].label == "anger"
    n = entries["00100"]
    assert n.caption_en is None and n.caption_zh is None, "neutral has no caption: null, not empty"
    assert entries["00200"].status == tables.STATUS_MISSING
    for e in entries.values():
        assert len(e.test_folds) + len(e.train_folds) == 5
    assert (a.test_folds, a.train_folds) == ([1, 5], [2, 3, 4])  # four clips over five folds: fold 5 wraps
    assert entries["00025"].test_folds == [2]


def test_mafw_frames_source_and_bad_lines(tmp_path):
    root = _mafw(tmp_path / "mafw")
    _frames(root / "data/frames/03747")
    with open(root / "Train & Test Set/single/no_caption/set_1/train.txt", "a") as f:
        f.write("09999.mp4 anger_disgust\r\n../../x.mp4 anger\r\n.mp4 anger\r\n")
    entries = _by_id(index_dataset("mafw", root, source="frames:data/frames"))
    assert entries["03747"].media == "frames" and entries["03747"].source_path == "data/frames/03747"
    assert entries["00025"].status == tables.STATUS_MISSING
    assert entries["09999"].status == tables.STATUS_BAD_ANNOTATION and "set_1/train.txt" in entries["09999"].error
    assert entries["../../x"].status == tables.STATUS_OUTSIDE_ROOT
    assert entries["Train & Test Set/single/no_caption/set_1/train.txt:6"].status == tables.STATUS_BAD_ANNOTATION
    with pytest.raises(DatasetLayoutError, match="climbs"):
        index_dataset("mafw", root, source="frames:../elsewhere")


# -------------------------------------------------------------------------------------------- folder
def test_folder_videos_frames_labels_and_symlinks(tmp_path):
    root = tmp_path / "mine"
    _write(root / "a/clip1.mp4", b"\x00")
    _write(root / "b.AVI", b"\x00")
    _frames(root / "frames/c3")
    outside = tmp_path / "secret"
    _frames(outside)
    _write(tmp_path / "secret.mp4", b"\x00")
    (root / "linkdir").symlink_to(outside)
    (root / "linked.mp4").symlink_to(tmp_path / "secret.mp4")
    unlabelled = _by_id(index_dataset("folder", root))
    assert set(unlabelled) == {"a/clip1", "b", "frames/c3", "linkdir", "linked"}
    assert unlabelled["a/clip1"].label is None and unlabelled["frames/c3"].media == "frames"
    assert unlabelled["linkdir"].status == unlabelled["linked"].status == tables.STATUS_OUTSIDE_ROOT
    csv = _write(tmp_path / "labels.csv",
                 "\ufeffpath,label,split\r\na/clip1.mp4,Happy,train\r\nb,sad,test\r\nframes/c3,anger_disgust,\r\n"
                 "gone.mp4,fear,\r\nb.AVI,ANGER,\r\n../x.mp4,fear,\r\na/clip1.mp4,Bored,\r\n")
    entries = _by_id(index_dataset("folder", root, labels_csv=csv))
    assert (entries["a/clip1"].label, entries["a/clip1"].train_folds) == ("happiness", [1])
    assert entries["b"].test_folds == [1]
    assert entries["b"].status == tables.STATUS_BAD_ANNOTATION, "sadness once, anger once: no majority"
    assert "no majority" in entries["b"].error and "'anger' 1x" in entries["b"].notes_text
    assert entries["frames/c3"].label is None and entries["frames/c3"].compound_label == "anger_disgust"
    assert entries["gone"].status == tables.STATUS_MISSING
    assert entries["../x.mp4"].status == tables.STATUS_OUTSIDE_ROOT
    assert "labels.csv:8" in entries["a/clip1"].notes_text and entries["a/clip1"].status == "pending"
    videos = _by_id(index_dataset("folder", root, source="videos"))
    assert "frames/c3" not in videos


def test_frame_files_refuses_symlinked_frame(tmp_path):
    root = tmp_path / "mine"
    _frames(root / "c")
    (root / "c" / "a_3.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    _write(tmp_path / "elsewhere.jpg", b"\xff")
    entry = _by_id(index_dataset("folder", root))["c"]
    with pytest.raises(OutsideRootError, match="a_3.jpg"):
        frame_files(root, entry)


# ------------------------------------------------------------------------ datasets from `fineprep synth`
@pytest.fixture(scope="module")
def synth_roots(tmp_path_factory):
    from fineprep.synth import make_dataset

    base = tmp_path_factory.mktemp("synth")
    return {d: make_dataset(d, base / d, clips_per_class=1, seed=0, size=64, frames_range=(3, 4))
            for d in ("dfew", "ferv39k", "mafw")}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["dfew", "ferv39k", "mafw"])
def test_synth_datasets_index_as_planned(synth_roots, dataset):
    """The writer of the official layouts and the readers agree on every clip, label, fold and caption."""
    from fineprep.synth import read_provenance

    root = synth_roots[dataset]
    truth = {c["clip"]: c for c in read_provenance(root)["clips"]}
    entries = _by_id(index_dataset(dataset, root))
    assert set(entries) == set(truth)
    for cid, e in entries.items():
        t = truth[cid]
        assert (e.status, e.error, e.label) == (tables.STATUS_PENDING, None, t["label"])
        if dataset == "ferv39k":
            assert (e.train_folds, e.test_folds) == (([1], []) if t["split"] == "train" else ([], [1]))
        else:
            assert e.test_folds == [t["test_fold"]]
            assert e.train_folds == [k for k in range(1, 6) if k != t["test_fold"]]
        if e.media == "frames":
            assert len(frame_files(root, e)) == t["frames"]
    if dataset == "dfew":
        for source, count in (("clip_224x224_16f", 16), ("original", None)):
            for e in index_dataset("dfew", root, source=source):
                assert e.status == tables.STATUS_PENDING
                if count:
                    assert len(frame_files(root, e)) == count
    if dataset == "mafw":
        from openpyxl import load_workbook

        sheet = load_workbook(root / "Labels" / "descriptive_text.xlsx").active
        captions = {str(r[0]).removesuffix(".mp4"): (r[1], r[2]) for r in sheet.iter_rows(values_only=True)}
        for cid, e in entries.items():
            assert e.compound_label == truth[cid]["compound_label"]
            assert (e.caption_zh, e.caption_en) == captions.get(cid, (None, None))
            assert (e.caption_en is None) == (e.label == "neutral")


# ------------------------------------------------------------------------------------------ fuzzing
_LINES = st.lists(st.text(alphabet=st.sampled_from(list("0123456789 ,./\\\t\r_-aAnger.mp4Sad") + ["é", "生"]),
                          max_size=24), max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=_LINES)
def test_any_split_text_gives_rows_never_a_crash(tmp_path_factory, lines):
    """Whatever a split file holds, every reader returns rows with known statuses and unique ids."""
    base = tmp_path_factory.mktemp("fuzz")
    body = "\n".join(lines)
    _write(base / "dfew/EmoLabel_DataSplit/train(single-labeled)/set_1.csv", body)
    _write(base / "ferv/4_setups/All_scenes/train_All.csv", body)
    _write(base / "mafw/Train & Test Set/single/no_caption/set_1/train.txt", body.encode("utf-8"))
    _write(base / "mafw/Train & Test Set/single/with_caption/set_1/train.txt", body.replace(" ", "\t") + "\n\ta\tb\n")
    for dataset, root in (("dfew", "dfew"), ("ferv39k", "ferv"), ("mafw", "mafw")):
        entries = _by_id(index_dataset(dataset, base / root))
        for e in entries.values():
            assert e.status in (tables.STATUS_PENDING, tables.STATUS_MISSING, tables.STATUS_BAD_ANNOTATION,
                                tables.STATUS_OUTSIDE_ROOT)
            assert e.status == tables.STATUS_PENDING or e.error
