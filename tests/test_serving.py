"""Serving (issue 6): ``PromptRuntime`` mixed batches over registered versions, per-request errors, the LRU
version cache, alias re-resolution with bounded staleness, the HTTP server (real uvicorn on loopback) with
cross-client batching, /healthz, /metrics, and the generate / classify commands.

Reference semantics: each version run ALONE through the loader path (``load_soft_prompt(...).classify`` /
``.generate``, as eval and gate do). Tiny random Llama (tests/fixtures/models.py), float32."""

from __future__ import annotations

import functools
import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from promptreg import Registry
from promptreg.artifact.builder import write_artifact
from promptreg.runtime.service import PromptRuntime
from tests.fixtures.services import free_port
from tests.helpers import TEMPLATE

ATOL = 1e-5
TEXTS = ["the movie was great", "bad", "a very long and really boring film with dull acting and poor writing",
         "fun plot , i laughed", "not worth it"]
# prompt name -> (method, config); each a separate prompt so alias moves never interfere
METHODS = {
    "pt": ("prompt_tuning", {"num_virtual_tokens": 3, "init": "random"}),
    "pp": ("p_tuning", {"num_virtual_tokens": 4, "encoder": "mlp", "encoder_hidden": 16}),
    "px": ("prefix_tuning", {"num_virtual_tokens": 5, "projection": False, "init": "random"}),
    "id": ("id_spam", {"num_virtual_tokens": 2, "bottleneck": 8, "heads": 2}),
    "ia": ("iapt", {"num_virtual_tokens": 2, "bottleneck": 8, "activation": "silu"}),
}
VERBALIZER = {"positive": [" positive"], "negative": [" negative"]}


@functools.lru_cache(maxsize=1)
def _model(model_dir: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), AutoTokenizer.from_pretrained(model_dir)


