"""Bad-input fuzzing of the CLI (issue 7, item 5), driven by hypothesis with a fixed seed.

Every case calls ``promptreg.cli.main.main(argv)`` IN-PROCESS against an embedded project (SQLite registry,
local artifact store, MLflow on SQLite) and checks the CLI contract for bad input:

* the exit code is 2 (the command could not run) or 0 (the input happened to be valid);
* on exit 2, stderr is exactly ONE line starting with ``error: `` (``str.splitlines()``, so '\\r', '\\x0b',
  '\\u2028'... count as line breaks too), never a traceback and never the CLI's last-line-of-defence
  "internal error" (that is a crash the product did not translate: a bug);
* nothing is written outside the project's home folder (and the folder a case writes its own inputs
  to): the test's whole tmp tree is snapshotted before and after each case, with the process working
  directory inside it, so that a relative write (``./.promptreg``, ``../x``) would show up;
* a refused push leaves no version row behind.

Targets: refs / names (show, history, list, pull, promote, rollback, push --name, gate --against, schedule
remove), free text that is stored (descriptions, reasons, schedule URIs, environment names; also on a
PostgreSQL registry, whose text/JSONB columns refuse NUL), artifact folders with fuzzed ``promptreg.json``
(also on PostgreSQL), fuzzed ``soft_prompt.safetensors`` bytes and headers, fuzzed PEFT files, suite YAML
(``gate x:1 --suite F``), data files (``drift --data F``, ``train --train F``) and train's options, plus fixed
lists of edge files (empty, a 5 MB line, BOM, NUL bytes, non-UTF-8, UTF-16, a folder, deep nesting).
Argument text is what argv can carry: no NUL, lone surrogates only as U+DC80..U+DCFF (undecodable bytes).

How many cases ran per target is printed in the terminal summary ("fuzz: N cases ..."). Hypothesis runs
derandomized (the same cases every run, no example database). ``PROMPTREG_FUZZ_SCALE=N`` multiplies the
number of cases; ``PROMPTREG_FUZZ_LOG=FILE`` writes one JSON line per case (target, exit code, error line).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sqlite3
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptreg.cli.main import main
from tests.helpers import make_artifact, sentiment_rows, write_suite

CLEAN_ENV = ("PROMPTREG_HOME", "PROMPTREG_DB_URL", "MLFLOW_TRACKING_URI", "PROMPTREG_ARTIFACT_URI",
             "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "PROMPTREG_MLFLOW_ARTIFACT_URI", "PROMPTREG_BASE_MODEL",
             "PROMPTREG_VERBOSE", "PROMPTREG_FAULT_PAUSE", "GITHUB_STEP_SUMMARY")
NO_MODEL = "/nonexistent/promptreg-fuzz-model"  # commands that get past input validation stop here, exit 2

# (target) -> Counter of outcomes; printed by the terminal summary plugin registered below
CASES: dict[str, Counter] = {}


# PROMPTREG_FUZZ_SCALE=10 runs ten times as many cases per target (still derandomized: the same cases every run)
SCALE = float(os.environ.get("PROMPTREG_FUZZ_SCALE", "1"))
LOG = os.environ.get("PROMPTREG_FUZZ_LOG")


def fuzz_settings(n: int):
    return settings(max_examples=max(1, round(n * SCALE)), deadline=None, derandomize=True, database=None,
                    print_blob=False, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


class _FuzzSummary:
    def pytest_terminal_summary(self, terminalreporter):
        if not CASES:
            return
        terminalreporter.section("fuzz cases (tests/test_fuzz.py)")
        total = 0
        for target, outcomes in CASES.items():
            n = sum(outcomes.values())
            total += n
            detail = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
            terminalreporter.write_line(f"fuzz: {n} cases {target} ({detail})")
        terminalreporter.write_line(f"fuzz: {total} cases in total")


# --------------------------------------------------------------------------------------------------
# the world: one embedded project shared by every case of this module


class World:
    def __init__(self, root: Path, db_url: str | None = None):
        self.root = root
        self.db_url = db_url  # None: the embedded SQLite registry in home
        self._engine = None
        self.home = root / "home"
        self.inputs = root / "inputs"
        self.cwd = root / "cwd"
        self.base_artifact = root / "inputs-fixed" / "artifact"
        self.suite = root / "inputs-fixed" / "suite" / "suite.yaml"
        self.data = root / "inputs-fixed" / "data.jsonl"
        self.allowed = {self.home, self.inputs}
        self.canary = 1  # the version x@canary points at

    # -- running the CLI in-process --------------------------------------------------------------
    def cli(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(["--home", str(self.home), *(["--db-url", self.db_url] if self.db_url else []),
                      *map(str, args)])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        return code, out.getvalue(), err.getvalue()

    # -- the checks every case makes ------------------------------------------------------------
    def snapshot(self) -> set[str]:
        """Every path under the tmp root except inside the allowed folders (home, inputs)."""
        seen = set()
        for dirpath, dirnames, filenames in os.walk(self.root):
            d = Path(dirpath)
            dirnames[:] = [n for n in dirnames if d / n not in self.allowed]
            for n in dirnames + filenames:
                seen.add(str((d / n).relative_to(self.root)))
        return seen

    def versions(self) -> int:
        if self.db_url:
            import sqlalchemy as sa

            if self._engine is None:
                self._engine = sa.create_engine(self.db_url, poolclass=sa.pool.NullPool)
            with self._engine.connect() as c:
                return c.execute(sa.text("select count(*) from prompt_version")).scalar()
        con = sqlite3.connect(self.home / "registry.db")
        try:
            return con.execute("select count(*) from prompt_version").fetchone()[0]
        finally:
            con.close()

    def run_case(self, target: str, *args: str, ok_codes=(0, 2)) -> tuple[int, str, str]:
        before = self.snapshot()
        code, out, err = self.cli(*args)
        after = self.snapshot()
        CASES.setdefault(target, Counter())[f"exit {code}"] += 1
        if LOG:  # PROMPTREG_FUZZ_LOG=FILE: one line per case (target, exit code, first stderr line)
            with open(LOG, "a", encoding="utf-8", errors="backslashreplace") as f:
                f.write(json.dumps([target, code, (err.splitlines() or [""])[0][:300]]) + "\n")
        shown = f"args={[a[:200] for a in map(str, args)]!r} code={code} stdout={out[-500:]!r} stderr={err[-2000:]!r}"
        assert "Traceback" not in err and "Traceback" not in out, shown
        assert "internal error" not in err, shown  # the CLI's safety net caught an untranslated crash
        assert code in ok_codes, shown
        if code == 2:
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), shown
        assert after == before, f"written outside the project home: {sorted(after ^ before)}; {shown}"
        return code, out, err

    def fresh_inputs(self) -> Path:
        if self.inputs.exists():
            _rmtree(self.inputs)
        self.inputs.mkdir()
        return self.inputs


def _rmtree(path: Path) -> None:
    def fix(func, p, _exc):
        os.chmod(os.path.dirname(p), 0o755)
        if os.path.exists(p) and not os.path.islink(p):
            os.chmod(p, 0o755)
        func(p)

    shutil.rmtree(path, onerror=fix)


@contextlib.contextmanager
def _world(tmp_path_factory, request, db_url: str | None = None):
    if not request.config.pluginmanager.has_plugin("promptreg-fuzz-summary"):
        request.config.pluginmanager.register(_FuzzSummary(), "promptreg-fuzz-summary")
    w = World(tmp_path_factory.mktemp("fuzz-pg" if db_url else "fuzz"), db_url)
    w.cwd.mkdir()
    w.inputs.mkdir()
    make_artifact(w.base_artifact, seed=0)
    write_suite(w.suite.parent, rows=8)
    w.data.write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows(6)))
    mp = pytest.MonkeyPatch()
    for var in CLEAN_ENV:
        mp.delenv(var, raising=False)
    mp.setenv("PROMPTREG_USER", "fuzz")
    mp.chdir(w.cwd)  # relative writes would land in the snapshotted tree
    try:
        if db_url:
            assert w.cli("db", "upgrade")[0] == 0
        # x:1 and x:2 registered, x@staging -> 1 (refs that are valid must work)
        assert w.cli("push", w.base_artifact, "--name", "x")[0] == 0
        assert w.cli("push", make_artifact(w.root / "inputs-fixed" / "artifact2", seed=1), "--name", "x")[0] == 0
        code, out, err = w.cli("promote", "x:1", "--to", "staging")
        assert code == 0, err
        code, out, err = w.cli("promote", "x:1", "--to", "canary")
        assert code == 0, err
        w.canary = 1
        yield w
    finally:
        mp.undo()
        if w._engine is not None:
            w._engine.dispose()
        if db_url is None:  # visible with -s; the terminal summary has them too
            for target, outcomes in CASES.items():
                print(f"fuzz: {sum(outcomes.values())} cases {target} {dict(outcomes)}")


@pytest.fixture(scope="module")
def world(tmp_path_factory, request):
    with _world(tmp_path_factory, request) as w:
        yield w


@pytest.fixture(scope="module")
def pg_world(tmp_path_factory, request):
    """The same world with the registry on PostgreSQL (text/JSONB refuse what SQLite stores: NUL, NaN, ...)."""
    from tests.fixtures.services import create_pg_database, drop_pg_database, pg_available

    if not pg_available():
        pytest.fail("PostgreSQL is not reachable at 127.0.0.1:5432 (run `make services`)")
    url = create_pg_database("promptreg_fuzz")
    try:
        with _world(tmp_path_factory, request, url) as w:
            yield w
    finally:
        drop_pg_database(url)


# --------------------------------------------------------------------------------------------------
# strategies

# Text as it can reach argv: no NUL (execve cannot pass it); lone surrogates only in U+DC80..U+DCFF, which
# is how Python's surrogateescape decodes non-UTF-8 argv bytes.
ARGV_CHARS = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
argv_text = st.one_of(
    st.text(ARGV_CHARS, max_size=40),
    st.text(st.sampled_from("xX09._-/:@ \\~$*?\t\n\r\u2028\u0085é\u0301ʼ٣²\ufeff\u202e") | st.characters(
        min_codepoint=0xDC80, max_codepoint=0xDCFF), max_size=20),
)
ODD_REFS = ["", "../x", "a/b", "x/../../y", "/etc/passwd", "..", ".", "~", "x:0", "x:-1", "x:+1", "x: 1", "x:1.0",
            "x:1e3", "x:²", "x:١", "x:99999999999999999999", "x:2147483648", "x@", "x@Production", "x@latest",
            "x@v1", "x@a@b", "x:1:2", "x@staging:1", "@staging", ":1", "x" * 128, "x" * 129, "x" * 10_000,
            "x\n", "x\r\ny", "x\u2028", "é", "e\u0301", "ｘ", "x\u200b", "\ufeffx", "-x", "x;rm -rf /",
            "$(touch pwned)", "x@prod\x85", "x:1", "x:2", "x@staging", "x", "y", "x@production"]
refs = st.one_of(
    st.sampled_from(ODD_REFS),
    argv_text,
    st.builds(lambda a, b: f"{a}:{b}", st.sampled_from(["x", "y", "../x"]), argv_text),
    st.builds(lambda a, b: f"{a}@{b}", st.sampled_from(["x", "y", "a/b"]), argv_text),
    st.builds(lambda n: f"x:{n}", st.integers(min_value=-(2**70), max_value=2**70)),
)

json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64), st.sampled_from([10**400, -(10**30), 2**63, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -0.0, 5e-324]),
    st.text(max_size=30), st.sampled_from(["", "\x00", "\ud800", "a\udcffb", "\u2028", "../x", "x" * 5000]),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)


def _paths(doc, prefix=()):
    """Every (key/index path) inside a JSON-like document."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


