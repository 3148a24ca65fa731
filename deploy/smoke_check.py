"""The smoke run's verdict (deploy/smoke.sh), run inside the pipeline image on what the services wrote:
the store passes fineschema's validation, holds extracted and described clips, and the training run
finished with a test.json.

    python smoke_check.py STORE RUN
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

from fineschema import layout, tables, validate_store


def main(store: Path, run: Path) -> int:
    problems = validate_store(store)
    status = pq.read_table(store / layout.MANIFEST_FILE, columns=["status"]).column("status").to_pylist()
    ok = status.count(tables.STATUS_OK)
    described = sum(pq.read_table(p).num_rows for p in (store / layout.DESCRIPTIONS_DIR).rglob("*.parquet"))
    test_file = run / "test.json"
    test = json.loads(test_file.read_text()) if test_file.exists() else None
    print(f"store: {len(status)} clips, {ok} ok, {described} descriptions")
    if test is None:
        problems.append(f"{test_file}: missing, the training run did not finish")
    else:
        print(f"run: test fold {test['fold']}, {test['count']} clips, UAR {test['uar']:.3f}, WAR {test['war']:.3f}")
    if ok == 0:
        problems.append("no clip was extracted successfully")
    if described == 0:
        problems.append("no description was written")
    for problem in problems:
        print(f"problem: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: smoke_check.py STORE RUN")
    raise SystemExit(main(Path(sys.argv[1]), Path(sys.argv[2])))