def _artifact(dest: Path, model_dir: Path, method: str, config: dict, *, seed: int, task: str = "classification",
              fingerprint: str | None = None) -> Path:
    """A version of ``method`` for the tiny model, with random weights (randn * 0.5: outputs move)."""
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.softprompt.methods import ModelDims, build_method

    base, tok = _model(str(model_dir))
    sp = build_method(method, config, ModelDims.from_config(base.config),
                      embedding_weight=base.get_input_embeddings().weight.detach(), tokenizer=tok, seed=seed)
    gen = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in sp.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    info = model_fingerprint(model_dir).to_dict()
    info["name_or_path"] = str(model_dir)
    if fingerprint:
        info["fingerprint"] = fingerprint
    task_doc = {"type": task, "template": TEMPLATE}
    if task == "classification":
        task_doc["verbalizer"] = VERBALIZER
    return write_artifact(dest, method=method, tensors=sp.export_tensors(), base_model=info,
                          num_virtual_tokens=sp.num_virtual_tokens, task=task_doc,
                          method_config=sp.method_config(), created_by="tests")


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    """pt/pp/px/id/ia: one prompt per method (pt has 3 versions); gen: a generation prompt; other: a version
    trained on another base model (same shapes, other fingerprint)."""
    root = tmp_path_factory.mktemp("serving")
    reg = Registry(home=str(root / ".promptreg"), tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    seed = 0
    for name, (method, config) in METHODS.items():
        for _ in range(3 if name == "pt" else 1):
            seed += 1
            reg.push(_artifact(root / f"a{seed}", tiny_model_dir, method, config, seed=seed), name)
    reg.push(_artifact(root / "gen", tiny_model_dir, "prompt_tuning", {"num_virtual_tokens": 2}, seed=50,
                       task="generation"), "gen")
    reg.push(_artifact(root / "other", tiny_model_dir, "prompt_tuning", {"num_virtual_tokens": 2}, seed=51,
                       fingerprint="f" * 64), "other")
    return {"reg": reg, "root": root, "model": tiny_model_dir}


@pytest.fixture(scope="module")
def runtime(project):
    return PromptRuntime(project["reg"], project["model"], device="cpu")


def _alone(runtime, ref: str):
    """The version run alone through the loader path (as eval/gate load it)."""
    from promptreg.artifact.manifest import MANIFEST_FILE
    from promptreg.runtime.loader import load_soft_prompt

    info, folder = runtime.registry.fetch_verified(ref)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    return load_soft_prompt(folder, manifest, runtime.base(), label=ref, sha256=info.sha256)


def _one_line(result: dict) -> str:
    assert set(result) - {"request_id"} == {"ref", "error", "error_type"}, result   # HTTP answers carry an id
    assert result["error"] and "\n" not in result["error"] and "Traceback" not in result["error"]
    return result["error"]


# ----- runtime --------------------------------------------------------------------------------------------
def test_mixed_classify_equals_each_version_alone_and_bad_requests_fail_alone(runtime):
    refs = ["pt:1", "pp:1", "px:1", "id:1", "ia:1", "pt:2", "pt:3"]
    requests = [{"ref": refs[i % len(refs)], "text": TEXTS[i % len(TEXTS)]} for i in range(12)]
    bad = [{"ref": "other:1", "text": "great"},                 # trained on another base model
           {"ref": "nope:1", "text": "great"},                  # unknown prompt
           {"ref": "gen:1", "text": "great"},                   # a generation prompt asked to classify
           {"ref": "pt@production", "text": "great"},           # no such alias
           {"ref": "Bad Name!", "text": "great"},               # malformed reference
           {"ref": "pt:1", "text": 3}]                          # malformed request
    mixed = requests[:5] + bad + requests[5:]
    before = runtime.stats()
    results = runtime.classify(mixed)
    after = runtime.stats()
    assert after["batches"] - before["batches"] == 1                      # ONE batched forward
    assert after["batch_rows"] - before["batch_rows"] == len(requests)
    good = results[:5] + results[5 + len(bad):]
    errors = results[5:5 + len(bad)]
    for req, res in zip(requests, good, strict=True):
        alone = _alone(runtime, req["ref"])
        want = alone.classify([req["text"]])[0]
        assert res["ref"] == req["ref"] and f"{res['name']}:{res['version']}" == req["ref"]
        assert res["sha256"] == alone.sha256 and sorted(res["probs"]) == sorted(alone.labels) == ["negative", "positive"]
        got = [res["probs"][lab] for lab in alone.labels]
        assert max(abs(g - w) for g, w in zip(got, want, strict=True)) < ATOL, (req, got, want)
        assert res["label"] == alone.labels[int(want.argmax())]
    # the versions do disagree somewhere (the comparison is not vacuous)
    assert len({round(r["probs"]["positive"], 4) for r in good}) > 3
    msgs = [_one_line(e) for e in errors]
    assert errors[0]["error_type"] == "IntegrityError" and "other:1 was trained on base model ffffffffffff" in msgs[0]
    assert errors[1]["error_type"] == "NotFoundError" and "nope" in msgs[1]
    assert errors[2]["error_type"] == "InputError" and "gen:1 is a generation prompt" in msgs[2]
    assert errors[3]["error_type"] == "NotFoundError" and "production" in msgs[3]
    assert errors[4]["error_type"] == "InputError" and "invalid prompt name" in msgs[4]
    assert errors[5]["error_type"] == "InputError" and "'text' must be a string" in msgs[5]


def test_mixed_generate_equals_each_version_alone(runtime):
    requests = [{"ref": ref, "text": text, "max_new_tokens": n} for ref, text, n in
                [("pt:1", TEXTS[0], 6), ("px:1", TEXTS[1], 3), ("pp:1", TEXTS[2], 6), ("id:1", TEXTS[3], 4),
                 ("ia:1", TEXTS[1], 4), ("gen:1", TEXTS[4], 5), ("other:1", TEXTS[0], 5), ("pt:2", TEXTS[2], 0)]]
    results = runtime.generate(requests)
    assert "trained on base model" in _one_line(results[6])
    for req, res in zip(requests, results, strict=True):
        if req["ref"] == "other:1":
            continue
        want = _alone(runtime, req["ref"]).generate([req["text"]], max_new_tokens=req["max_new_tokens"])[0]
        assert res["text"] == want and res["tokens"] <= req["max_new_tokens"], (req, res, want)
    assert results[-1]["text"] == "" and results[-1]["tokens"] == 0


def test_tampered_artifact_fails_alone(project, tiny_model_dir):
    reg = project["reg"]
    info = reg.show("pt:3")
    rt = PromptRuntime(reg, tiny_model_dir, device="cpu")
    cache = reg.settings.home / "cache" / info.sha256
    reg.fetch_verified("pt:3")
    target = cache / "soft_prompt.safetensors"
    original = target.read_bytes()
    try:
        target.write_bytes(original[:-4] + b"\0\0\0\0")
        results = rt.classify([{"ref": "pt:3", "text": "good"}, {"ref": "pt:1", "text": "good"}])
    finally:
        target.write_bytes(original)
    assert results[0]["error_type"] == "IntegrityError" and "sha256 mismatch" in _one_line(results[0])
    assert "probs" in results[1]


def test_lru_eviction_by_count_and_by_bytes(project, tiny_model_dir):
    reg = project["reg"]
    rt = PromptRuntime(reg, tiny_model_dir, device="cpu", max_versions=2)
    for ref in ("pt:1", "pt:2", "pt:1", "pt:3"):  # pt:1 used again: pt:2 is the least recently used
        assert "probs" in rt.classify([{"ref": ref, "text": "good"}])[0]
    s = rt.stats()
    assert rt.cached_versions() == ["pt:1", "pt:3"]
    assert (s["cache_hits"], s["cache_misses"], s["cache_evictions"], s["loaded_versions"]) == (1, 3, 1, 2)
    # by bytes: each prompt_tuning version holds 3 x 64 float32 = 768 bytes
    rt = PromptRuntime(reg, tiny_model_dir, device="cpu", max_bytes=2 * 768 + 10)
    rt.classify([{"ref": r, "text": "good"} for r in ("pt:1", "pt:2", "pt:1")])
    s = rt.stats()
    assert (s["loaded_bytes"], s["cache_misses"], s["cache_hits"], s["cache_evictions"]) == (2 * 768, 2, 1, 0)
    rt.classify([{"ref": "pt:3", "text": "good"}])
    assert rt.cached_versions() == ["pt:1", "pt:3"] and rt.stats()["cache_evictions"] == 1  # pt:2 was LRU
    # a call whose versions do not all fit: all answered, each built at most once per call, cache in bounds
    res = rt.classify([{"ref": r, "text": "good"} for r in ("pt:1", "pt:2", "pt:3", "pt:1")])
    assert all("probs" in r for r in res) and res[0]["probs"] == res[3]["probs"]
    s = rt.stats()  # pt:1 hit; pt:2 miss (evicts pt:3); pt:3 miss (evicts pt:1); pt:1 reused from the call
    assert (s["cache_misses"], s["cache_hits"], s["cache_evictions"]) == (5, 3, 3)
    assert s["loaded_bytes"] == 2 * 768 and rt.cached_versions() == ["pt:2", "pt:3"]
    # a version larger than the whole budget still answers, it just is not kept
    rt = PromptRuntime(reg, tiny_model_dir, device="cpu", max_bytes=100)
    assert "probs" in rt.classify([{"ref": "pt:1", "text": "good"}])[0]
    assert rt.cached_versions() == [] and rt.stats()["cache_evictions"] == 1


def test_alias_reresolution_after_promote_within_ttl(project, tiny_model_dir):
    from promptreg.services.lifecycle import promote, rollback

    reg = project["reg"]
    now = [1000.0]
    rt = PromptRuntime(reg, tiny_model_dir, device="cpu", alias_ttl_s=2.0)
    rt.clock = lambda: now[0]
    promote(reg, "pt:1", to="staging")
    req = [{"ref": "pt@staging", "text": "good"}, {"ref": "pt:2", "text": "good"}]
    assert rt.classify(req)[0]["version"] == 1
    promote(reg, "pt:2", to="staging")
    now[0] += 1.0
    assert rt.classify(req)[0]["version"] == 1   # still within the TTL: bounded staleness
    now[0] += 1.5
    res = rt.classify(req)
    assert res[0]["version"] == 2                 # re-resolved: no restart needed
    assert res[0]["probs"] == res[1]["probs"]     # same version, same row
    rollback(reg, "pt", "staging")
    now[0] += 2.5
    assert rt.classify(req)[0]["version"] == 1
    # NAME:VERSION never changes: resolved once
    lookups = rt.stats()["alias_lookups"]
    now[0] += 100
    rt.classify([{"ref": "pt:2", "text": "good"}])
    assert rt.stats()["alias_lookups"] == lookups


# ----- HTTP server -----------------------------------------------------------------------------------------
class _Server:
    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive()

    def call(self, path: str, body=None):
        url = f"http://127.0.0.1:{self.port}{path}"
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.headers.get("Content-Type"), resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Content-Type"), err.read().decode()


def _metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    (value,) = re.findall(pattern, text, flags=re.M)
    return float(value)


def test_http_server_batches_concurrent_clients_across_versions(project, runtime):
    from promptreg.runtime.server import create_app

    jobs = [(ref, text) for ref in ("pt:1", "pp:1", "px:1", "id:1", "pt:2", "pt:3") for text in TEXTS[:2]]
    expected = runtime.classify([{"ref": r, "text": t} for r, t in jobs])
    app = create_app(runtime, max_batch=64, max_wait_ms=300)
    answers: dict[int, tuple] = {}
    with _Server(app) as srv:
        code, _, body = srv.call("/healthz")
        assert code == 200 and json.loads(body)["base_model_fingerprint"] == runtime.fingerprint
        barrier = threading.Barrier(len(jobs))

        def client(i: int) -> None:
            barrier.wait()
            answers[i] = srv.call("/v1/classify", {"ref": jobs[i][0], "text": jobs[i][1]})

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for i, want in enumerate(expected):
            code, _, body = answers[i]
            got = json.loads(body)
            assert code == 200 and got["version"] == want["version"] and got["name"] == want["name"]
            assert max(abs(got["probs"][k] - want["probs"][k]) for k in want["probs"]) < ATOL
        # a list of requests, one of them bad: 200 with a per-request error
        code, _, body = srv.call("/v1/generate", {"requests": [{"ref": "pt:1", "text": "good", "max_new_tokens": 2},
                                                               {"ref": "other:1", "text": "good"},
                                                               {"ref": "pt:1", "max_new_tokens": 2}]})
        results = json.loads(body)["results"]
        assert code == 200 and "text" in results[0] and "trained on base model" in _one_line(results[1])
        assert results[2]["error_type"] == "InputError" and "needs 'ref'" in _one_line(results[2])
        # a single bad request: its own status and one line
        code, _, body = srv.call("/v1/classify", {"ref": "nope@production", "text": "x"})
        assert code == 404 and "nope" in _one_line(json.loads(body))
        code, _, body = srv.call("/v1/classify", b"{not json")
        assert code == 400 and "\n" not in json.loads(body)["error"]
        code, _, body = srv.call("/v1/classify", {"requests": []})
        assert code == 400
        code, ctype, text = srv.call("/metrics")
    assert code == 200 and ctype.startswith("text/plain") and "version=0.0.4" in ctype
    assert _metric(text, "promptreg_batch_size_max") > 1                # concurrent clients shared a batch
    assert _metric(text, "promptreg_batch_size_count", endpoint="classify") < len(jobs) + 1
    assert _metric(text, "promptreg_requests_total", endpoint="classify", status="ok") == len(jobs)
    assert _metric(text, "promptreg_requests_total", endpoint="generate", status="error") == 2
    assert _metric(text, "promptreg_http_requests_total", endpoint="classify", code="404") == 1
    assert _metric(text, "promptreg_request_latency_seconds_count", endpoint="classify") == len(jobs) + 1
    assert _metric(text, "promptreg_loaded_versions") >= 6 and _metric(text, "promptreg_base_model_loaded") == 1
    assert _metric(text, "promptreg_cache_hits_total") > 0
    # every sample belongs to a family declared with # HELP / # TYPE, and parses as a number
    declared = set(re.findall(r"^# TYPE (\S+) (?:counter|gauge|histogram|summary)$", text, flags=re.M))
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = re.fullmatch(r'([a-z_]+)(?:\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})? (\S+)', line).groups()
            float(value)
            assert name in declared or re.sub(r"_(bucket|sum|count)$", "", name) in declared, line
    assert _metric(text, "promptreg_batch_size_bucket", endpoint="classify", le="+Inf") == _metric(
        text, "promptreg_batch_size_count", endpoint="classify")


# ----- CLI -------------------------------------------------------------------------------------------------
@pytest.fixture
def cli_main(project, monkeypatch):
    """``promptreg.cli.main.main`` with the serving commands added (the lead registers them for good)."""
    from promptreg.cli.main import cli, main
    from promptreg.cli.serve_cmds import classify_cmd, generate_cmd, serve_cmd

    added = [c for c in (generate_cmd, classify_cmd, serve_cmd) if c.name not in cli.commands]
    for c in added:
        cli.add_command(c)
    monkeypatch.delenv("PROMPTREG_BASE_MODEL", raising=False)
    home = ["--home", str(project["reg"].settings.home), "--tracking-uri", project["reg"].settings.tracking_uri]

    def run(*args):
        with pytest.raises(SystemExit) as exc:
            main([*home, *map(str, args)])
        return exc.value.code

    yield run
    for c in added:
        cli.commands.pop(c.name, None)


def test_cli_generate_and_classify(cli_main, runtime, capsys):
    assert cli_main("classify", "px:1", TEXTS[0], TEXTS[1], "--json") == 0
    got = json.loads(capsys.readouterr().out)
    want = runtime.classify([{"ref": "px:1", "text": t} for t in TEXTS[:2]])
    assert [g["input"] for g in got] == TEXTS[:2]
    for g, w in zip(got, want, strict=True):
        assert g["label"] == w["label"] and abs(g["probs"]["positive"] - w["probs"]["positive"]) < ATOL
    # no --model: the folder recorded in the version's manifest
    assert cli_main("classify", "pt:1", TEXTS[0]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pt:1  sha256 ") and "positive" in out and "negative" in out
    assert cli_main("generate", "pp:1", TEXTS[2], "--max-new-tokens", "4", "--model", runtime.base().folder) == 0
    want = runtime.generate([{"ref": "pp:1", "text": TEXTS[2], "max_new_tokens": 4}])[0]["text"]
    assert capsys.readouterr().out == want + "\n"
    # a refused version: one line on stderr, exit 2
    assert cli_main("classify", "other:1", "good") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: other:1 was trained on base model")
    assert cli_main("generate", "pt@nothing", "good") == 2
    assert capsys.readouterr().err.strip() == "error: pt has no alias 'nothing'"
    assert cli_main("serve", "--port", "1") == 2       # no base model configured
    assert "serve needs a base model" in capsys.readouterr().err


def test_serve_command_answers_and_stops_on_sigterm(project, tmp_path):
    """`promptreg serve` as a real process: healthz, one request, then SIGTERM -> graceful exit 0. Every
    route but /healthz needs a registry API token: none or a wrong one is 401, a token whose prompts do
    not include the version's is 403, a viewer may not send feedback."""
    import os
    import signal
    import subprocess
    import sys

    from promptreg.server.tokens import TokenStore

    tokens = TokenStore(project["reg"].engine)
    good = tokens.create("svc-reader", "viewer", actor="test").token
    other = tokens.create("team-b", "viewer", prompts=["team-b.*"], actor="test").token
    port = free_port()
    code = ("import sys; from promptreg.cli.main import cli, main; from promptreg.cli.serve_cmds import serve_cmd; "
            "cli.add_command(serve_cmd); main(sys.argv[1:])")
    settings = project["reg"].settings
    proc = subprocess.Popen([sys.executable, "-c", code, "--home", str(settings.home), "--tracking-uri",
                             settings.tracking_uri, "serve", "--port", str(port), "--model", str(project["model"]),
                             "--device", "cpu", "--max-wait-ms", "5"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                    health = json.loads(resp.read())
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.2)
        assert health["status"] == "ok" and len(health["base_model_fingerprint"]) == 64

        def call(path, body, token=None):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers,
                                         data=json.dumps(body).encode() if body is not None else None)
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        one = {"ref": "px:1", "text": "great"}
        assert call("/v1/classify", one)[0] == 401
        code, body = call("/v1/classify", one, good[:-3] + "xyz")
        assert code == 401 and "Traceback" not in body.decode()
        code, body = call("/v1/classify", one, other)
        assert code == 403 and "may not use px" in json.loads(body)["error"]
        assert call("/metrics", None)[0] == 401 and call("/metrics", None, good)[0] == 200
        code, body = call("/feedback", {"request_id": "0" * 32, "label": "positive"}, good)
        assert code == 403 and "needs contributor" in json.loads(body)["error"]
        code, body = call("/v1/classify", one, good)
        assert code == 200 and json.loads(body)["version"] == 1
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"on http://127.0.0.1:{port}" in err and "Traceback" not in err
