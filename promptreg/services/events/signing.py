"""Standard Webhooks signatures and webhook secrets at rest.

Signing (https://www.standardwebhooks.com, the ``standardwebhooks`` package verifies it):

* secret: ``whsec_`` + base64 of 32 random bytes; the HMAC key is the decoded bytes;
* headers: ``webhook-id`` (the event id, the receiver's idempotency key), ``webhook-timestamp``
  (Unix seconds of this try), ``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(key,
  ``"{id}.{timestamp}.{body}"``));
* the body is the event's payload as compact JSON with sorted keys: every retry sends the same bytes.

At rest a secret is encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under the
key in PROMPTREG_WEBHOOK_KEY; several comma-separated keys rotate (the first encrypts, any decrypts).
A secret is printed once, by ``webhook add``, and never again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from typing import Any

from promptreg.errors import InputError, StoreUnavailableError
from promptreg.services.events.config import KEY_ENV

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _key_bytes(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError:
        raise InputError("a webhook secret is 'whsec_' followed by base64") from None
    if len(key) < 24:
        raise InputError("a webhook secret needs at least 24 random bytes")
    return key


def body_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(_key_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(timestamp)),
            "webhook-signature": sign(secret, msg_id, timestamp, body), "content-type": "application/json"}


# ----------------------------------------------------------------------------------------- at rest


def new_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode("ascii")


def _fernet(env: dict[str, str] | None = None):
    from cryptography.fernet import Fernet, MultiFernet

    raw = (os.environ if env is None else env).get(KEY_ENV, "")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        raise InputError(f"{KEY_ENV} is not set: webhook secrets are stored encrypted with it "
                         "(create one with `promptreg webhook keygen` and keep it with your other secrets)")
    try:
        return MultiFernet([Fernet(k.encode("ascii")) for k in keys])
    except (ValueError, UnicodeEncodeError):
        raise InputError(f"{KEY_ENV} is not a valid Fernet key (32 url-safe base64-encoded bytes; "
                         "`promptreg webhook keygen` makes one)") from None


def encrypt(secret: str, env: dict[str, str] | None = None) -> str:
    return _fernet(env).encrypt(secret.encode("utf-8")).decode("ascii")


def decrypt(token: str, env: dict[str, str] | None = None) -> str:
    from cryptography.fernet import InvalidToken

    try:
        return _fernet(env).decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise StoreUnavailableError(f"cannot decrypt the webhook secret: {KEY_ENV} does not hold the key it "
                                    "was encrypted with") from None


__all__ = ["SECRET_PREFIX", "body_bytes", "decrypt", "encrypt", "headers", "new_key", "new_secret", "sign"]
