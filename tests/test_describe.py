"""`fineprep describe`: prompts, refinement, prompt building, the hf engine end to end, resume, shards,
failure isolation and the OpenAI engine's retries.

The model is a tiny LLaVA with random weights built locally: its text is meaningless, so these tests
check plumbing (counts, token accounting, schema, resume), never prose.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import fineprompts
from fineprep.describe import writer
from fineprep.describe.engines.base import GenerationSettings, make_engine
from fineprep.describe.prompting import build_messages, clip_media, grid_image, render_prompt, sample_indices
from fineprep.describe.refine import leak_rate, leaks, refine_text
from fineprep.describe.registry import REGISTRY, ModelError, resolve
from fineprep.describe.runner import DescribeConfig, DescribeError, parse_shard, run_describe, shard_of
from fineprep.describe.tiny_model import TOKENS_PER_IMAGE
from fineschema import tables
from fineschema.validate import validate_store

sys.path.insert(0, str(Path(__file__).parent))
from describe_store import make_store  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def tiny_cache(tmp_path_factory):
    """One tiny model per test session, built in a private cache dir."""
    import torch

    torch.set_num_threads(1)
    cache = tmp_path_factory.mktemp("fineclip-cache")
    old = os.environ.get("FINECLIP_CACHE")
    os.environ["FINECLIP_CACHE"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1"
    resolve("tiny-random")
    yield cache
    if old is None:
        os.environ.pop("FINECLIP_CACHE", None)
    else:
        os.environ["FINECLIP_CACHE"] = old


def _cfg(store, **kw) -> DescribeConfig:
    base = {"model": "tiny-random", "engine": "hf", "frames": 4, "max_tokens": 8, "chunk": 4}
    base.update(kw)
    return DescribeConfig(store=store, **base)


# --- prompts and refinement -------------------------------------------------------------------

def test_instruction_is_versioned_and_hashed():
    text, digest = fineprompts.load_instruction("facial-changes-v1")
    assert fineprompts.load_instruction() == (text, digest)  # the default id
    assert len(digest) == 64 and digest == fineprompts.sha256_text(text)
    assert "mouth" in text and "gaze" in text
    with pytest.raises(KeyError, match="unknown prompt id 'nope'"):
        fineprompts.load_instruction("nope")


def test_lexicon_per_dataset():
    dfew, mafw = fineprompts.load_lexicon("dfew"), fineprompts.load_lexicon("mafw")
    assert set(dfew.label_terms) == {"happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear"}
    assert {"contempt", "anxiety"} <= set(mafw.label_terms)
    assert dfew.find("He looks anxious") == [] and mafw.find("He looks anxious") == ["anxious"]


def test_refinement_removes_label_words_keeps_movements():
    lex = fineprompts.load_lexicon("dfew")
    text = ("The man's mouth is slightly open, revealing his teeth, and his eyes are squinting, indicating a "
            "sense of joy or amusement. The facial expression is characterized by a slight upturned mouth, "
            "relaxed eyebrows, and a slight smile. The man in the video displays a surprised expression. "
            "Her brows rise and she looks happy while her breathing quickens.")
    out = refine_text(text, lex)
    assert out == ("The man's mouth is slightly open, revealing his teeth, and his eyes are squinting. "
                   "The facial expression is characterized by a slight upturned mouth, and relaxed eyebrows. "
                   "Her brows rise while her breathing quickens.")
    assert leaks(text, lex) and not leaks(out, lex)
    for word in ("mouth", "teeth", "squinting", "eyebrows", "brows rise", "breathing"):
        assert word in out
    assert leak_rate([text, out, "The jaw drops.", None], lex) == pytest.approx(1 / 3)
    assert refine_text(None, lex) is None


# --- prompt building --------------------------------------------------------------------------

def test_frames_and_grid():
    assert sample_indices(16, 4).tolist() == [0, 5, 10, 15]
    assert sample_indices(3, 8).tolist() == [0, 1, 2]
    frames = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
    g = grid_image(frames)
    assert g.shape == (4, 6, 3) and (g[2:4, 0:2] == frames[3]).all() and (g[2:4, 4:6] == 0).all()
    spec = REGISTRY["llava-1.5"]
    media = clip_media(np.zeros((16, 8, 8, 3), np.uint8), spec, 9)
    assert media.count == 1 and media.images[0].size == (24, 24)
    video = clip_media(np.zeros((16, 8, 8, 3), np.uint8), REGISTRY["llava"], 8)
    assert video.kind == "video" and video.video.shape == (8, 8, 8, 3)


def test_prompt_from_processor_chat_template_has_one_placeholder_per_image():
    from transformers import AutoProcessor

    spec = resolve("tiny-random")
    proc = AutoProcessor.from_pretrained(spec.model_id)
    media = clip_media(np.zeros((8, 32, 32, 3), np.uint8), spec, 8)
    assert media.count == spec.max_images == 4  # capped at what the model takes
    prompt = render_prompt(spec, build_messages("describe the mouth", media), proc)
    assert prompt.startswith("USER: ") and prompt.endswith("ASSISTANT:") and prompt.count("<image>") == 4
    ids = proc(images=media.images, text=prompt, return_tensors="pt")["input_ids"][0].tolist()
    assert ids.count(proc.tokenizer.convert_tokens_to_ids("<image>")) == 4 * TOKENS_PER_IMAGE
    # Fallback template when there is no processor.
    assert render_prompt(spec, build_messages("q", media)) == "USER: <image><image><image><image>\n" \
        "The 4 images are frames of one clip in temporal order. q ASSISTANT:"


def test_registry_errors():
    with pytest.raises(ModelError, match="unknown model 'nosuch'"):
        resolve("nosuch")
    with pytest.raises(ModelError, match="must contain"):
        resolve("org/some-model", template="USER: {prompt}")
    spec = resolve("org/some-model", template="<s>{media}{prompt}", frames_as="grid")
    assert spec.model_id == "org/some-model" and spec.frames_as == "grid"
    assert REGISTRY["llava"].model_id == "llava-hf/LLaVA-NeXT-Video-7B-hf"


def test_shards_partition_clips():
    ids = [f"c{i}" for i in range(200)]
    parts = [{c for c in ids if shard_of(c, 3) == i} for i in range(3)]
    assert sum(map(len, parts)) == 200 and set().union(*parts) == set(ids)
    assert all(40 < len(p) < 95 for p in parts)
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(DescribeError):
            parse_shard(bad)


# --- hf engine end to end ---------------------------------------------------------------------

def test_hf_end_to_end_counts_schema_resume(tmp_path):
    """Random weights: checks rows, token accounting, schema, markers and resume, not the text."""
    bad = {"clip_id": "broken", "dataset": "dfew", "status": "ok", "store_index": 99}
    skipped = {"clip_id": "noface", "dataset": "dfew", "status": "no_face", "store_index": -1}
    store = make_store(tmp_path, n=6, extra_rows=[bad, skipped])
    s = run_describe(_cfg(store), progress=False, log=lambda m: None)
    assert (s.selected, s.described, s.failed, s.skipped) == (7, 6, 1, 0)
    assert len(s.parts) == 2 and s.output_tokens > 0 and s.clips_per_s > 0
    # The test store has frames only; the description parts must raise no problem of their own.
    assert [p for p in validate_store(store) if "part-" in p] == []
    t = pq.read_table(writer.parts_dir(store))
    assert t.schema.equals(tables.DESCRIPTION, check_metadata=False) and t.num_rows == 7
    assert pq.read_schema(s.parts[0]).metadata[b"fineclip_note"].startswith(b"written by a model with random")
    rows = {r["clip_id"]: r for r in t.to_pylist()}
    assert rows["broken"]["status"] == "error" and "store_index 99" in rows["broken"]["error"]
    assert "noface" not in rows
    ok = [r for r in rows.values() if r["status"] == "ok"]
    text_tokens = ok[0]["prompt_tokens"] - 4 * TOKENS_PER_IMAGE
    assert text_tokens > 10 and all(r["prompt_tokens"] == ok[0]["prompt_tokens"] for r in ok)
    assert all(0 < r["output_tokens"] <= 8 and r["random_weights"] and r["engine"] == "hf" for r in ok)
    assert all(r["model"] == "fineclip/tiny-random-llava" and r["prompt_id"] == "facial-changes-v1" for r in ok)
    assert all(r["prompt_hash"] == fineprompts.load_instruction()[1] for r in ok)
    lex = fineprompts.load_lexicon("dfew")
    assert all(not leaks(r["refined_text"], lex) for r in ok)

    # Re-run: the six described clips are skipped; only the failed one is tried again.
    s2 = run_describe(_cfg(store), progress=False, log=lambda m: None)
    assert (s2.skipped, s2.described, s2.failed) == (6, 0, 1)
    # Same clips, another prompt: described again, kept apart by prompt hash.
    assert len(writer.done_clip_ids(store, "fineclip/tiny-random-llava", "0" * 64)) == 0
    latest = writer.load_descriptions(store)
    assert latest.num_rows == 7 and sorted(latest["clip_id"].to_pylist())[0] == "broken"


def test_no_refine_keeps_raw_text(tmp_path):
    store = make_store(tmp_path, n=2)
    s = run_describe(_cfg(store, refine=False), progress=False, log=lambda m: None)
    t = pq.read_table(s.parts[0]).to_pylist()
    assert all(r["refined_text"] == r["raw_text"] for r in t)


def test_llm_refinement_pass_then_rules(tmp_path):
    """--refine-llm: a text-only pass of the same (random) model rewrites, the rules run on its output."""
    store = make_store(tmp_path, n=2)
    prompts = []

    def recording(name, spec, settings):
        engine = make_engine(name, spec, settings)
        real = engine.complete
        engine.complete = lambda p, max_tokens: prompts.extend(p) or real(p, max_tokens)
        return engine

    s = run_describe(_cfg(store, refine_llm=True), engine_factory=recording, progress=False, log=lambda m: None)
    rows = pq.read_table(s.parts[0]).to_pylist()
    lex = fineprompts.load_lexicon("dfew")
    assert s.described == 2 and s.leak_before is not None and s.leak_after in (0.0, None)  # None: all cut
    refine_instruction = fineprompts.load_instruction("refine-v1")[0]
    assert len(prompts) == 2 and all(p.startswith(refine_instruction) for p in prompts)
    assert rows[0]["raw_text"] in prompts[0]
    assert all(r["refined_text"] is not None and not leaks(r["refined_text"], lex) for r in rows)


def test_nothing_to_do_loads_no_model(tmp_path):
    store = make_store(tmp_path, n=2)
    run_describe(_cfg(store), progress=False, log=lambda m: None)

    def no_engine(*a, **k):
        raise AssertionError("a finished job must not load a model")

    msgs = []
    s = run_describe(_cfg(store), engine_factory=no_engine, progress=False, log=msgs.append)
    assert s.skipped == 2 and "nothing to do" in msgs[0]


def test_crash_loses_only_the_chunk_in_flight(tmp_path):
    store = make_store(tmp_path, n=6)
    calls = []

    def crashing(name, spec, settings):
        engine = make_engine(name, spec, settings)
        real = engine.describe

        def describe(requests):
            calls.append(len(requests))
            if len(calls) == 2:
                raise MemoryError("the machine went away")
            return real(requests)

        engine.describe = describe
        return engine

    with pytest.raises(MemoryError):
        run_describe(_cfg(store, chunk=2), engine_factory=crashing, progress=False, log=lambda m: None)
    assert len(writer.part_files(store)) == 1
    s = run_describe(_cfg(store, chunk=2), progress=False, log=lambda m: None)
    assert (s.skipped, s.described) == (2, 4)
    ids = pq.read_table(writer.parts_dir(store))["clip_id"].to_pylist()
    assert sorted(ids) == [f"clip{i:03d}" for i in range(6)]


@pytest.mark.slow
def test_resume_after_killed_process(tmp_path):
    """SIGKILL the CLI once its first part exists; the re-run finishes the rest, nothing twice."""
    store = make_store(tmp_path, n=12)
    cmd = [str(REPO / ".venv" / "bin" / "fineprep") if (REPO / ".venv" / "bin" / "fineprep").exists()
           else sys.executable, "describe", "--store", str(store), "--model", "tiny-random", "--engine", "hf",
           "--frames", "4", "--max-tokens", "48", "--chunk", "1", "--no-progress"]
    if cmd[0] == sys.executable:
        cmd[1:1] = ["-m", "fineprep.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not writer.part_files(store) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = len(writer.part_files(store))
    assert 1 <= first < 12, "the run was not caught mid-way"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"described {12 - first}, failed 0, skipped {first} (already done)" in done.stdout
    ids = pq.read_table(writer.parts_dir(store))["clip_id"].to_pylist()
    assert sorted(ids) == [f"clip{i:03d}" for i in range(12)]


def _part_times(store: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in writer.parts_dir(store).iterdir()}


def test_parts_are_named_by_the_plan_and_a_second_run_writes_nothing(tmp_path):
    from fineprep.describe.runner import plan_describe

    store = make_store(tmp_path, n=5)
    planned = [job.part_name for job in plan_describe(_cfg(store, chunk=2), log=lambda m: None).jobs]
    s = run_describe(_cfg(store, chunk=2), progress=False, log=lambda m: None)
    assert [p.name for p in s.parts] == planned and len(set(planned)) == 3
    assert all(n.startswith("part-") and len(n) == len("part-") + 20 + len(".parquet") for n in planned)
    before = _part_times(store)

    def no_engine(*a, **k):
        raise AssertionError("a finished job must not load a model")

    again = run_describe(_cfg(store, chunk=2), engine_factory=no_engine, progress=False, log=lambda m: None)
    assert (again.skipped, again.described, again.parts) == (5, 0, []) and _part_times(store) == before


def test_a_failed_clip_is_retried_into_a_new_part(tmp_path):
    """Same clips, same settings, but an error row already there: the retry must not be taken for done."""
    bad = {"clip_id": "broken", "dataset": "dfew", "status": "ok", "store_index": 99}
    store = make_store(tmp_path, n=1, extra_rows=[bad])
    first = run_describe(_cfg(store, chunk=1), progress=False, log=lambda m: None)
    second = run_describe(_cfg(store, chunk=1), progress=False, log=lambda m: None)
    assert (first.described, first.failed, second.skipped, second.failed) == (1, 1, 1, 1)
    assert len(second.parts) == 1 and second.parts[0] not in first.parts
    assert len(writer.part_files(store)) == 3


def test_stale_temps_of_a_killed_run_are_removed(tmp_path):
    store = make_store(tmp_path, n=2)
    writer.parts_dir(store).mkdir()
    stale = writer.parts_dir(store) / ".part-0123456789abcdef0123.parquet.4242.ab12cd34.tmp"
    stale.write_bytes(b"half a parquet file")
    run_describe(_cfg(store), progress=False, log=lambda m: None)
    assert not stale.exists() and len(writer.part_files(store)) == 1


@pytest.mark.slow
def test_procs_and_local_write_the_same_parts(tmp_path):
    """`--procs 2`: two worker processes take the chunks; the parts are the ones one process writes,
    and a second run writes nothing."""
    from typer.testing import CliRunner

    from fineprep.cli import app

    local, pooled = make_store(tmp_path / "local", n=6), make_store(tmp_path / "pooled", n=6)
    run_describe(_cfg(local, frames=2, max_tokens=4, chunk=2), progress=False, log=lambda m: None)
    argv = ["describe", "--store", str(pooled), "--model", "tiny-random", "--engine", "hf", "--frames", "2",
            "--max-tokens", "4", "--chunk", "2", "--procs", "2", "--no-progress"]
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 0, r.output
    assert "2 describe processes" in r.output and "described 6, failed 0" in r.output
    assert sorted(_part_times(pooled)) == sorted(_part_times(local)) and len(_part_times(local)) == 3
    ids = pq.read_table(writer.parts_dir(pooled))["clip_id"].to_pylist()
    assert sorted(ids) == [f"clip{i:03d}" for i in range(6)]
    before = _part_times(pooled)
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 0 and "nothing to do" in r.output and _part_times(pooled) == before


def test_cli_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from fineprep.cli import app

    r = CliRunner().invoke(app, ["describe", "--store", str(tmp_path), "--model", "tiny-random", "--engine", "hf"])
    assert r.exit_code == 2 and "manifest.parquet is missing" in r.output
    r = CliRunner().invoke(app, ["describe", "--store", str(tmp_path), "--shard", "2/2"])
    assert r.exit_code == 2 and "0 <= i < N" in r.output
    store = make_store(tmp_path / "s", n=1)
    r = CliRunner().invoke(app, ["describe", "--store", str(store), "--model", "tiny-random", "--prompt", "nope"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "unknown prompt id 'nope'" in r.output
    r = CliRunner().invoke(app, ["describe", "--store", str(store), "--procs", "2", "--scheduler", "tcp://x:1"])
    assert r.exit_code == 2 and "either --procs or --scheduler" in r.output


# --- the OpenAI engine: retries and per-clip failure isolation --------------------------------

class _Endpoint(BaseHTTPRequestHandler):
    """A scripted OpenAI-compatible endpoint: replies in order from `script` (status codes)."""

    script: list[int] = []
    seen: list[dict] = []

    def log_message(self, *a):
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "served", "object": "model", "created": 0,
                                                      "owned_by": "x"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).seen.append(body)
        code = type(self).script.pop(0) if type(self).script else 200
        if code != 200:
            self._send(code, {"error": {"message": f"scripted {code}", "type": "x", "code": code}})
            return
        n = len(type(self).seen)
        self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "served",
                         "choices": [{"index": 0, "finish_reason": "length",
                                      "message": {"role": "assistant", "content": f" reply {n}"}}],
                         "usage": {"prompt_tokens": 70, "completion_tokens": 3, "total_tokens": 73}})


def test_openai_engine_retries_and_isolates_failures(tmp_path):
    # One request at a time, so replies map to clips in order: clip000 gets a 503 then succeeds on
    # retry; clip001 gets a 400 (not retried) and fails alone; the rest succeed.
    _Endpoint.script, _Endpoint.seen = [503, 200, 400], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        store = make_store(tmp_path, n=4)
        opts = {"endpoint": f"http://127.0.0.1:{server.server_port}/v1", "concurrency": 1, "retries": 2}
        s = run_describe(_cfg(store, engine="openai", options=opts), progress=False, log=lambda m: None)
    finally:
        server.shutdown()
    rows = {r["clip_id"]: r for r in pq.read_table(writer.parts_dir(store)).to_pylist()}
    assert (s.described, s.failed) == (3, 1)
    assert rows["clip001"]["status"] == "error" and "400" in rows["clip001"]["error"]
    assert rows["clip000"]["raw_text"] == "reply 2" and rows["clip000"]["output_tokens"] == 3
    assert len(_Endpoint.seen) == 5
    first = _Endpoint.seen[0]
    assert first["model"] == "served" and first["temperature"] == 0
    parts = first["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 4 + ["text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_openai_engine_unreachable_is_one_line(tmp_path):
    store = make_store(tmp_path, n=1)
    opts = {"endpoint": "http://127.0.0.1:9/v1", "retries": 0, "timeout": 2}
    with pytest.raises(DescribeError, match="cannot list models at http://127.0.0.1:9/v1"):
        run_describe(_cfg(store, engine="openai", options=opts), progress=False, log=lambda m: None)


def test_settings_default_greedy():
    s = GenerationSettings()
    assert s.temperature == 0.0 and s.max_tokens == 160
