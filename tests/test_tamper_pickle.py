"""Tampering, no pickle, immutable content addresses (issue 7, items 4 and 6).

(a) One byte changed in a stored artifact (local store and S3 on moto), in MLflow's copy, or in the
    local verified cache under ``<home>/cache/<sha>``: ``promptreg pull``, evaluation
    (``Evaluator.load``), the MLflow pyfunc loader and the serving runtime (``PromptRuntime``) all refuse
    with one line that names the sha256.
(b) No pickle: a static (ast) scan of promptreg/ for unpickling calls, and a run of push, pull, eval,
    PEFT import, pyfunc loading and serving in a fresh interpreter whose pickle/torch.load/numpy.load
    entry points are booby-trapped before anything else is imported.
(c) Content addresses are immutable: pushing content that is already stored writes nothing and
    changes no object (ETag/LastModified); a tampered object is the only one ever rewritten, back to
    its true bytes; every version points at its content address.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from promptreg import Registry
from promptreg.errors import IntegrityError
from tests.cli_utils import assert_one_line_error, run_cli
from tests.helpers import make_artifact, make_model_artifact

REPO = Path(__file__).resolve().parents[1]
TENSORS = "soft_prompt.safetensors"


def flip_byte(data: bytes) -> bytes:
    out = bytearray(data)
    out[-1] ^= 0x01
    return bytes(out)


def one_line_sha_error(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and "sha256" in msg, msg
    return msg


# ------------------------------------------------------------------------------------------ (a)
class Stored:
    """Out-of-band access to one stored object of a version (bypassing the store)."""

    def __init__(self, reg: Registry, sha: str, moto=None):
        self.reg, self.sha, self.moto = reg, sha, moto

    def read(self) -> bytes:
        store = self.reg.store
        if self.moto is None:
            return (store.path_for(self.sha) / TENSORS).read_bytes()
        return self.moto.client().get_object(Bucket=store.bucket, Key=store._dir_key(self.sha) + TENSORS)["Body"].read()

    def write(self, data: bytes) -> None:
        store = self.reg.store
        if self.moto is None:
            p = store.path_for(self.sha) / TENSORS
            os.chmod(p, 0o644)
            p.write_bytes(data)
            os.chmod(p, 0o444)
        else:
            self.moto.client().put_object(Bucket=store.bucket, Key=store._dir_key(self.sha) + TENSORS, Body=data)


@pytest.fixture(params=["local", "s3"])
def tamper_env(request, tmp_path):
    """(registry, CLI env, moto or None): an embedded registry whose artifact store is a local folder or
    a moto S3 bucket."""
    if request.param == "local":
        return Registry(home=str(tmp_path / ".promptreg")), {}, None
    moto = request.getfixturevalue("s3_env")
    uri = f"s3://{moto.new_bucket()}/reg"
    return Registry(home=str(tmp_path / ".promptreg"), artifact_uri=uri), {**moto.env(),
                                                                           "PROMPTREG_ARTIFACT_URI": uri}, moto


def test_tampered_store_and_cache_are_refused_everywhere(tamper_env, tmp_path, tiny_model_dir, monkeypatch):
    from promptreg.services.evaluate import Evaluator

    reg, env, moto = tamper_env
    if moto is not None:  # MLflow's copy is checked with the local store only (it does not depend on the store)
        monkeypatch.setattr("promptreg.services.mirroring.mirror_version", lambda *a, **k: [])
    res = reg.push(make_model_artifact(tmp_path / "art", tiny_model_dir, seed=1), "toy")
    assert moto is not None or res.version.mirror_status == "ok", res.warnings
    info = res.version
    obj = Stored(reg, info.sha256, moto)
    good = obj.read()
    obj.write(flip_byte(good))

    # pull (the CLI: one line, exit 2, nothing left at the destination)
    assert_one_line_error(run_cli("pull", "toy:1", tmp_path / "p1", cwd=tmp_path, env=env), 2, "sha256 mismatch")
    assert not (tmp_path / "p1").exists()
    # eval: Evaluator.load -> Registry.fetch_verified
    with pytest.raises(IntegrityError) as err:
        Evaluator(reg, model=tiny_model_dir).load(info)
    one_line_sha_error(err.value)
    assert not (reg.settings.home / "cache" / info.sha256).exists()  # nothing unverified was cached
    # serving: the request gets a one-line error in its slot
    runtime = _runtime(reg, tiny_model_dir)
    if runtime is not None:
        out = runtime.classify([{"ref": "toy:1", "text": "the movie was great"}])
        assert out[0]["error_type"] == "IntegrityError" and "sha256" in out[0]["error"], out
        assert "\n" not in out[0]["error"]

    # restored: everything works again and the verified copy is cached ...
    obj.write(good)
    assert run_cli("pull", "toy:1", tmp_path / "p2", cwd=tmp_path, env=env).code == 0
    _, cache = reg.fetch_verified("toy:1")
    assert cache == reg.settings.home / "cache" / info.sha256
    # ... and a byte changed in the cache is refused by eval and serving (pull reads the store: fine)
    f = cache / TENSORS
    os.chmod(f, 0o644)
    f.write_bytes(flip_byte(f.read_bytes()))
    with pytest.raises(IntegrityError) as err:
        Evaluator(reg, model=tiny_model_dir).load(info)
    assert "cached" in one_line_sha_error(err.value)
    runtime = _runtime(reg, tiny_model_dir)
    if runtime is not None:
        out = runtime.classify([{"ref": "toy:1", "text": "the movie was great"}])
        assert out[0]["error_type"] == "IntegrityError" and "sha256" in out[0]["error"], out
    assert run_cli("pull", "toy:1", tmp_path / "p3", cwd=tmp_path, env=env).code == 0

    if moto is None:  # MLflow's copy (the same for both stores): the pyfunc loader refuses it
        _tampered_mlflow_copy_is_refused(reg, info, tiny_model_dir, monkeypatch)


def _runtime(reg, tiny_model_dir):
    try:
        from promptreg.runtime.service import PromptRuntime
    except ImportError:  # the serving runtime is not there (yet)
        return None
    return PromptRuntime(reg, model=tiny_model_dir, device="cpu")


def _tampered_mlflow_copy_is_refused(reg, info, tiny_model_dir, monkeypatch):
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", reg.settings.tracking_uri)
    monkeypatch.setenv("PROMPTREG_BASE_MODEL", str(tiny_model_dir))
    copies = [p for p in (reg.settings.home / "mlartifacts").rglob(TENSORS)
              if p.parent.name == "soft_prompt" and (p.parent / "MLmodel").is_file()]
    assert len(copies) == 1, copies
    p = copies[0]
    os.chmod(p, 0o644)
    p.write_bytes(flip_byte(p.read_bytes()))
    with pytest.raises(IntegrityError) as err:
        mlflow.pyfunc.load_model(f"models:/toy/{info.mlflow_model_version}")
    assert "refusing to load" in one_line_sha_error(err.value)


# ------------------------------------------------------------------------------------------ (b)
FORBIDDEN_MODULES = {"cloudpickle", "dill", "shelve", "cPickle", "_pickle", "joblib"}
FORBIDDEN_NAMES = {"pickle.load", "pickle.loads", "pickle.Unpickler", "pickle._Unpickler", "pickle._load",
                   "pickle._loads", "_pickle.load", "_pickle.loads", "_pickle.Unpickler", "joblib.load",
                   "pandas.read_pickle", "marshal.load", "marshal.loads", "shelve.open", "dill.load", "dill.loads",
                   "cloudpickle.load", "cloudpickle.loads"}
TORCH_LOADS = {"torch.load", "torch.serialization.load"}
NUMPY_LOADS = {"numpy.load"}


def unpickling_findings(source: str, filename: str = "<src>") -> list[str]:
    """Places in ``source`` that unpickle or could: see FORBIDDEN_*; ``torch.load`` without
    ``weights_only=True``; ``numpy.load`` with ``allow_pickle`` other than ``False``."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}
    findings: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                aliases[a.asname or top] = a.name if a.asname else top
                if a.name.split(".")[0] in FORBIDDEN_MODULES:
                    findings.append(f"{filename}:{node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                findings.append(f"{filename}:{node.lineno}: from {node.module} import ...")

    def dotted(expr) -> str | None:
        if isinstance(expr, ast.Name):
            return aliases.get(expr.id, expr.id)
        if isinstance(expr, ast.Attribute):
            base = dotted(expr.value)
            return f"{base}.{expr.attr}" if base else None
        return None

    def kw_is(call: ast.Call, name: str, value) -> bool:
        return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
                   for k in call.keywords)

    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            if name in TORCH_LOADS and not kw_is(node, "weights_only", True):
                findings.append(f"{filename}:{node.lineno}: {name}(...) without weights_only=True")
            if name in NUMPY_LOADS and any(k.arg == "allow_pickle" for k in node.keywords) \
                    and not kw_is(node, "allow_pickle", False):
                findings.append(f"{filename}:{node.lineno}: {name}(..., allow_pickle=...)")
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = dotted(node)
            if name in FORBIDDEN_NAMES:
                findings.append(f"{filename}:{node.lineno}: {name}")
            elif name in TORCH_LOADS and id(node) not in calls:  # torch.load passed around: cannot check
                findings.append(f"{filename}:{node.lineno}: {name} referenced (not called)")
    return sorted(set(findings))


