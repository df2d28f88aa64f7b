"""Pure rules of event delivery on hand-built data: event types, subscriptions, backoff, signatures,
URL checks, settings (no database, no network)."""

from __future__ import annotations

import base64
import datetime as dt
import random
import time

import pytest

from promptreg.errors import InputError
from promptreg.registry.outbox import audit_payload, event_type
from promptreg.services.events import signing
from promptreg.services.events.config import EventSettings
from promptreg.services.events.http import _refused, parse_url, resolve
from promptreg.services.events.policy import (
    EVENT_TYPES,
    RetryPolicy,
    backoff_s,
    mirrored,
    next_step,
    parse_patterns,
    subscribed,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(("action", "details", "expected"), [
    ("push", {}, "push"), ("promote", {"gate_passed": True}, "promote"), ("alias.set", {}, "alias.set"),
    ("rollback", {}, "rollback"), ("drift.rollback", {}, "drift.rollback"), ("gate", {"passed": True}, "gate.passed"),
    ("gate", {"passed": False}, "gate.failed"), ("gate", {}, "gate.failed"), ("flag", {"status": "degraded"}, "drift.flag"),
    ("unflag", {}, "drift.unflag"), ("drift", {"decision": "none"}, "drift"), ("eval", {}, "eval"),
    ("env.set_base_model", {}, "env.set_base_model"), ("schedule.add", {}, "schedule.add"),
    ("token.create", {}, "token.create"),  # a future action is published under its own name
])
def test_event_type_of_every_audit_action(action, details, expected):
    assert event_type(action, details) == expected
    if expected != "token.create":
        assert expected in EVENT_TYPES


def test_payload_is_the_audit_event_and_the_prompt_name():
    from promptreg.registry.models import AuditEvent

    audit = AuditEvent(id=7, at=T0, actor="ann", action="promote", prompt_id=3, alias="production", from_version=1,
                       to_version=2, reason="better", details={"gate_id": 4, "gate_passed": True})
    p = audit_payload("evt_x", audit, "sentiment")
    assert p == {"schema": "promptreg.event/1", "id": "evt_x", "type": "promote", "timestamp": "2026-01-01T00:00:00Z",
                 "data": {"prompt": "sentiment", "alias": "production", "from_version": 1, "to_version": 2,
                          "actor": "ann", "action": "promote", "reason": "better", "audit_event_id": 7,
                          "details": {"gate_id": 4, "gate_passed": True}}}


def test_patterns():
    assert parse_patterns("promote, rollback,gate.*,promote") == ["promote", "rollback", "gate.*"]
    assert parse_patterns(["*"]) == ["*"]
    with pytest.raises(InputError, match="unknown event type 'promot'"):
        parse_patterns("promot")
    with pytest.raises(InputError, match="at least one"):
        parse_patterns(" , ")


def test_subscribed():
    later = T0 + dt.timedelta(seconds=1)
    assert subscribed(["promote"], None, "ann", "promote", "p", later, T0)
    assert not subscribed(["promote"], None, "ann", "rollback", "p", later, T0)
    assert subscribed(["gate.*"], None, "ann", "gate.failed", "p", later, T0)
    assert subscribed(["*"], "team-a.*", "ann", "push", "team-a.sentiment", later, T0)
    assert not subscribed(["*"], "team-a.*", "ann", "push", "team-b.sentiment", later, T0)
    assert not subscribed(["*"], "team-a.*", "ann", "env.set_base_model", None, later, T0)  # no prompt: no glob match
    assert not subscribed(["*"], None, "ann", "push", "p", T0, later)  # committed before the webhook existed


def test_mirrored_events():
    assert mirrored("promote", 1) and mirrored("gate.failed", 1) and mirrored("drift.flag", 1)
    assert not mirrored("promote", None) and not mirrored("schedule.add", 1) and not mirrored("webhook.add", None)


def test_backoff_doubles_is_capped_and_jittered():
    assert [backoff_s(n, 5, 3600, 0.0) for n in range(1, 6)] == [2.5, 5, 10, 20, 40]
    assert [backoff_s(n, 5, 3600, 0.999999) == pytest.approx(5 * 2 ** (n - 1), rel=1e-5) for n in (1, 2, 3)] == [True] * 3
    assert backoff_s(40, 5, 3600, 0.0) == 1800 and backoff_s(10_000, 5, 3600, 0.5) == 2700
    with pytest.raises(ValueError):
        backoff_s(0, 5, 60, 0.1)
    with pytest.raises(ValueError):
        backoff_s(1, 5, 60, 1.0)
    rng = random.Random(1)
    waits = [backoff_s(4, 1, 100, rng.random()) for _ in range(200)]
    assert 4 <= min(waits) < 4.5 and 7.5 < max(waits) < 8 and len(set(waits)) == 200  # spread over [4, 8)


def test_next_step_parks_as_dead_after_max_attempts():
    policy = RetryPolicy(base_s=1, max_s=10, max_attempts=3)
    status, when = next_step(1, policy, T0, random.Random(0))
    assert status == "pending" and T0 + dt.timedelta(seconds=0.5) <= when < T0 + dt.timedelta(seconds=1)
    assert next_step(2, policy, T0)[0] == "pending"
    assert next_step(3, policy, T0) == ("dead", None)
    assert next_step(1000, RetryPolicy(1, 10, 0), T0)[0] == "pending"  # 0: never dead


def test_signature_is_standard_webhooks():
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    secret = signing.new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    body = signing.body_bytes({"b": 1, "a": "é"})
    assert body == '{"a":"é","b":1}'.encode()
    now = int(time.time())
    headers = signing.headers(secret, "evt_1", now, body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type"}
    assert Webhook(secret).verify(body, headers) == {"a": "é", "b": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # replayed 10 minutes later
        Webhook(secret).verify(body, signing.headers(secret, "evt_1", now - 600, body))


def test_secret_at_rest(monkeypatch):
    monkeypatch.delenv("PROMPTREG_WEBHOOK_KEY", raising=False)
    with pytest.raises(InputError, match="PROMPTREG_WEBHOOK_KEY is not set"):
        signing.encrypt("whsec_x")
    old, new = signing.new_key(), signing.new_key()
    token = signing.encrypt("whsec_abc", {"PROMPTREG_WEBHOOK_KEY": old})
    assert "whsec_abc" not in token
    assert signing.decrypt(token, {"PROMPTREG_WEBHOOK_KEY": f"{new},{old}"}) == "whsec_abc"  # rotation
    with pytest.raises(Exception, match="does not hold the key"):
        signing.decrypt(token, {"PROMPTREG_WEBHOOK_KEY": new})
    with pytest.raises(InputError, match="not a valid Fernet key"):
        signing.encrypt("x", {"PROMPTREG_WEBHOOK_KEY": "short"})


@pytest.mark.parametrize("url", ["ftp://h/x", "http://", "http://u:p@example.com/", "http://example.com/#frag",
                                 "http://exa mple.com/", "https://example.com:99999/"])
def test_bad_urls(url):
    with pytest.raises(InputError):
        parse_url(url)


@pytest.mark.parametrize(("ip", "refused"), [
    ("127.0.0.1", True), ("10.1.2.3", True), ("192.168.0.1", True), ("172.16.5.5", True), ("169.254.169.254", True),
    ("100.64.0.1", True), ("0.0.0.0", True), ("::1", True), ("fe80::1", True), ("fc00::1", True),
    ("::ffff:127.0.0.1", True), ("224.0.0.1", True), ("8.8.8.8", False), ("2606:4700::1111", False),
])
def test_private_addresses_are_refused(ip, refused):
    import ipaddress

    assert _refused(ipaddress.ip_address(ip)) is refused


def test_loopback_host_refused_unless_allowed():
    target = parse_url("http://localhost:8080/hook?x=1")
    assert (target.host, target.port, target.path) == ("localhost", 8080, "/hook?x=1")
    with pytest.raises(InputError, match="private or loopback"):
        resolve(target, allow_private=False)
    assert resolve(target, allow_private=True) in ("127.0.0.1", "::1")


def test_event_settings(tmp_path):
    assert EventSettings.load(tmp_path, env={}) == EventSettings()
    (tmp_path / "promptreg.toml").write_text("[events]\nwebhook_allow_private = true\nmax_attempts = 3\n")
    cfg = EventSettings.load(tmp_path, env={"PROMPTREG_EVENTS_MAX_ATTEMPTS": "5"})
    assert cfg.webhook_allow_private is True and cfg.max_attempts == 5
    assert EventSettings.load(tmp_path, env={"PROMPTREG_WEBHOOK_ALLOW_PRIVATE": "0"}).webhook_allow_private is False
    assert cfg.mlflow_retry.max_attempts == 0 and cfg.webhook_retry.max_attempts == 5
    (tmp_path / "promptreg.toml").write_text("[events]\nmax_atempts = 3\n")
    with pytest.raises(InputError, match="unknown \\[events\\] setting"):
        EventSettings.load(tmp_path, env={})
    with pytest.raises(InputError, match="expected true or false"):
        EventSettings.load(tmp_path / "x", env={"PROMPTREG_WEBHOOK_ALLOW_PRIVATE": "maybe"})
    with pytest.raises(InputError, match="out of range"):
        EventSettings.load(tmp_path / "x", env={"PROMPTREG_WEBHOOK_TIMEOUT_S": "0"})