def _set(doc, path, value):
    if not path:
        return value
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return doc


def _delete(doc, path):
    if not path:
        return doc
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    del cur[path[-1]]
    return doc


@st.composite
def mutated_doc(draw, base: dict, values=json_values):
    """A deep copy of ``base`` with 1-3 mutations: replace a value, delete a key, add a key."""
    doc = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        parent_is_dict = bool(path) and isinstance(_get(doc, path[:-1]), dict)
        if op == "delete" and path and parent_is_dict:
            doc = _delete(doc, path)
        elif op == "add" and isinstance(_get(doc, path), dict):
            _get(doc, path)[draw(st.text(max_size=12))] = draw(values)
        else:
            doc = _set(doc, path, draw(values))
    return doc


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


def json_bytes(doc) -> bytes:
    """JSON as a careless writer would produce it: NaN/Infinity literals, lone surrogates as \\u escapes."""
    return json.dumps(doc, allow_nan=True).encode("utf-8")


raw_blobs = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"", b" ", b"\xef\xbb\xbf", b"\xff\xfe\x00", b"null", b"[]", b"{}", b"{", b"\x00" * 64,
                     b"[" * 50_000, b'{"a":' * 50_000, b"1" * 5000, b"NaN", b'"\\ud800"']),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


# --------------------------------------------------------------------------------------------------
# refs and names


