"""The FaceXFormer parser: the public checkpoint's state-dict layout, 11-class maps, batching, safe loading,
what the store records about the parser, and the trainer's palette sized from the store's classes.

Offline, with random weights: no checkpoint is downloaded.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import zarr

from fineprep.extract import parsing
from fineprep.extract.facexformer import CLASSES, FaceXFormer
from fineprep.extract.store import store_attrs
from fineschema import layout, tables, validate_store

FIXTURE = Path(__file__).parent / "fixtures" / "facexformer_state_dict.json"


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine two threads run a Swin-B forward 5x slower
    yield FaceXFormer.build(seed=0).eval()
    torch.set_num_threads(threads)


def test_random_build_has_a_usable_swin_position_index(model):
    with torch.device("meta"):
        ref = FaceXFormer()
    for name, buf in model.named_buffers():
        if name.endswith("relative_position_index"):
            table = model.get_submodule(name.rsplit(".", 1)[0]).relative_position_bias_table
            assert buf.shape == ref.get_buffer(name).shape
            assert int(buf.min()) == 0 and int(buf.max()) == table.shape[0] - 1


@pytest.fixture(scope="module")
def parser(model) -> parsing.FaceXFormerParser:
    return parsing.FaceXFormerParser(model=model, device="cpu")


def _crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, size // 8, size // 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(base.repeat(8, axis=1).repeat(8, axis=2))  # blocky, not white noise


def test_state_dict_names_and_shapes_are_the_public_checkpoints():
    public = {name: tuple(shape) for name, shape in json.loads(FIXTURE.read_text())["keys"]}
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in FaceXFormer().state_dict().items()}
    assert len(public) == 505
    assert sorted(set(public) - set(ours)) == [] and sorted(set(ours) - set(public)) == []
    assert {k for k in public if public[k] != ours[k]} == set()
    # spot checks against the public code's constructor arguments
    assert ours["face_decoder.mask_tokens.weight"] == (11, 256)
    assert ours["linear_fuse.weight"] == (256, 1024, 1, 1)
    assert ours["linear_c.0.proj.weight"] == (256, 128) and ours["linear_c.3.proj.weight"] == (256, 1024)
    assert ours["pe_layer.positional_encoding_gaussian_matrix"] == (2, 128)
    assert ours["face_decoder.transformer.layers.1.mlp.lin1.weight"] == (2048, 256)
    assert ours["face_decoder.transformer.final_attn_token_to_image.q_proj.weight"] == (128, 256)
    assert ours["face_decoder.output_hypernetwork_mlps.layers.2.weight"] == (32, 256)
    assert ours["face_decoder.landmarks_prediction_head.layers.2.weight"] == (136, 256)
    assert ours["backbone.0.7.1.attn.relative_position_bias_table"] == (169, 32)
    assert ours["backbone.1.weight"] == (1024,)
    assert len(CLASSES) == 11 and CLASSES[0] == "background" and CLASSES[-1] == "hair"  # one per mask token


@pytest.mark.slow
def test_map_has_the_crop_size_and_indexes_the_11_classes(parser):
    crops = _crops(2, 96)
    maps = parser.parse(crops, np.zeros((2, 478, 3), np.float32))
    assert maps.shape == (2, 96, 96) and maps.dtype == np.uint8
    assert maps.max() < 11
    assert len(np.unique(maps)) > 3  # random weights still separate several classes on a blocky image
    logits = parser.logits(crops[:1])
    assert tuple(logits.shape) == (1, 11, 96, 96)
    assert (maps[:1] == logits.argmax(1).numpy()).mean() > 0.99  # float32 kernels differ by batch size


@pytest.mark.slow
def test_batch_gives_the_same_maps_as_one_frame_at_a_time(model, parser):
    # In float64 the model's batch and single-frame results agree to rounding: no frame leaks into another.
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    double = model.double()
    try:
        with torch.inference_mode():
            batch = double.segment(x)
            single = torch.cat([double.segment(x[i:i + 1]) for i in range(3)])
    finally:
        model.float()
    assert batch.shape == (3, 11, 64, 64)
    assert torch.allclose(batch, single, atol=1e-6, rtol=0)  # a leak would move logits by ~1
    assert torch.equal(batch.argmax(1), single.argmax(1))
    # The float32 parser on 224 px crops: oneDNN picks other kernels per batch size, a few logits move by
    # rounding (about 1e-4 on logits of size 1), so a few near-tied pixels may change class.
    crops = _crops(2, 224, seed=1)
    batch = parser.logits(crops)
    single = torch.cat([parser.logits(crops[i:i + 1]) for i in range(2)])
    assert (batch - single).abs().mean() < 1e-3 and (batch - single).abs().max() < 5e-2
    assert (batch.argmax(1) == single.argmax(1)).float().mean().item() > 0.99


@pytest.mark.slow
def test_checkpoints_round_trip_and_are_recorded(tmp_path, model, parser):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    pt = tmp_path / "model.pt"
    torch.save({"state_dict_backbone": state}, pt)  # the public checkpoint's layout
    st = tmp_path / "model.safetensors"
    save_file(state, str(st))
    crops = _crops(1, 224, seed=2)
    want = parser.parse(crops)
    for path in (pt, st):
        back = parsing.load_weights(path)
        assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
        record = parsing.parser_record("facexformer", path)  # also checks names and shapes
        assert record == {"name": "facexformer", "weights_sha256": parsing.weights_sha256(path)}
        assert len(record["weights_sha256"]) == 64
    loaded = parsing.FaceXFormerParser(pt, device="cpu")
    assert np.array_equal(loaded.parse(crops), want)
    assert parsing.weights_sha256(pt) != parsing.weights_sha256(st)


def _touch_marker():  # what a malicious pickle would run
    Path("/tmp/fineclip-facexformer-pickle-ran").write_text("ran")


class _Payload:
    def __reduce__(self):
        return (_touch_marker, ())


def test_pickles_are_refused_without_running_them(tmp_path):
    marker = Path("/tmp/fineclip-facexformer-pickle-ran")
    marker.unlink(missing_ok=True)
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps({"w": _Payload()}))
    with pytest.raises(parsing.ParserError, match="only .safetensors or a .pt/.pth") as err:
        parsing.load_weights(pkl)
    assert "\n" not in str(err.value)
    pt = tmp_path / "evil.pt"
    torch.save({"state_dict_backbone": {"w": _Payload()}}, pt)
    with pytest.raises(parsing.ParserError, match="could not be read safely") as err:
        parsing.load_weights(pt)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_checkpoint_that_does_not_fit_is_named_in_one_line(tmp_path):
    with torch.device("meta"):
        model = FaceXFormer()
    state = dict(model.state_dict())
    del state["face_decoder.mask_tokens.weight"]
    state["linear_fuse.weight"] = torch.empty(256, 512, 1, 1, device="meta")
    state["extra.weight"] = torch.empty(1, device="meta")
    with pytest.raises(parsing.ParserError) as err:
        parsing.check_state_dict(state, model, "ckpt.pt")
    msg = str(err.value)
    assert "\n" not in msg
    assert "1 missing (first: face_decoder.mask_tokens.weight)" in msg
    assert "1 unexpected (first: extra.weight)" in msg
    assert "1 with other shapes (first: linear_fuse.weight (256, 512, 1, 1))" in msg


def test_options_that_cannot_work_fail_before_any_worker(tmp_path, monkeypatch):
    with pytest.raises(parsing.ParserError, match="needs --parser-weights"):
        parsing.parser_record("facexformer", None)
    with pytest.raises(parsing.ParserError, match="not found"):
        parsing.parser_record("facexformer", tmp_path / "nope.pt")
    with pytest.raises(parsing.ParserError, match="mesh parser has no weights"):
        parsing.parser_record("mesh", tmp_path / "x.pt")
    assert parsing.parser_record("mesh") == {"name": "mesh", "weights_sha256": None}
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # an install without the trainer extra
    with pytest.raises(parsing.ParserError, match="install the trainer extra or torch"):
        parsing.parser_record("facexformer", ckpt)


def _store(root: Path, attrs: dict, frames: int = 2, size: int = 8) -> Path:
    root.mkdir(parents=True)
    rows = {"clip_id": ["00001"], "dataset": ["dfew"], "source_path": ["Clip/clip_224x224/00001"],
            "label": ["happiness"], "label_index": [0], "train_folds": [[2, 3, 4, 5]], "test_folds": [[1]],
            "frame_indices": [list(range(frames))], "store_index": [0], "status": [tables.STATUS_OK]}
    pq.write_table(tables.conform(pa.table(rows), tables.MANIFEST), root / layout.MANIFEST_FILE)
    group = zarr.open_group(str(root / layout.ARRAYS_DIR), mode="w", zarr_format=3)
    for spec in layout.ARRAYS:
        arr = group.create_array(spec.name, shape=spec.concrete_shape(1, frames, size),
                                 chunks=spec.chunk_shape(frames, size), dtype=spec.dtype)
        arr[:] = np.ones(arr.shape, dtype=spec.dtype)
    group.attrs.update(attrs)
    return root


def test_store_records_the_parser_and_the_contract_knows_both_class_lists(tmp_path):
    settings = {"frames": 2, "size": 8, "parser": "facexformer", "parser_weights": "/somewhere/model.pt"}
    attrs = store_attrs(dataset="dfew", source="clip_224x224", label_set="dfew", landmark_sha256="0" * 64,
                        settings=settings, num_clips=1, plan_sha256="p",
                        parser={"name": "facexformer", "weights_sha256": "a" * 64})
    assert attrs["parsing_classes"] == list(CLASSES)
    assert attrs["parser"] == {"name": "facexformer", "weights_sha256": "a" * 64}
    assert "parser_weights" not in attrs["settings"]  # a path on this machine, not what the weights are
    mesh = store_attrs(dataset="dfew", source="clip_224x224", label_set="dfew", landmark_sha256="0" * 64,
                       settings={"frames": 2, "size": 8}, num_clips=1, plan_sha256="p")
    assert mesh["parsing_classes"] == list(layout.PARSING_CLASSES)
    assert mesh["parser"] == {"name": "mesh", "weights_sha256": None}

    def problems(name: str, extra: dict) -> list[str]:
        base = {k: v for k, v in attrs.items() if k != "settings"}
        return [p for p in validate_store(_store(tmp_path / name, {**base, **extra})) if "parsing" in p or
                "parser" in p]

    assert problems("fx", {}) == []
    assert problems("mesh", {"parsing_classes": list(layout.PARSING_CLASSES),
                             "parser": {"name": "mesh", "weights_sha256": None}}) == []
    assert problems("old", {"parsing_classes": list(layout.PARSING_CLASSES), "parser": None}) == []
    wrong = problems("wrong", {"parsing_classes": list(layout.PARSING_CLASSES)})
    assert len(wrong) == 1 and "differ from the contract's facexformer classes" in wrong[0]
    unknown = problems("unknown", {"parsing_classes": ["background", "face"], "parser": None})
    assert len(unknown) == 1 and "differ from every parser's" in unknown[0]


def test_trainer_palette_has_one_colour_per_declared_class_and_mirrors_sides():
    from finetrain.data.render import PALETTE, parsing_overlay, parsing_palette

    pal = parsing_palette(CLASSES)
    assert pal.shape == (11, 3)
    assert len({tuple(c) for c in pal[1:].tolist()}) == 10  # every painted class has its own colour
    assert torch.equal(parsing_palette(layout.PARSING_CLASSES), PALETTE) and PALETTE.shape == (7, 3)
    mirrored = parsing_palette(CLASSES, mirrored=True)
    i = {n: k for k, n in enumerate(CLASSES)}
    for a, b in (("left_eye", "right_eye"), ("left_brow", "right_brow")):
        assert torch.equal(mirrored[i[a]], pal[i[b]]) and torch.equal(mirrored[i[b]], pal[i[a]])
    assert torch.equal(mirrored[i["hair"]], pal[i["hair"]])

    frames = torch.full((1, 3, 2, 11), 100, dtype=torch.uint8)
    classes = torch.arange(11, dtype=torch.uint8).view(1, 1, 11).expand(1, 2, 11)
    out = parsing_overlay(frames, classes, 0.5, pal)
    assert torch.equal(out[0, :, 0, 0], frames[0, :, 0, 0])  # background untouched
    want = ((100 * 128 + pal[i["hair"]].int() * 128) >> 8).to(torch.uint8)
    assert torch.equal(out[0, :, 0, i["hair"]], want)  # class 10 drawn, not clamped to the mesh's 7
    assert not torch.equal(out[0, :, 0, 10], parsing_overlay(frames, classes, 0.5)[0, :, 0, 10])


@pytest.mark.slow
def test_fineprep_extract_with_facexformer_writes_11_class_maps_and_records_the_weights(tmp_path, model):
    """The whole path: CLI options, the check before any worker, a Dask worker loading the checkpoint."""
    import os
    import subprocess

    from extract_data import write_video
    from safetensors.torch import save_file

    root = tmp_path / "data"
    root.mkdir()
    write_video(root / "clip0.mp4", 12)
    ckpt = tmp_path / "facexformer.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    fineprep = str(Path(sys.executable).parent / "fineprep")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "store"
    args = [fineprep, "extract", "--dataset", "folder", "--root", str(root), "--out", str(out), "--frames", "2",
            "--size", "64", "--workers", "1", "--parser", "facexformer"]
    refused = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 2 and "needs --parser-weights" in refused.stderr
    proc = subprocess.run([*args, "--parser-weights", str(ckpt)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert validate_store(out) == []
    group = zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r")
    assert group.attrs["parsing_classes"] == list(CLASSES)
    assert group.attrs["parser"] == {"name": "facexformer", "weights_sha256": parsing.weights_sha256(ckpt)}
    maps = group["parsing"][0]
    assert maps.shape == (2, 64, 64) and maps.max() < 11
    assert len(np.unique(maps)) > 1


def test_contact_sheet_colours_every_declared_class():
    from fineprep.inspect.show import PALETTE as SHEET
    from fineprep.inspect.show import overlay, palette_for

    pal = palette_for(CLASSES)
    assert len(pal) == 11 and len(set(pal[1:])) == 10
    assert palette_for(layout.PARSING_CLASSES) == SHEET
    frame = np.full((1, 11, 3), 100, np.uint8)
    classes = np.arange(11, dtype=np.uint8)[None]
    out = overlay(frame, classes, 0.5, pal)
    assert tuple(out[0, 10]) == tuple(round(0.5 * 100 + 0.5 * c) for c in pal[10])  # hair, not clamped


@pytest.mark.slow
def test_predict_extracts_a_video_with_the_training_stores_facexformer_parser(tmp_path, model):
    """A model trained on a `--parser facexformer` store is fed FaceXFormer maps when it predicts: the
    seam builds the store's parser from the weights given, and refuses in one line without them or with
    other ones. Random FaceXFormer weights: this checks which parser ran, not the maps' quality."""
    from extract_data import write_video
    from safetensors.torch import save_file

    from fineprep.extract import faces
    from fineschema import ExtractSettings
    from finetrain.evaluate.predict import PredictError, extract_videos

    video = write_video(tmp_path / "clip.mp4", 12)
    ckpt = tmp_path / "facexformer.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    model_path, landmark_sha = faces.resolve_landmarker(None)
    settings = ExtractSettings(frames=2, size=64, margin=0.6, smooth_sigma=1.0, face="primary", min_face=40.0,
                               cut_change=0.4, min_found_ratio=0.25, crop_frame_sources=False, landmark_mode="image",
                               parser="facexformer", parser_weights_sha256=parsing.weights_sha256(ckpt),
                               landmark_sha256=landmark_sha, detector_sha256=faces.detector_sha256(model_path),
                               min_landmark_score=0.5, second_detector=False)
    with pytest.raises(PredictError, match=r"trained on facexformer parsing maps .* pass those weights with "
                       r"--parser-weights PATH"):
        extract_videos([video], settings, frames=2)
    other = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() + 1 for k, v in model.state_dict().items()}, str(other))
    with pytest.raises(PredictError, match=r"--parser-weights .* is not what the training store was made with"):
        extract_videos([video], settings, frames=2, parser_weights=other)
    with pytest.raises(PredictError, match=r"\(the face_landmarker.task\) .* is not what the training store was made "
                       r"with .* --landmarker PATH"):
        extract_videos([video], ExtractSettings(**{**settings.to_dict(), "landmark_sha256": "f" * 64}), frames=2)

    (result,) = extract_videos([video], settings, frames=2, parser_weights=ckpt)
    built = parsing.get_parser("facexformer", str(ckpt))  # the process's parser, cached by (name, weights)
    assert isinstance(built, parsing.FaceXFormerParser)
    assert result.status == "ok" and result.arrays["parsing"].shape == (2, 64, 64)
    again = built.parse(result.arrays["frames"], result.arrays["landmarks"])
    again[~result.arrays["face_found"]] = 0
    assert result.arrays["face_found"].any() and again.max() > 6  # classes the 7-class mesh parser never draws
    assert (again == result.arrays["parsing"]).mean() > 0.99  # the stored maps are that parser's
