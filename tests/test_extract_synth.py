"""fineprep extract on a `fineprep synth` DFEW dataset: real expressions through the real pipeline.

The synthetic surprise clip opens the jaw from its onset to its apex and holds it; the stored jawOpen
blendshape (computed by the real FaceLandmarker on the stored crops) must be low before the onset,
climb to the apex and stay high after it, and must stay low all through the neutral clip. Checked on
the raw videos (detect + crop path) and on the face-crop frame folders (resize path).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from fineprep.synth import read_provenance
from fineschema import layout, tables, validate_store

JAW = layout.BLENDSHAPE_NAMES.index("jawOpen")


@pytest.fixture(scope="module")
def dfew(tmp_path_factory):
    from fineprep.synth import make_dataset

    base = tmp_path_factory.mktemp("synth")
    return base, make_dataset("dfew", base / "dfew", clips_per_class=1, seed=0, size=256)


def _extract(base: Path, root: Path, source: str) -> Path:
    out = base / f"store-{source}"
    proc = subprocess.run([str(Path(sys.executable).parent / "fineprep"), "extract", "--dataset", "dfew",
                           "--root", str(root), "--out", str(out), "--source", source, "--frames", "8",
                           "--size", "160", "--workers", "2", "--batch-size", "4"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("source", ["original", "clip_224x224"])
def test_jaw_opens_in_surprise_and_stays_shut_in_neutral(dfew, source):
    base, root = dfew
    out = _extract(base, root, source)
    assert validate_store(out) == []
    m = pq.read_table(out / layout.MANIFEST_FILE).to_pandas()
    assert (m.status == tables.STATUS_OK).all(), m[["clip_id", "status", "error"]]
    g = zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r")

    clips = {c["label"]: c for c in read_provenance(root)["clips"]}

    def jaw(label: str) -> tuple[np.ndarray, np.ndarray]:
        row = m[m.label == label].iloc[0]
        assert g["face_found"][row.store_index].all()
        return g["blendshapes"][row.store_index][:, JAW], np.asarray(row.frame_indices)

    surprise, idx = jaw("surprise")
    onset, apex = clips["surprise"]["onset"], clips["surprise"]["apex"]
    before = surprise[idx <= onset]
    assert len(before) and before.max() < 0.1, (surprise, idx)
    held = surprise[idx >= apex]                           # the clip holds its apex to the end
    assert len(held) and held.mean() - before.mean() > 0.25, (surprise, idx)
    progress = np.clip((idx - onset) / (apex - onset), 0, 1)  # the recipe's intensity at each kept frame
    assert np.corrcoef(progress, surprise)[0, 1] > 0.8, (surprise, progress)
    neutral, _ = jaw("neutral")
    assert neutral.max() < 0.15 and np.ptp(neutral) < 0.1, neutral