@fuzz_settings(600)
@given(ref=refs, cmd=st.sampled_from(["show", "show-json", "history", "list", "pull", "rollback", "promote",
                                      "promote-to", "push-name", "gate-against", "schedule-remove"]))
def test_fuzz_refs(world, ref, cmd):
    inputs = world.fresh_inputs()
    argv = {
        "show": ["show", ref], "show-json": ["show", ref, "--json"], "history": ["history", ref],
        "list": ["list", ref], "pull": ["pull", ref, inputs / "dest"], "rollback": ["rollback", ref],
        "promote": ["promote", ref, "--to", "fz-alias"], "promote-to": ["promote", "x:2", "--to", ref],
        "push-name": ["push", world.base_artifact, "--name", ref],
        "gate-against": ["gate", "x:1", "--against", ref, "--suite", world.suite, "--model", NO_MODEL],
        "schedule-remove": ["schedule", "remove", ref],
    }[cmd]
    versions = world.versions()
    code, out, err = world.run_case("refs", *argv)
    if cmd == "push-name" and code != 0:
        assert world.versions() == versions
    if code == 0 and cmd in ("promote", "promote-to"):  # put the alias state back for the next cases
        alias = "fz-alias" if cmd == "promote" else ref
        world.cli("rollback", "x", "--alias", alias)


@fuzz_settings(200)
@given(text=st.one_of(argv_text, st.sampled_from(["", " ", "\udcff", "a\udc80b", "x" * 100_000, "line\nbreak",
                                                  "\u2028", "0 3 * * *", "*/0 * * * *", "s3://", "s3://b b/x",
                                                  "file://", "../x.jsonl", "/dev/null", "~/x"])),
       cmd=st.sampled_from(["push-description", "promote-reason", "rollback-reason", "schedule-data",
                            "schedule-cron", "schedule-suite", "env-name", "env-model", "drift-data",
                            "drift-reference", "import-peft-description"]))
def test_fuzz_free_text(world, text, cmd):
    """Free-text arguments that end up in the database or in MLflow (descriptions, reasons, URIs, names)."""
    other = 1 if world.canary == 2 else 2
    argv = {
        "push-description": ["push", world.base_artifact, "--name", "fz-text", "--description", text],
        "promote-reason": ["promote", f"x:{other}", "--to", "canary", "--force", "--reason", text],
        "rollback-reason": ["rollback", "x", "--alias", "canary", "--to", str(other), "--reason", text],
        "schedule-data": ["schedule", "add", "x@staging", "--cron", "0 3 * * *", "--data", text],
        "schedule-cron": ["schedule", "add", "x@staging", "--cron", text, "--data", world.data],
        "schedule-suite": ["schedule", "add", "x@staging", "--cron", "0 3 * * *", "--data", world.data,
                           "--suite", text],
        "env-name": ["env", "set-base-model", text, NO_MODEL],
        "env-model": ["env", "set-base-model", "prod", text],
        "drift-data": ["drift", "x:1", "--data", text, "--model", NO_MODEL],
        "drift-reference": ["drift", "x:1", "--data", world.data, "--reference", text, "--model", NO_MODEL],
        "import-peft-description": ["import-peft", world.base_artifact, "--base-model", NO_MODEL, "--name", "fz-peft",
                                    "--description", text],
    }[cmd]
    world.fresh_inputs()
    target = "free text (descriptions, reasons, URIs)" + (" on PostgreSQL" if world.db_url else "")
    code, out, err = world.run_case(target, *argv)
    if code == 0 and cmd in ("promote-reason", "rollback-reason"):
        world.canary = other
    if code == 0 and cmd.startswith("schedule"):
        world.cli("schedule", "remove", str(json.loads(world.cli("schedule", "list", "--json")[1])[-1]["id"]))


