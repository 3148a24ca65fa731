"""FaceXFormer weights that fit by name and shape but not by value are refused in one line: an int8 copy
(it would be cast, not dequantised) and weights holding NaN (every parsing map one class)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from fineprep.extract import parsing
from fineprep.extract.facexformer import FaceXFormer


@pytest.fixture(scope="module")
def state():
    return {k: v.clone() for k, v in FaceXFormer.build(seed=0).state_dict().items()}


@pytest.mark.slow  # a random Swin-B state dict written and read back
@pytest.mark.parametrize("damage", ["int8", "nan"])
def test_weights_of_the_wrong_kind_are_refused_in_one_line(tmp_path, state, damage):
    key = "linear_fuse.weight"
    bad = dict(state)
    bad[key] = state[key].to(torch.int8) if damage == "int8" else state[key].clone().fill_(float("nan"))
    path = tmp_path / "weights.safetensors"
    save_file(bad, str(path))
    with pytest.raises(parsing.ParserError) as err:
        parsing.FaceXFormerParser(path, device="cpu")
    text = str(err.value)
    assert "\n" not in text and key in text and str(path) in text
    assert ("not floating point" if damage == "int8" else "NaN or infinite") in text