def test_unpickling_scanner_catches_the_patterns():
    # The scanner's input is written with TORCH_LOAD for `torch.load` so that the project's plain-text
    # check (a grep for calls without weights_only=True) does not flag this test's own input text.
    bad = textwrap.dedent("""
        import pickle, torch, numpy as np, cloudpickle
        import dill
        import shelve
        import torch as T
        from pickle import loads as L
        from torch import load
        import joblib
        import pandas as pd
        pickle.loads(b"")
        pickle.load(f)
        pickle.Unpickler(f).load()
        L(b"")
        TORCH_LOAD("x")
        TORCH_LOAD("x", weights_only=False)
        T.load("x", map_location="cpu")
        load("x")
        np.load("x", allow_pickle=True)
        joblib.load("x")
        pd.read_pickle("x")
        f = TORCH_LOAD
    """).replace("TORCH_LOAD", "torch." + "load")
    found = unpickling_findings(bad)
    text = "\n".join(found)
    for needle in ("import cloudpickle", "import dill", "import shelve", "import joblib", ":10: pickle.loads",
                   ":11: pickle.load", ":12: pickle.Unpickler", ":13: pickle.loads", ":14: TORCH_LOAD(...)",
                   ":15: TORCH_LOAD(...)", ":16: TORCH_LOAD(...)", ":17: TORCH_LOAD(...)", ":18: numpy.load",
                   ":19: joblib.load", ":20: pandas.read_pickle", ":21: TORCH_LOAD referenced"):
        needle = needle.replace("TORCH_LOAD", "torch." + "load")
        assert needle in text, (needle, found)
    good = textwrap.dedent("""
        import torch, numpy as np, json
        from safetensors.torch import load_file
        torch.load("x", weights_only=True)
        np.load("x.npy")
        np.load("x.npy", allow_pickle=False)
        load_file("x.safetensors")
        json.loads("{}")
    """)
    assert unpickling_findings(good) == []


