"""`ExtractConfig` and the command choices: one object carries every extract setting, the store records the
same keys and values as before it existed (so older stores resume), the enums name exactly what the code
below them accepts, and the commands turn fineprep's and the contract's errors into one line."""

from __future__ import annotations

import inspect
import json

import pytest
from typer.testing import CliRunner

from fineprep import choices
from fineprep.cli import app
from fineprep.errors import FineprepError
from fineprep.extract import store
from fineprep.extract.config import ExtractConfig
from fineschema.errors import SchemaError

# The store's `settings` attribute as `fineprep extract` writes it with its defaults (the old
# clip.Settings.as_attrs() plus batch_size, and since schema 3 the mesh threshold and the second detector),
# spelled out so a renamed field or a changed value shows here.
OLD_DEFAULT_SETTINGS = {
    "frames": 16, "size": 224, "margin": 0.6, "smooth_sigma": 1.0, "parser": "mesh", "parser_weights": None,
    "landmark_mode": "image", "crop_frame_sources": False, "face": "primary", "min_face": 40.0,
    "cut_change": 0.4, "min_found_ratio": 0.25, "min_landmark_score": 0.5, "second_detector": True,
    "batch_size": 16,
}


def _attrs(settings: dict) -> dict:
    return store.store_attrs(dataset="folder", source="all", label_set="mafw", landmark_sha256="0" * 64,
                             settings=settings, num_clips=3, plan_sha256="p" * 64)


def test_recorded_settings_keep_their_keys_and_plain_values():
    got = ExtractConfig().store_settings()
    assert got == OLD_DEFAULT_SETTINGS
    assert json.loads(json.dumps(got)) == got
    assert {type(got[k]) for k in ("parser", "landmark_mode", "face")} == {str}  # the word, not the enum


def test_a_store_written_before_the_config_object_resumes_and_other_settings_are_refused(tmp_path):
    out = tmp_path / "s"
    assert store.prepare(out, _attrs(OLD_DEFAULT_SETTINGS), overwrite=False) is False  # created
    assert store.prepare(out, _attrs(ExtractConfig().store_settings()), overwrite=False) is True  # resumed
    changed = ExtractConfig(face="largest", landmark_mode="video").store_settings()
    with pytest.raises(store.SettingsMismatch, match=r"face: 'primary' -> 'largest'.*landmark_mode"):
        store.prepare(out, _attrs(changed), overwrite=False)


def test_job_settings_are_not_recorded():
    """Workers, memory, limits and where the models live change how a job runs, not what it stores."""
    base = ExtractConfig().store_settings()
    other = ExtractConfig(workers=3, scheduler="tcp://x:1", memory_limit="9GiB", limit=5, max_pixels=10,
                          overwrite=True, strict=True, source="videos").store_settings()
    assert other == base


def test_strings_become_enums_and_a_bad_choice_fails_by_name(tmp_path):
    config = ExtractConfig(face="center", parser="facexformer", landmark_mode="video", source="frames",
                           parser_weights=tmp_path / "w" / ".." / "m.pt")
    assert config.face is choices.FaceChoice.CENTER and config.parser is choices.ParserKind.FACEXFORMER
    assert config.landmark_mode is choices.LandmarkMode.VIDEO and config.source is choices.Source.FRAMES
    assert config.parser_weights == str((tmp_path / "m.pt").resolve())
    with pytest.raises(ValueError, match="'biggest' is not a valid FaceChoice"):
        ExtractConfig(face="biggest")


def test_the_choices_match_what_the_code_below_accepts():
    from fineprep import synth
    from fineprep.datasets import SOURCES
    from fineprep.extract import parsing, tracks

    assert set(choices.Dataset) == set(SOURCES) == set(synth.DATASETS)
    assert set(choices.Source) == {s for names in SOURCES.values() for s in names}
    assert tuple(choices.FaceChoice) == tracks.RULES
    assert set(choices.ParserKind) == set(parsing.PARSERS)
    assert tuple(choices.Scene) == synth.SCENES


def test_the_command_defaults_are_the_config_defaults():
    from fineprep.commands.extract import extract

    defaults = ExtractConfig()
    options = {name: p.default for name, p in inspect.signature(extract).parameters.items()
               if p.default is not inspect.Parameter.empty}
    assert len(options) == 21
    for name, value in options.items():
        assert getattr(defaults, name) == value, name


def _flat(output: str) -> str:
    """CLI output as one line, without the frame typer draws around an error."""
    return " ".join(output.replace("│", " ").split())


def _extract_args(tmp_path, *more: str) -> list[str]:
    return ["extract", "--dataset", "folder", "--root", str(tmp_path), "--out", str(tmp_path / "s"), *more]


def test_an_unknown_choice_is_refused_with_the_choices(tmp_path):
    result = CliRunner().invoke(app, _extract_args(tmp_path, "--landmark-mode", "fast"))
    assert result.exit_code == 2
    assert "'fast' is not one of 'image', 'video'" in _flat(result.output)


@pytest.mark.parametrize("error", [FineprepError("the layout is wrong"), SchemaError("the layout is wrong")])
def test_extract_prints_fineprep_and_contract_errors_in_one_line(tmp_path, monkeypatch, error):
    from fineprep.extract import app as extract_app

    seen = {}

    def refuse(dataset, root, out, config, console):
        seen.update(dataset=dataset, config=config)
        raise error

    monkeypatch.setattr(extract_app, "extract_dataset", refuse)
    result = CliRunner().invoke(app, _extract_args(tmp_path, "--face", "largest", "--batch-size", "4"))
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.strip()] == ["error: the layout is wrong"]
    assert seen["dataset"] == "folder" and seen["config"].face == "largest" and seen["config"].batch_size == 4


def test_extract_lets_a_bug_through(tmp_path, monkeypatch):
    """A KeyError from a bug is not dressed up as a user error."""
    from fineprep.extract import app as extract_app

    def broken(*args, **kwargs):
        raise KeyError("frames")

    monkeypatch.setattr(extract_app, "extract_dataset", broken)
    result = CliRunner().invoke(app, _extract_args(tmp_path))
    assert isinstance(result.exception, KeyError)


def test_synth_prints_its_errors_in_one_line(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = CliRunner().invoke(app, ["synth", "--dataset", "dfew", "--out", str(tmp_path / "full")])
    assert result.exit_code == 2
    assert "error:" in result.output and "exists and is not empty" in result.output
    bad = CliRunner().invoke(app, ["synth", "--dataset", "dfw", "--out", str(tmp_path / "n")])
    assert bad.exit_code == 2 and "'dfw' is not one of 'dfew', 'ferv39k', 'mafw', 'folder'" in _flat(bad.output)


def test_a_source_of_another_dataset_is_named_as_typed(tmp_path):
    """The enum reaches the dataset readers as its word, so their one-line message quotes 'all', not the enum."""
    result = CliRunner().invoke(app, ["extract", "--dataset", "dfew", "--source", "all", "--root", str(tmp_path),
                                      "--out", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert _flat(result.output) == ("error: unknown DFEW source 'all'; choose one of clip_224x224, "
                                    "clip_224x224_16f, original")
