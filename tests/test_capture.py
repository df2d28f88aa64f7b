"""Traffic capture (issue 18 part 3), without a model: small whole objects in both stores, the capturer
(sampling rate, seeded fractions, redaction, max bytes, one object per prompt version and hour, nothing
partial visible, a failing store never raising), the captures layout, reading captured rows with their
feedback labels over a window, and gc's retention of captured traffic."""

from __future__ import annotations

import datetime as dt
import json
import os
import random

import pytest

from promptreg import Registry
from promptreg.errors import InputError, StoreUnavailableError
from promptreg.registry import captures as cap
from promptreg.registry.store import LocalStore, open_store
from promptreg.runtime.capture import Capturer, chain, fit, load_hook, regex_redactor

T0 = dt.datetime(2026, 11, 30, 14, 5, tzinfo=dt.UTC)


def _row(i: int, *, at: dt.datetime = T0, prompt: str = "toy", version: int = 1, text: str | None = None,
         ref: str = "toy@production") -> dict:
    return {"request_id": f"{i:032x}", "ts": at.isoformat(), "endpoint": "classify", "ref": ref, "prompt": prompt,
            "version": version, "sha256": "a" * 64, "text": text if text is not None else f"review number {i}",
            "prediction": "positive", "probs": {"positive": 0.7, "negative": 0.3}}


def _lines(store, prefix="captures/") -> list[dict]:
    return [r for o in store.list_objects(prefix) for r in cap.read_rows(store, o.key)]


# ----- store objects ---------------------------------------------------------------------------------------
def _exercise_objects(store) -> None:
    key = "captures/toy/v1/date=2026-11-30/14-" + "b" * 32 + ".jsonl"
    store.put_object(key, b'{"a":1}\n')
    store.put_object("captures/toy/v2/date=2026-11-30/15-" + "c" * 32 + ".jsonl", b'{"a":2}\n')
    assert store.get_object(key) == b'{"a":1}\n'
    listed = store.list_objects("captures/toy/")
    assert [o.key.split("/")[2] for o in listed] == ["v1", "v2"] and all(o.size == 8 for o in listed)
    assert [o.key for o in store.list_objects("captures/toy/v1/")] == [key]
    assert store.list_objects("captures/other/") == []
    store.delete_objects([key, key])                       # a missing one is not an error
    assert [o.key.split("/")[2] for o in store.list_objects("captures/")] == ["v2"]
    for bad in ("../x", "/abs", "sha256/ab/x", "captures/.hidden/x", "captures//x"):
        with pytest.raises(InputError):
            store.put_object(bad, b"x")


