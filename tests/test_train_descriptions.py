"""Descriptions written by a random-weight model never reach training unless asked for."""

import pyarrow as pa
import pyarrow.parquet as pq
from toy_store import write_toy_store

from fineschema import layout
from finetrain.config import load_config
from finetrain.data.store import StoreInfo
from finetrain.train.recipe import prepare


def _mark_random(store):
    part = next((store / layout.DESCRIPTIONS_DIR).glob("*.parquet"))
    table = pq.read_table(part)
    col = table.schema.get_field_index("random_weights")
    table = table.set_column(col, table.schema.field(col), pa.array([True] * table.num_rows))
    pq.write_table(table, part)


def test_random_weight_descriptions_are_kept_apart(tmp_path):
    store = write_toy_store(tmp_path / "store", clips_per_class=2, frames=2, size=16, descriptions=True)
    real = StoreInfo.open(store)
    assert len(real.descriptions) == 14 and real.random_descriptions == {}
    _mark_random(store)
    info = StoreInfo.open(store)
    assert info.descriptions == {} and info.random_descriptions == real.descriptions

    prep = prepare(load_config("tiny", []), store)  # tiny drops what it cannot feed, and says why
    assert "description" not in prep.cfg.model.streams
    assert "14 from a random-weight model" in prep.streams.dropped["description"]
    assert any("stream description dropped" in n for n in prep.notes)

    prep = prepare(load_config("tiny", ["data.random_descriptions=true"]), store)
    assert "description" in prep.cfg.model.streams
    assert prep.info.descriptions == real.descriptions
