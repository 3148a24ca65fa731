"""Export names cannot collide: clip ids map to folder names one-to-one (`my clip` and `my_clip` get two
folders, each with its own crops, and two distinct lines), and a path with a space is never written into
the space-separated annotation files (`--absolute` under such a folder is refused in one line)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_hostile_input import _set_clip_id, _store
from typer.testing import CliRunner

from fineprep.cli import app
from fineprep.inspect import open_store
from fineprep.inspect.export import folder_name

runner = CliRunner()


def test_folder_names_are_one_to_one_and_hold_no_space():
    ids = ["my clip", "my_clip", "my%20clip", "my\tclip", "a/b c", "Action/Sad/0010", "00001"]
    names = [folder_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert not any(ch.isspace() for n in names for ch in n)
    assert folder_name("Action/Sad/0010") == "Action/Sad/0010" and folder_name("00001") == "00001"


def test_two_ids_that_differ_by_a_space_get_their_own_frames(tmp_path):
    store = _store(tmp_path / "store")
    _set_clip_id(store, "00002", "my clip")
    _set_clip_id(store, "00003", "my_clip")
    out = tmp_path / "ann"
    r = runner.invoke(app, ["export", "--store", str(store), "--out", str(out), "--frames"])
    assert r.exit_code == 0, r.output
    lines = [ln for p in sorted(out.glob("*.txt")) for ln in p.read_text().splitlines()]
    paths = {ln.split(" ")[0] for ln in lines}
    assert {"frames/my%20clip", "frames/my_clip"} <= paths
    assert all(len(ln.split(" ")) == 3 for ln in lines)
    view = open_store(store)
    rows = {r["clip_id"]: r for r in view.rows}
    for clip in ("my clip", "my_clip"):
        stored = view.group["frames"][int(rows[clip]["store_index"])]
        first = np.asarray(Image.open(out / "frames" / folder_name(clip) / "00001.jpg"), dtype=np.int16)
        assert np.abs(first - stored[0]).mean() < 3  # this clip's crops (JPEG-close), not the other's


@pytest.mark.parametrize("frames", [True, False])
def test_absolute_paths_with_a_space_are_refused_in_one_line(tmp_path, frames):
    store = _store(tmp_path / "store")
    out = tmp_path / "with space" / "ann"
    args = ["export", "--store", str(store), "--out", str(out), "--absolute"]
    args += ["--frames"] if frames else ["--root", str(tmp_path / "data root")]
    r = runner.invoke(app, args)
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and text.count("error:") == 1 and "space-separated" in text, r.output
    assert not out.exists()