def test_local_store_objects_are_whole_and_never_partial(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")
    _exercise_objects(store)
    assert not store.list_shas()                            # the content-addressed tree is untouched
    # a write that dies before its rename leaves nothing at the key (its temp file is removed)
    real_rename = os.rename

    def dies(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "rename", dies)
    with pytest.raises(StoreUnavailableError):
        store.put_object("captures/toy/v3/date=2026-11-30/14-" + "d" * 32 + ".jsonl", b"x" * 100)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not store.list_objects("captures/toy/v3/") and not list((tmp_path / "store" / ".tmp").iterdir())


def test_s3_store_objects(s3_env):
    store = open_store(f"s3://{s3_env.new_bucket()}/team", s3_endpoint_url=s3_env.endpoint)
    _exercise_objects(store)
    keys = [o["Key"] for o in s3_env.client().list_objects_v2(Bucket=store.bucket)["Contents"]]
    assert all(k.startswith("team/captures/") for k in keys)


# ----- pure helpers ----------------------------------------------------------------------------------------
def test_fit_cuts_the_longest_text_utf8_safely_and_drops_what_cannot_fit():
    small = _row(1)
    assert fit(small, 10_000) is small
    big = _row(2, text="é€" * 3000)                           # multibyte: the cut must stay valid UTF-8
    out = fit(big, 1024)
    assert out["truncated"] is True and out is not big and big["text"] == "é€" * 3000
    line = json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(line) <= 1024 and len(line) > 900 and "é€".startswith(out["text"][:2])
    huge_probs = {**_row(3), "probs": {f"label{i}": 0.001 for i in range(200)}}
    assert fit(huge_probs, 512) is None                      # no text left to cut


def test_redaction_hooks(monkeypatch, tmp_path):
    rx = regex_redactor([r"\b\d{4}-\d{4}\b", r"[\w.]+@[\w.]+"])
    row = rx({"text": "card 1234-5678 mail bob@example.com", "generated": "ok 9999-0000"})
    assert row == {"text": "card [REDACTED] mail [REDACTED]", "generated": "ok [REDACTED]"}
    (tmp_path / "myhooks.py").write_text("def drop_secret(row):\n    return None if 'secret' in row['text'] else row\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    hook = chain(rx, load_hook("myhooks:drop_secret"))
    assert hook({"text": "a secret"}) is None and hook({"text": "x 1111-2222"}) == {"text": "x [REDACTED]"}
    for spec, msg in (("nope", "MODULE:FUNCTION"), ("no_such_mod_xyz:f", "cannot import"), ("myhooks:zz", "has no")):
        with pytest.raises(InputError, match=msg):
            load_hook(spec)
    with pytest.raises(InputError, match="invalid pattern"):
        regex_redactor(["("])


def test_capture_keys_parse_and_expire():
    key = cap.rows_key("toy.v2-x", 3, T0)
    obj = cap.parse_key(key, 10)
    assert key.startswith("captures/toy.v2-x/v3/date=2026-11-30/14-") and key.endswith(".jsonl")
    assert (obj.kind, obj.prompt, obj.version, obj.hour) == ("rows", "toy.v2-x", 3, T0.replace(minute=0))
    fb = cap.parse_key(cap.feedback_key(T0))
    assert fb.kind == "feedback" and fb.prompt is None
    assert cap.parse_key("captures/toy/v1/date=2026-13-40/14-" + "a" * 32 + ".jsonl") is None
    assert cap.parse_key("captures/toy/notes.txt") is None
    old = cap.parse_key(cap.rows_key("toy", 1, T0 - dt.timedelta(days=8)))
    edge = cap.parse_key(cap.rows_key("toy", 1, T0 - dt.timedelta(days=7)))   # its hour ends after the cutoff
    assert cap.expired([old, edge, obj], 7, T0) == [old]


# ----- the capturer ----------------------------------------------------------------------------------------
def test_rate_one_writes_every_row_one_object_per_version_and_hour(tmp_path):
    store = LocalStore(tmp_path / "store")
    c = Capturer(store, rate=1.0, flush_s=3600)
    rows = [_row(i) for i in range(5)] + [_row(5, version=2)] + [_row(6, at=T0 + dt.timedelta(hours=1))]
    for r in rows:
        assert c.sample() and c.offer(r)
    assert c.flush() == 7 and c.stats.objects == 3
    keys = [o.key for o in store.list_objects("captures/")]
    assert [k.split("/")[2:4] for k in keys] == [["v1", "date=2026-11-30"], ["v1", "date=2026-11-30"],
                                                  ["v2", "date=2026-11-30"]]
    assert sorted(k.split("/")[4][:2] for k in keys) == ["14", "14", "15"]
    assert sorted(r["request_id"] for r in _lines(store)) == sorted(r["request_id"] for r in rows)
    assert c.flush() == 0                                    # nothing twice
    c.close()


def test_rate_zero_never_samples_and_a_seeded_fraction_is_reproducible(tmp_path):
    zero = Capturer(LocalStore(tmp_path / "s0"), rate=0.0)
    assert not any(zero.sample() for _ in range(1000))
    picks = [Capturer(LocalStore(tmp_path / "s"), rate=0.25, seed=7) for _ in range(2)]
    a, b = ([c.sample() for _ in range(2000)] for c in picks)
    rng = random.Random(7)
    assert a == b == [rng.random() < 0.25 for _ in range(2000)]
    assert 0.2 < sum(a) / 2000 < 0.3
    with pytest.raises(InputError):
        Capturer(LocalStore(tmp_path / "s"), rate=1.5)


def test_redaction_and_max_bytes_are_applied_before_anything_is_written(tmp_path, monkeypatch):
    (tmp_path / "redact_hooks.py").write_text(
        "def hook(row):\n"
        "    if 'drop me' in row['text']:\n        return None\n"
        "    if 'boom' in row['text']:\n        raise RuntimeError('hook failed')\n"
        "    row['text'] = row['text'].replace('Alice', '<name>')\n    return row\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    store = LocalStore(tmp_path / "store")
    c = Capturer(store, rate=1.0, max_bytes=600, flush_s=3600,
                 redact=chain(regex_redactor([r"\d{3}-\d{4}"]), load_hook("redact_hooks:hook")))
    for i, text in enumerate(["Alice called 555-1234", "please drop me", "boom", "x" * 5000, "fine"]):
        c.offer(_row(i, text=text))
    c.close()
    got = {r["request_id"][-1]: r for r in _lines(store)}
    assert sorted(got) == ["0", "3", "4"]
    assert got["0"]["text"] == "<name> called [REDACTED]"
    assert got["3"]["truncated"] is True and 0 < len(got["3"]["text"]) < 600
    raw = store.get_object(store.list_objects("captures/")[0].key)
    assert all(len(line) <= 600 for line in raw.split(b"\n"))
    assert (c.stats.redacted_out, c.stats.redact_failed, c.stats.truncated, c.stats.written) == (1, 1, 1, 3)


def test_a_failing_store_drops_rows_counted_and_never_raises(tmp_path, caplog):
    store = LocalStore(tmp_path / "store")

    def broken(key, data):
        raise StoreUnavailableError("artifact store folder is not usable: disk full")
    store.put_object = broken
    c = Capturer(store, rate=1.0, flush_s=0.05).start()
    for i in range(3):
        c.offer(_row(i))
    c.close()
    assert c.stats.write_failed == 3 and c.stats.written == 0
    assert sum("not written" in r.message for r in caplog.records) == 1      # logged once per distinct error


def test_a_full_queue_drops_instead_of_waiting(tmp_path):
    c = Capturer(LocalStore(tmp_path / "store"), rate=1.0, max_queue=2)
    assert [c.offer(_row(i)) for i in range(4)] == [True, True, False, False]
    assert c.stats.dropped_queue_full == 2


# ----- reading captures for drift, with feedback ---------------------------------------------------------
def test_read_captured_filters_by_ref_and_window_and_joins_feedback(tmp_path):
    from promptreg.services.drift.captured import parse_since, read_captured

    reg = Registry(home=str(tmp_path / ".promptreg"))
    now = dt.datetime.now(dt.UTC)
    c = Capturer(reg.store, rate=1.0)
    for i in range(6):
        c.offer(_row(i, at=now - dt.timedelta(minutes=30 - i), version=1 + i % 2))          # via the alias
    c.offer(_row(10, at=now - dt.timedelta(minutes=5), ref="toy:1"))                      # not via the alias
    c.offer(_row(11, at=now - dt.timedelta(days=3)))                                     # outside 24 h
    c.feedback({"request_id": f"{1:032x}", "label": "negative", "ts": now.isoformat()})
    c.feedback({"request_id": f"{2:032x}", "label": "positive", "ts": (now - dt.timedelta(seconds=5)).isoformat()})
    c.feedback({"request_id": f"{1:032x}", "label": "positive", "ts": (now + dt.timedelta(seconds=1)).isoformat()})
    c.close()
    data = read_captured(reg, "toy@production", "captured")
    assert [r["text"] for r in data.rows] == [f"review number {i}" for i in range(6)]     # capture order
    assert [r.get("label") for r in data.rows] == [None, "positive", "positive", None, None, None]  # newest wins
    assert data.labelled == 2 and data.versions == [1, 2]
    assert len(read_captured(reg, "toy:1", "captured").rows) == 4                       # v1, whatever the ref
    assert len(read_captured(reg, "toy@production", "captured:7d").rows) == 7
    assert len(read_captured(reg, "toy@production", "captured", since=now - dt.timedelta(minutes=27)).rows) == 3
    with pytest.raises(InputError, match="no captured traffic of toy@staging"):
        read_captured(reg, "toy@staging", "captured")
    assert parse_since("captured:2026-11-01", now) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert parse_since("captured:90m", now) == now - dt.timedelta(minutes=90)
    with pytest.raises(InputError, match="duration"):
        parse_since("captured:yesterday", now)


# ----- gc retention ------------------------------------------------------------------------------------------
def test_gc_deletes_expired_captures_only(tmp_path, monkeypatch):
    from promptreg.services.gc import configured_retention_days

    reg = Registry(home=str(tmp_path / ".promptreg"))
    now = dt.datetime.now(dt.UTC)
    c = Capturer(reg.store, rate=1.0)
    for i, age in enumerate((40, 31, 29, 0)):
        c.offer(_row(i, at=now - dt.timedelta(days=age)))
    c.feedback({"request_id": f"{0:032x}", "label": "positive", "ts": (now - dt.timedelta(days=35)).isoformat()})
    c.close()
    assert len(reg.store.list_objects("captures/")) == 5
    dry = reg.gc(min_age_s=0)
    assert (dry.captures.objects, dry.captures.expired, dry.captures.deleted) == (5, 3, 0)
    assert dry.to_dict()["captures"]["retention_days"] == 30
    assert len(reg.store.list_objects("captures/")) == 5                             # a dry run deletes nothing
    kept = reg.gc(min_age_s=0, delete=True, capture_retention_days=0)                  # 0: kept for ever
    assert kept.captures.deleted == 0
    done = reg.gc(min_age_s=0, delete=True)
    assert done.captures.deleted == 3
    left = sorted(r["request_id"][-1] for r in _lines(reg.store))
    assert left == ["2", "3"]
    monkeypatch.setenv("PROMPTREG_CAPTURE_RETENTION_DAYS", "1")
    assert configured_retention_days(tmp_path) == 1.0
    monkeypatch.delenv("PROMPTREG_CAPTURE_RETENTION_DAYS")
    (tmp_path / "promptreg.toml").write_text("[capture]\nretention_days = 14\n")
    assert configured_retention_days(tmp_path) == 14.0
    (tmp_path / "promptreg.toml").write_text("[capture]\nretention_days = 'soon'\n")
    with pytest.raises(InputError, match="retention_days"):
        configured_retention_days(tmp_path)


# ----- the command line -------------------------------------------------------------------------------------
def _main(home, *args) -> int:
    from promptreg.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["--home", str(home), *map(str, args)])
    return exc.value.code


def test_serve_capture_options_fail_in_one_line_before_the_model_loads(tmp_path, capsys):
    home = tmp_path / ".promptreg"
    for args, msg in ((["--capture-redact", "m:f"], "need --capture-rate > 0"),
                      (["--capture-rate", "0.5", "--capture-redact", "no_such_module_q:f"], "cannot import"),
                      (["--capture-rate", "0.5", "--capture-redact-regex", "("], "invalid pattern"),
                      (["--capture-rate", "2"], "--capture-rate")):
        assert _main(home, "serve", "--model", tmp_path / "missing", *args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and msg in err[0], (args, err)


def test_gc_prints_and_json_reports_the_captures(tmp_path, capsys):
    home = tmp_path / ".promptreg"
    reg = Registry(home=str(home))
    c = Capturer(reg.store, rate=1.0)
    now = dt.datetime.now(dt.UTC)
    c.offer(_row(1, at=now - dt.timedelta(days=10)))
    c.offer(_row(2, at=now))
    c.close()
    assert _main(home, "gc", "--capture-retention-days", "7") == 0
    out = capsys.readouterr().out
    assert "captures: 2 objects" in out and "retention 7 days: 1 expired, dry run" in out, out
    assert _main(home, "gc", "--capture-retention-days", "7", "--yes", "--json") == 0
    got = json.loads(capsys.readouterr().out)["captures"]
    assert (got["objects"], got["expired"], got["deleted"], got["retention_days"]) == (2, 1, 1, 7)
