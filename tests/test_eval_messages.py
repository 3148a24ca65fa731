"""`finetrain eval` and `finetrain predict` refuse what they cannot use in one line, exit code 2."""

from __future__ import annotations

from typer.testing import CliRunner

from finetrain.cli import app


def _one_line_error(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_eval_refuses_an_unknown_clip_choice_and_a_run_without_a_model(tmp_path):
    run = tmp_path / "run"
    (run / "fold1").mkdir(parents=True)
    said = _one_line_error("eval", "--run", run, "--store", tmp_path / "store", "--clips", "some")
    assert said == "error: --clips must be auto, test or all; got 'some'"
    said = _one_line_error("eval", "--run", run, "--store", tmp_path / "store")
    assert "no trained model (checkpoints/best) here or in fold<K>/ sub-runs" in said


def test_predict_refuses_a_run_without_a_model(tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"")
    (tmp_path / "run" / "fold1" / "checkpoints").mkdir(parents=True)
    said = _one_line_error("predict", "--run", tmp_path / "run", video)
    assert said == f"error: {tmp_path / 'run'}: no trained model here (checkpoints/best) nor in fold<K>/ sub-runs"
    said = _one_line_error("predict", "--run", tmp_path / "run", "--fold", "2", video)
    assert said == f"error: {tmp_path / 'run'}: no model trained on fold 2 (have: none)"