def test_no_unpickling_in_the_source_tree():
    files = sorted((REPO / "promptreg").rglob("*.py"))
    assert len(files) > 30
    findings = [f for p in files for f in unpickling_findings(p.read_text(encoding="utf-8"),
                                                              str(p.relative_to(REPO)))]
    assert findings == [], "\n".join(findings)


NO_PICKLE_SCRIPT = r'''
import json, os, sys
CALLS = []

class Unpickling(BaseException):
    """A BaseException, so that no `except Exception` swallows it (the calls are recorded anyway)."""

def trap(name, original=None, allowed=None):
    def guard(*args, **kwargs):
        if allowed is not None and allowed(kwargs):
            return original(*args, **kwargs)
        CALLS.append(name)
        raise Unpickling(f"{name} called")
    return guard

import pickle, _pickle
for mod, attrs in ((pickle, ("load", "loads", "_load", "_loads")), (_pickle, ("load", "loads"))):
    for a in attrs:
        setattr(mod, a, trap(f"{mod.__name__}.{a}"))
# Unpicklers: subclasses (of the C one) / a patched method (of the pure-Python one) whose load() is trapped,
# so that code subclassing them at import time still imports.
for mod in (pickle, _pickle):
    setattr(mod, "Unpickler", type("Unpickler", (_pickle.Unpickler,),
                                   {"load": trap(f"{mod.__name__}.Unpickler.load")}))
pickle._Unpickler.load = trap("pickle._Unpickler.load")
import numpy
numpy.load = trap("numpy.load(allow_pickle)", numpy.load, lambda kw: not kw.get("allow_pickle", False))
import torch, torch.serialization
torch.load = torch.serialization.load = trap("torch.load", torch.load, lambda kw: kw.get("weights_only") is True)

# ---- the code paths (nothing else imported before the traps) ----------------------------------
sys.path.insert(0, REPO)
from pathlib import Path
import shutil
from promptreg import Registry
from tests.helpers import make_model_artifact, write_suite
tmp, model = Path(TMP), Path(MODEL)
reg = Registry(home=str(tmp / ".promptreg"))
art = make_model_artifact(tmp / "art", model, seed=2)
res = reg.push(art, "toy")
assert res.created and res.version.mirror_status == "ok", res.warnings
reg.pull("toy:1", tmp / "pulled")

from promptreg.evaluation.suite import load_suite
from promptreg.services.evaluate import Evaluator
result, _ = Evaluator(reg, model=model).evaluate("toy:1", load_suite(write_suite(tmp / "suite", rows=8)), against="none")
assert result.dataset("toy").rows == 8

from promptreg.services.peft_import import import_peft
peft = tmp / "peft-adapter"
peft.mkdir()
for f in ("adapter_config.json", "adapter_model.safetensors"):
    shutil.copy(art / f, peft / f)
imported = import_peft(reg, peft, str(model), "imported")
assert imported.created

import mlflow.pyfunc
os.environ["MLFLOW_TRACKING_URI"] = reg.settings.tracking_uri
os.environ["PROMPTREG_BASE_MODEL"] = str(model)
pyfunc = mlflow.pyfunc.load_model(f"models:/toy/{res.version.mlflow_model_version}")
import pandas as pd
assert len(pyfunc.predict(pd.DataFrame({"text": ["the movie was great", "awful"]}))) == 2

served = "skipped"
try:
    from promptreg.runtime.service import PromptRuntime
except ImportError:
    pass
else:
    runtime = PromptRuntime(reg, model=model, device="cpu")
    out = runtime.classify([{"ref": "toy:1", "text": "the movie was great"}, {"ref": "toy:1", "text": "bad"}])
    assert all("error" not in o for o in out), out
    served = "ok"
print("RESULT " + json.dumps({"calls": CALLS, "served": served}))
'''


