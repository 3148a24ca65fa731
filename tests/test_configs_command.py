"""`finetrain configs` lists every preset with its streams and paper row; `--show` and `run --print-config`
print the resolved config (YAML that loads back to the same config)."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from finetrain.cli import app
from finetrain.config import from_dict, load_config, preset_names


def test_configs_lists_every_preset_with_its_paper_row():
    result = CliRunner().invoke(app, ["configs"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in preset_names():
        assert name in result.output
    assert "FineCLIPER*†" in result.output and "FineCLIPER*" in result.output


def test_show_and_print_config_give_the_resolved_config():
    shown = CliRunner().invoke(app, ["configs", "--show", "dfew-b16", "optim.lr=5e-4"])
    assert shown.exit_code == 0, shown.output
    assert from_dict(yaml.safe_load(shown.output)) == load_config("dfew-b16", ["optim.lr=5e-4"])
    printed = CliRunner().invoke(app, ["run", "--store", "nowhere", "--out", "nowhere", "--config", "tiny",
                                       "optim.epochs=2", "--print-config"])
    assert printed.exit_code == 0, printed.output
    assert from_dict(yaml.safe_load(printed.output)).optim.epochs == 2
    bad = CliRunner().invoke(app, ["configs", "--show", "tiny", "optim.nope=1"])
    assert bad.exit_code == 2 and "optim.nope" in bad.output