# --------------------------------------------------------------------------------------------------
# artifact folders: promptreg.json, soft_prompt.safetensors, PEFT files


def _push(world, folder: Path, target: str) -> int:
    versions = world.versions()
    code, out, err = world.run_case(target, "push", folder, "--name", "fz")
    if code != 0:
        assert world.versions() == versions, "a refused push left a version row"
    else:
        assert world.versions() >= versions
    return code


def _copy_base(world) -> Path:
    folder = world.fresh_inputs() / "art"
    shutil.copytree(world.base_artifact, folder)
    return folder


def _manifest_doc_strategy():
    # built lazily from the fixed base artifact's manifest (same content every run: make_artifact is seeded,
    # only created_at differs, which is replaced by a constant below)
    from tests.helpers import TINY_BASE

    base = {"format_version": 1, "kind": "promptreg.soft_prompt", "method": "prompt_tuning", "num_virtual_tokens": 4,
            "task": {"type": "classification", "verbalizer": None, "template": None},
            "method_config": {"init": "random", "seed": 0},
            "tensors": {"prompt_embeddings": {"shape": [4, 64], "dtype": "F32"}},
            "base_model": dict(TINY_BASE, architecture=None), "dataset": None, "metrics": {"accuracy": 0.5},
            "created_by": "tests", "created_at": "2026-01-01T00:00:00+00:00", "promptreg_version": "0.1.0",
            "reproducibility": {}, "validation": None, "extra": {}}
    metric_values = st.one_of(json_values, st.sampled_from([float("nan"), float("inf"), -float("inf"), 10**400,
                                                             "0.5", "NaN", True, None, 1e308]))
    # free-form places a valid manifest can carry anything: what the database / MLflow must store (or refuse)
    free_paths = [("created_by",), ("task", "template"), ("method_config", "init"), ("method_config", "k"),
                  ("extra", "k"), ("reproducibility", "k"), ("validation",), ("base_model", "name_or_path"),
                  ("base_model", "model_type"), ("dataset",), ("promptreg_version",), ("created_at",),
                  ("task", "verbalizer")]
    poison = st.one_of(
        st.text(max_size=30).map(lambda t: t + "\x00"), st.sampled_from(["\ud800", "x\udfff", "\x00", "\u2028\n\r",
                                                                   "x" * 20_000, "../../etc", "é" * 3]),
        st.sampled_from([float("nan"), float("inf"), 10**30, -(2**63), 2**64, 1e308]), json_values,
        st.builds(lambda name, src: {"fingerprint": "c" * 64, "name": name, "source": src, "rows": 3},
                  st.text(max_size=10).map(lambda t: t + "\x00"), st.sampled_from(["\ud800", "../x", "s3://b/k"])),
        st.dictionaries(st.sampled_from(["positive", "negative", "\x00", "\ud800"]),
                        st.lists(st.sampled_from([" great", "\x00", "\udc80"]), max_size=2), max_size=2),
    )

    @st.composite
    def poisoned(draw):
        doc = json.loads(json.dumps(base))
        for _ in range(draw(st.integers(1, 2))):
            doc = _set(doc, draw(st.sampled_from(free_paths)), draw(poison))
        if draw(st.booleans()):  # a metric key (keys are free text too)
            doc["metrics"] = {draw(st.sampled_from(["a\x00", "\ud800", "x" * 300, "a/../b", "é"])): 0.5}
        return doc

    return st.one_of(
        poisoned(),
        mutated_doc(base),
        mutated_doc(base, values=metric_values),
        st.builds(lambda m: dict(base, metrics=m), st.dictionaries(st.text(max_size=10), metric_values, max_size=3)),
        json_values,
    )


@fuzz_settings(700)
@given(doc=_manifest_doc_strategy(), raw=st.one_of(st.none(), st.none(), st.none(), raw_blobs))
def test_fuzz_manifest(world, doc, raw):
    folder = _copy_base(world)
    (folder / "promptreg.json").write_bytes(raw if raw is not None else json_bytes(doc))
    _push(world, folder, "manifest (push promptreg.json)")


def _safetensors(tensors: dict[str, np.ndarray], header_override=None) -> bytes:
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        data = arr.tobytes()
        header[name] = {"dtype": {"float32": "F32", "float16": "F16", "float64": "F64"}[arr.dtype.name],
                        "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if header_override is not None:
        header = header_override(header)
    hb = json.dumps(header, allow_nan=True).encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(hb)) + hb + b"".join(blobs)


def _prompt(seed=0, shape=(4, 64), dtype="float32") -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


dims = st.one_of(st.integers(0, 70), st.sampled_from([-1, 2**62, 2**64, True, 1.5, "4", None]))
header_entry = st.fixed_dictionaries({
    "dtype": st.one_of(st.sampled_from(["F32", "F16", "BF16", "F64", "I32", "U8", "BOOL", "F8_E4M3", "X", "f32"]),
                       json_scalars),
    "shape": st.one_of(st.lists(dims, max_size=4), json_values),
    "data_offsets": st.one_of(st.lists(st.integers(-5, 2000), min_size=2, max_size=2), json_values),
})