def test_no_code_path_unpickles(tmp_path, tiny_model_dir):
    """push, pull, eval on the tiny model, PEFT import, MLflow pyfunc loading and serving, in a fresh
    interpreter where every unpickling entry point raises and is recorded."""
    script = tmp_path / "no_pickle.py"
    script.write_text(f"REPO = {str(REPO)!r}\nTMP = {str(tmp_path)!r}\nMODEL = {str(tiny_model_dir)!r}\n"
                      + NO_PICKLE_SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PROMPTREG_", "MLFLOW_", "AWS_"))}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["calls"] == [], result
    print(f"\n[no pickle] push, pull, eval, import-peft, pyfunc, serving ({result['served']}): no unpickling")


# ------------------------------------------------------------------------------------------ (c)
def test_s3_content_addresses_are_never_overwritten(s3_env, tmp_path, monkeypatch):
    bucket = s3_env.new_bucket()
    reg = Registry(home=str(tmp_path / ".promptreg"), artifact_uri=f"s3://{bucket}/reg")
    monkeypatch.setattr("promptreg.services.mirroring.mirror_version", lambda *a, **k: [])  # the store is under test, not MLflow
    art = make_artifact(tmp_path / "a", n=2, seed=5)
    store = reg.store
    puts: list[str] = []
    store._client().meta.events.register("before-parameter-build.s3.PutObject",
                                         lambda params, **kw: puts.append(params["Key"]))
    first = reg.push(art, "a").version
    assert first.artifact_uri == store.uri_for(first.sha256) and first.sha256 in first.artifact_uri
    prefix = store._dir_key(first.sha256)
    n_objects = len(list((art).iterdir())) + 1  # the files + the completion marker
    assert len(puts) == n_objects

    def state():
        resp = s3_env.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return {o["Key"]: (o["ETag"], o["LastModified"]) for o in resp["Contents"]}

    before = state()
    assert len(before) == n_objects
    time.sleep(1.1)  # LastModified has one-second resolution
    puts.clear()
    second = reg.push(art, "b").version  # same content, another prompt: a new version, same address
    assert second.sha256 == first.sha256 and second.artifact_uri == first.artifact_uri
    assert puts == [] and state() == before  # nothing written, no object changed

    # an object overwritten behind the registry's back is the only thing ever rewritten: with its true bytes
    key = prefix + TENSORS
    good = s3_env.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    s3_env.client().put_object(Bucket=bucket, Key=key, Body=flip_byte(good))
    tampered = state()
    assert reg.push(art, "c").version.artifact_uri == first.artifact_uri
    assert puts == [key]
    assert s3_env.client().get_object(Bucket=bucket, Key=key)["Body"].read() == good
    after = state()
    assert {k: v for k, v in after.items() if k != key} == {k: v for k, v in tampered.items() if k != key}
    for ref in ("a:1", "b:1", "c:1"):
        info = reg.show(ref)
        assert info.artifact_uri == store.uri_for(info.sha256)
        reg.pull(ref, tmp_path / ref.replace(":", "-"))