@st.composite
def safetensors_case(draw):
    """(file bytes, manifest tensors spec or None to keep the manifest)."""
    kind = draw(st.sampled_from(["values", "truncate", "header-entry", "header-json", "length", "dtype-shape",
                                 "random", "extra-tensor"]))
    arr = _prompt()
    if kind == "values":  # NaN / inf / huge values at random positions, maybe in another float dtype
        dtype = draw(st.sampled_from(["float32", "float16", "float64"]))
        arr = arr.astype(dtype)
        for _ in range(draw(st.integers(1, 3))):
            i, j = draw(st.integers(0, 3)), draw(st.integers(0, 63))
            with np.errstate(over="ignore"):  # 1e38 overflows float16 to inf: intended
                arr[i, j] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e38, -0.0, 65504.0]))
        spec = {"prompt_embeddings": {"shape": [4, 64], "dtype": {"float32": "F32", "float16": "F16",
                                                                  "float64": "F64"}[dtype]}}
        return _safetensors({"prompt_embeddings": arr}), draw(st.sampled_from([spec, None]))
    if kind == "truncate":
        data = _safetensors({"prompt_embeddings": arr})
        return data[:draw(st.integers(0, len(data) - 1))], None
    if kind == "header-entry":
        entry = draw(header_entry)
        return _safetensors({"prompt_embeddings": arr}, lambda h: {"prompt_embeddings": entry}), None
    if kind == "header-json":
        value = draw(json_values)
        return _safetensors({"prompt_embeddings": arr}, lambda h: value), None
    if kind == "length":
        data = _safetensors({"prompt_embeddings": arr})
        n = draw(st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 7, 2**63, 100 * 1024 * 1024 + 1])))
        return struct.pack("<Q", n) + data[8:], None
    if kind == "dtype-shape":  # a well-formed file whose tensor does not fit the manifest / the base model
        shape = tuple(draw(st.lists(st.integers(0, 9), min_size=0, max_size=3)))
        dtype = draw(st.sampled_from(["float32", "float16", "float64"]))
        arr = np.zeros(shape, dtype=dtype)
        spec = {"prompt_embeddings": {"shape": list(shape), "dtype": {"float32": "F32", "float16": "F16",
                                                                      "float64": "F64"}[dtype]}}
        return _safetensors({"prompt_embeddings": arr}), draw(st.sampled_from([spec, None]))
    if kind == "extra-tensor":
        name = draw(st.text(max_size=20))
        tensors = {"prompt_embeddings": arr, name: np.ones((2, 2), dtype="float32")}
        spec = {k: {"shape": list(v.shape), "dtype": "F32"} for k, v in tensors.items()}
        return _safetensors(tensors), draw(st.sampled_from([spec, None]))
    return draw(raw_blobs), None


@fuzz_settings(600)
@given(case=safetensors_case())
def test_fuzz_safetensors(world, case):
    data, spec = case
    folder = _copy_base(world)
    os.chmod(folder / "soft_prompt.safetensors", 0o644)
    (folder / "soft_prompt.safetensors").write_bytes(data)
    if spec is not None:
        m = json.loads((folder / "promptreg.json").read_text())
        m["tensors"] = spec
        (folder / "promptreg.json").write_text(json.dumps(m))
    _push(world, folder, "safetensors (push soft_prompt.safetensors)")


@st.composite
def peft_case(draw):
    """(adapter_config.json bytes or None, adapter_model.safetensors bytes or None, files to delete)."""
    kind = draw(st.sampled_from(["config", "config", "weights", "missing", "both"]))
    base_cfg = {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 4, "token_dim": 64,
                "num_layers": 2, "num_attention_heads": 4, "num_transformer_submodules": 1,
                "inference_mode": True, "prompt_tuning_init": "RANDOM"}
    cfg = weights = None
    delete: list[str] = []
    if kind in ("config", "both"):
        cfg = draw(st.one_of(mutated_doc(base_cfg).map(json_bytes), raw_blobs))
    if kind in ("weights", "both"):
        sub = draw(st.sampled_from(["other-values", "nan", "shape", "name", "raw"]))
        if sub == "other-values":
            weights = _safetensors({"prompt_embeddings": _prompt(seed=draw(st.integers(1, 5)))})
        elif sub == "nan":
            arr = _prompt()
            arr[0, 0] = np.nan
            weights = _safetensors({"prompt_embeddings": arr})
        elif sub == "shape":
            weights = _safetensors({"prompt_embeddings": _prompt(shape=(draw(st.integers(1, 6)), 64))})
        elif sub == "name":
            weights = _safetensors({draw(st.text(max_size=10)): _prompt()})
        else:
            weights = draw(raw_blobs)
    if kind == "missing":
        delete = draw(st.lists(st.sampled_from(["adapter_config.json", "adapter_model.safetensors"]), min_size=1,
                               max_size=2, unique=True))
    return cfg, weights, delete


@fuzz_settings(250)
@given(case=peft_case())
def test_fuzz_peft_files(world, case):
    cfg, weights, delete = case
    folder = _copy_base(world)
    for name in os.listdir(folder):
        os.chmod(folder / name, 0o644)
    if cfg is not None:
        (folder / "adapter_config.json").write_bytes(cfg)
    if weights is not None:
        (folder / "adapter_model.safetensors").write_bytes(weights)
    for name in delete:
        (folder / name).unlink()
    _push(world, folder, "peft (push adapter_config.json / adapter_model.safetensors)")


# --------------------------------------------------------------------------------------------------
# suites


VALID_SUITE = {
    "name": "toy-sentiment",
    "golden": [{"name": "toy", "path": "golden.jsonl",
                "metrics": {"accuracy": {"margin": 0.05}, "macro_f1": {"margin": 1.0}, "ece": {"max": 0.5}}}],
    "checks": [
        {"name": "mft-positive", "type": "mft", "template": "the movie was {adj} .",
         "fill": {"adj": ["great", "excellent"]}, "label": "positive", "max_failure_rate": 1.0},
        {"name": "inv-typos", "type": "invariance", "data": "toy", "perturbation": "typos", "max_failure_rate": 1.0},
        {"name": "dir-negation", "type": "directional", "data": "toy", "perturbation": {"suffix": [" but bad ."]},
         "label": "positive", "direction": "decrease", "max_failure_rate": 1.0},
    ],
    "gate": {"confidence": 0.95, "resamples": 200, "seed": 0},
    "policies": {"production": {"require_gate": True, "drift": {"action": "flag", "alpha": 0.05}}},
}
yaml_scalars = st.one_of(
    json_scalars,
    st.sampled_from(["../golden.jsonl", "/etc/passwd", "golden.csv", "nothere.jsonl", "golden", "..", "/dev/null",
                     "no", "yes", "on", "~", "0x1F", "1e3", ".inf", "2001-01-01", "{adj}", "{0}", "{a!r}", "{a:>3}",
                     "{", "}", "typos", "names", "punctuation", "add_negation", "mft", "invariance", "directional",
                     "increase", "decrease", "production", "Prod", "latest", "recall_positive", "recall_", "rouge_l",
                     "generation", "classification"]),
)
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=10), st.integers(-2, 2)), inner,
                                                 max_size=4)), max_leaves=12)


def _yaml_text(doc) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


RAW_YAML = [
    "", "---\n", "~", "[", "{", "a: b: c", "\t- x", "- [a\n", "name: a\nname: b\n", "? [a, b]\n: 1\n",
    "!!python/object/apply:os.system ['touch pwned']", "name: !!binary aGk=", "&a [*a]", "a: *nope",
    "[" * 5000, "a:\n" + "  " * 2000 + "b: 1", "x: &a [1,2,3]\ny: &b [*a,*a,*a,*a,*a,*a]\nz: [*b,*b,*b,*b,*b,*b]\n",
    "\ufeffname: x\n", "name: x\x00\n", "name: \x85\n", "%YAML 9.9\n---\nx", "--- a\n--- b\n",
    "name: x\ngolden: []\nchecks: []\n", "name: x\ngolden:\n- {name: g, path: /dev/null, metrics: {accuracy: {margin: 1}}}",
]


@st.composite
def suite_case(draw):
    """(suite file bytes, extra data files {name: bytes})."""
    kind = draw(st.sampled_from(["mutate", "mutate", "mutate", "random", "raw-text", "raw-list", "data"]))
    if kind == "mutate":
        return _yaml_text(draw(mutated_doc(VALID_SUITE, values=yaml_values))).encode(), {}
    if kind == "random":
        return _yaml_text(draw(yaml_values)).encode(), {}
    if kind == "raw-text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass"), {}
    if kind == "raw-list":
        return draw(st.sampled_from(RAW_YAML)).encode("utf-8", "surrogatepass"), {}
    # the suite is valid, its golden data file is fuzzed
    return _yaml_text(VALID_SUITE).encode(), {"golden.jsonl": draw(data_file_bytes(".jsonl"))}


@fuzz_settings(700)
@given(case=suite_case())
def test_fuzz_suite(world, case):
    text, files = case
    inputs = world.fresh_inputs()
    suite_dir = inputs / "suite"
    shutil.copytree(world.suite.parent, suite_dir)
    (suite_dir / "suite.yaml").write_bytes(text)
    for name, data in files.items():
        (suite_dir / name).write_bytes(data)
    world.run_case("suite (gate x:1 --suite F)", "gate", "x:1", "--suite", suite_dir / "suite.yaml",
                   "--model", NO_MODEL, ok_codes=(2,))


# --------------------------------------------------------------------------------------------------
# data files (drift --data, train --train)

cell_text = st.one_of(st.text(max_size=20), st.sampled_from(["", " ", "positive", "negative", "a,b", 'say "hi"',
                                                             "line\nbreak", "\ufeff", "\x00", "\r", "é"]))
row_values = st.one_of(cell_text, json_scalars)


@st.composite
def data_file_bytes(draw, suffix: str):
    if suffix == ".jsonl":
        def line():
            return st.one_of(
                st.fixed_dictionaries({"text": cell_text, "label": st.sampled_from(["positive", "negative"])}),
                st.dictionaries(st.sampled_from(["text", "label", "target", "Text", "x"]), row_values, max_size=3),
                json_values,
            ).map(lambda v: json.dumps(v, allow_nan=True))
        if draw(st.booleans()):  # well-formed rows with odd values: gets past the parser to the row checks
            labelled = draw(st.sampled_from(["all", "none", "some"]))
            rows = [{"text": draw(cell_text)} for _ in range(draw(st.integers(1, 6)))]
            for i, r in enumerate(rows):
                if labelled == "all" or (labelled == "some" and i % 2):
                    r["label"] = draw(st.one_of(st.sampled_from(["positive", "negative"]), row_values))
            lines = [json.dumps(r, allow_nan=True) for r in rows]
        else:
            lines = draw(st.lists(st.one_of(line(), line(), st.text(max_size=30)), max_size=8))
        text = "\n".join(lines)
    elif suffix == ".json":
        text = json.dumps(draw(st.one_of(
            st.lists(st.dictionaries(st.sampled_from(["text", "label", "x"]), row_values, max_size=3), max_size=6),
            json_values)), allow_nan=True)
    else:  # .csv
        header = draw(st.lists(st.sampled_from(["text", "label", "target", "x", "", "text "]), max_size=4))
        rows = draw(st.lists(st.lists(cell_text, max_size=5), max_size=6))

        def cell(c):
            return '"' + c.replace('"', '""') + '"' if any(ch in c for ch in ',"\n\r') else c

        text = "\n".join(",".join(cell(c) for c in r) for r in [header] + rows)
        if draw(st.booleans()):
            text = text.replace('""', '"')  # break the quoting sometimes
    data = text.encode("utf-8", "surrogatepass")
    tweak = draw(st.sampled_from(["none", "none", "none", "bom", "nul", "latin1", "crlf", "truncate"]))
    if tweak == "bom":
        data = b"\xef\xbb\xbf" + data
    elif tweak == "nul":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\x00" + data[at:]
    elif tweak == "latin1":
        data += b"\xe9\xff"
    elif tweak == "crlf":
        data = data.replace(b"\n", b"\r\n")
    elif tweak == "truncate" and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    return data


data_case = st.sampled_from([".jsonl", ".jsonl", ".jsonl", ".json", ".csv", ".csv", ".txt"]).flatmap(
    lambda suffix: st.tuples(st.just(suffix), data_file_bytes(suffix if suffix in (".jsonl", ".json", ".csv")
                                                              else ".jsonl")))


@fuzz_settings(600)
@given(case=data_case, column=st.one_of(st.none(), st.none(), argv_text))
def test_fuzz_drift_data(world, case, column):
    suffix, data = case
    path = world.fresh_inputs() / f"fresh{suffix}"
    path.write_bytes(data)
    extra = ["--text-column", column] if column is not None else []
    world.run_case("data (drift x:1 --data F)", "drift", "x:1", "--data", path, "--model", NO_MODEL, *extra,
                   ok_codes=(2,))


@fuzz_settings(50)
@given(case=data_case, labels=st.one_of(st.none(), st.none(), st.sampled_from(["positive,negative", ",", "a,a", ""]),
                                        argv_text))
def test_fuzz_train_data(world, case, labels):
    suffix, data = case
    path = world.fresh_inputs() / f"train{suffix}"
    path.write_bytes(data)
    extra = ["--labels", labels] if labels is not None else []
    world.run_case("data (train --train F)", "train", "--train", path, "--model", NO_MODEL, "--no-progress",
                   *extra, ok_codes=(2,))


TRAIN_OPTIONS = ["--num-virtual-tokens", "--lr", "--epochs", "--max-steps", "--batch-size", "--grad-accum",
                 "--warmup-ratio", "--weight-decay", "--eval-fraction", "--eval-every", "--patience", "--seed",
                 "--max-text-tokens", "--train-limit", "--test-limit", "--layer", "--layers", "--activation", "--bottleneck", "--encoder-hidden",
                 "--projection-hidden", "--template", "--verbalizer", "--labels", "--text-column", "--label-column",
                 "--target-column", "--method", "--task", "--init", "--init-text", "--encoder", "--schedule",
                 "--device", "--push", "--eval", "--test", "--checkpoint-dir"]
option_values = st.one_of(
    st.sampled_from(["0", "-1", "1", "nan", "inf", "-inf", "1e309", "0.5", "1.0", "99999999999999999999", "",
                     "{virtual}{text}", "{text}", "no placeholder", "{virtual}", "{text}{text}", "{0}", "{",
                     "positive=", "=x", "positive= great", "positive,positive", "prefix_tuning", "id_spam", "iapt", "0,1", "all",
                     "generation", "cuda:9", "cpu", "../x", "a/b", "x@y"]),
    argv_text,
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(str),
)


@fuzz_settings(60)
@given(options=st.lists(st.tuples(st.sampled_from(TRAIN_OPTIONS), option_values), min_size=1, max_size=3))
def test_fuzz_train_options(world, options):
    """Wrong types and values for train's options (valid data; a valid configuration stops at the missing
    base model, exit 2)."""
    inputs = world.fresh_inputs()
    argv = ["train", "--train", world.data, "--model", NO_MODEL, "--no-progress", "--output", inputs / "out"]
    for opt, value in options:
        argv += [opt, value]
    world.run_case("train options", *argv, ok_codes=(2,))


@pytest.mark.integration
@fuzz_settings(120)
@given(doc=_manifest_doc_strategy(), raw=st.one_of(st.none(), st.none(), st.none(), raw_blobs))
def test_fuzz_manifest_postgres(pg_world, doc, raw):
    folder = _copy_base(pg_world)
    (folder / "promptreg.json").write_bytes(raw if raw is not None else json_bytes(doc))
    _push(pg_world, folder, "manifest on PostgreSQL (push promptreg.json)")


@pytest.mark.integration
@fuzz_settings(80)
@given(text=argv_text, cmd=st.sampled_from(["push-description", "promote-reason", "schedule-data", "env-name"]))
def test_fuzz_free_text_postgres(pg_world, text, cmd):
    test_fuzz_free_text.hypothesis.inner_test(pg_world, text, cmd)


# --------------------------------------------------------------------------------------------------
# fixed edge files: empty, huge, BOM, NUL, not UTF-8, a folder, deep nesting


def _edge_files() -> dict[str, bytes | None]:
    row = json.dumps({"text": "the movie was great .", "label": "positive"}) + "\n"
    return {
        "empty.jsonl": b"", "empty.csv": b"", "empty.json": b"", "blank.jsonl": b"\n\n  \n",
        "huge-line.jsonl": (json.dumps({"text": "x" * (5 * 1024 * 1024), "label": "positive"}) + "\n").encode(),
        "huge-field.csv": b"text,label\n" + b"y" * (200 * 1024) + b",positive\n",
        "bom.jsonl": b"\xef\xbb\xbf" + row.encode(), "bom.csv": b"\xef\xbb\xbftext,label\nhi,positive\n",
        "nul.jsonl": row.encode()[:5] + b"\x00" + row.encode()[5:], "nul.csv": b"text,label\nh\x00i,positive\n",
        "latin1.jsonl": '{"text": "caf\xe9", "label": "positive"}\n'.encode("latin-1"),
        "utf16.jsonl": row.encode("utf-16"), "deep.jsonl": b"[" * 100_000 + b"\n", "deep.json": b"[" * 100_000,
        "nan.jsonl": b'{"text": NaN, "label": "positive"}\n', "bigint.jsonl": b'{"text": ' + b"9" * 5000 + b"}\n",
        "folder.jsonl": None, "dangling.jsonl": "link", "nothing.jsonl": "absent",
    }


@pytest.mark.parametrize("name", list(_edge_files()))
def test_edge_data_files(world, name):
    inputs = world.fresh_inputs()
    path = inputs / name
    content = _edge_files()[name]
    if content is None:
        path.mkdir()
    elif content == "link":
        path.symlink_to(inputs / "missing-target.jsonl")
    elif content != "absent":
        path.write_bytes(content)
    world.run_case("edge files (drift, train, suite golden)", "drift", "x:1", "--data", path, "--model", NO_MODEL,
                   ok_codes=(2,))
    world.run_case("edge files (drift, train, suite golden)", "train", "--train", path, "--model", NO_MODEL,
                   "--no-progress", ok_codes=(2,))
    suite = yaml.safe_load(world.suite.read_text())
    suite["golden"][0]["path"] = str(path)
    (inputs / "suite.yaml").write_text(yaml.safe_dump(suite))
    world.run_case("edge files (drift, train, suite golden)", "gate", "x:1", "--suite", inputs / "suite.yaml",
                   "--model", NO_MODEL, ok_codes=(2,))


@pytest.mark.parametrize("what", ["empty", "huge", "bom", "nul", "latin1", "utf16", "folder", "deep", "missing",
                                  "dotdot"])
def test_edge_suite_files(world, what):
    inputs = world.fresh_inputs()
    shutil.copytree(world.suite.parent, inputs / "suite")
    path = inputs / "suite" / "suite.yaml"
    text = world.suite.read_text()
    content = {"empty": b"", "huge": text.replace("name: toy-sentiment", "name: " + "n" * (5 * 1024 * 1024)).encode(),
               "bom": b"\xef\xbb\xbf" + text.encode(), "nul": text.encode()[:10] + b"\x00" + text.encode()[10:],
               "latin1": text.encode() + "# caf\xe9\n".encode("latin-1"), "utf16": text.encode("utf-16"),
               "deep": b"a: " + b"[" * 100_000}.get(what)
    if content is not None:
        path.write_bytes(content)
    elif what == "folder":
        path.unlink()
        path.mkdir()
    elif what == "missing":
        path.unlink()
    elif what == "dotdot":  # a golden set outside the suite's folder: read (if it exists), never written
        path.write_text(text.replace("path: golden.jsonl", "path: ../../../golden.jsonl"))
    code, out, err = world.run_case("edge suite files (gate --suite)", "gate", "x:1", "--suite", path,
                                    "--model", NO_MODEL, ok_codes=(2,))
    if what == "bom":  # a BOM is fine: the suite loads and the gate stops at the missing base model
        assert "base model folder not found" in err, err


@pytest.mark.parametrize("what", ["manifest-folder", "manifest-huge", "tensors-folder", "tensors-empty",
                                  "pickle", "symlink", "not-a-folder", "missing", "dotdot-folder"])
def test_edge_artifact_folders(world, what):
    folder = _copy_base(world)
    for name in os.listdir(folder):
        os.chmod(folder / name, 0o644)
    target = folder
    if what == "manifest-folder":
        (folder / "promptreg.json").unlink()
        (folder / "promptreg.json").mkdir()
    elif what == "manifest-huge":
        m = json.loads((folder / "promptreg.json").read_text())
        m["extra"] = {"blob": "z" * (8 * 1024 * 1024)}
        (folder / "promptreg.json").write_text(json.dumps(m))
    elif what == "tensors-folder":
        (folder / "soft_prompt.safetensors").unlink()
        (folder / "soft_prompt.safetensors").mkdir()
    elif what == "tensors-empty":
        (folder / "soft_prompt.safetensors").write_bytes(b"")
    elif what == "pickle":
        (folder / "weights.bin").write_bytes(b"\x80\x04K\x01.")
    elif what == "symlink":
        (folder / "link.json").symlink_to(world.root / "cwd")
    elif what == "not-a-folder":
        target = folder / "promptreg.json"
    elif what == "missing":
        target = folder / "nope"
    elif what == "dotdot-folder":
        target = Path("..") / ".." / "x"
    code, out, err = world.run_case("edge artifact folders (push)", "push", target, "--name", "fz-edge")
    if what == "manifest-huge":
        assert code == 0, err  # big but valid
    else:
        assert code == 2


def test_fuzz_case_counts(world):
    """Runs last (file order): every target ran the number of cases its settings ask for."""
    counts = {target: sum(c.values()) for target, c in CASES.items()}
    if len(counts) < 8 or SCALE != 1:
        pytest.skip("only part of the file ran, or PROMPTREG_FUZZ_SCALE changed the numbers")
    assert counts["refs"] >= 600 and counts["manifest (push promptreg.json)"] >= 700, counts
