"""generate, classify, serve: run registered soft prompts on the base model (promptreg.runtime.service).

Which base model: ``--model`` > settings ``base_model`` (``PROMPTREG_BASE_MODEL``) > the folder recorded in
the version's manifest when it still exists; a version trained on another base model is refused.
"""

from __future__ import annotations

import contextlib

import click

from promptreg.cli.completion import complete_ref
from promptreg.cli.output import emit_json, table

_MODEL_HELP = "Base model folder or 'smollm2' (default: PROMPTREG_BASE_MODEL, then the manifest's)."
_DEVICE_HELP = "auto, cpu, cuda or cuda:N."


def _runtime(obj, model, device, **kw):
    from promptreg.runtime.service import PromptRuntime

    return PromptRuntime(obj.get(), model=model, device=device, **kw)


def _raise_if_failed(result: dict) -> None:
    """A failed request becomes the command's one-line error (its own error class, exit 2)."""
    if "error" not in result:
        return
    from promptreg import errors

    cls = getattr(errors, result.get("error_type") or "", None)
    if not (isinstance(cls, type) and issubclass(cls, errors.PromptregError)):
        cls = errors.PromptregError
    raise cls(result["error"])


@click.command("generate")
@click.argument("ref", shell_complete=complete_ref)
@click.argument("text")
@click.option("--max-new-tokens", default=32, show_default=True, type=click.IntRange(0, 1024),
              help="Tokens to generate at most (greedy; stops at EOS).")
@click.option("--model", help=_MODEL_HELP)
@click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def generate_cmd(obj, ref, text, max_new_tokens, model, device, as_json):
    """Greedy continuation of TEXT with version REF (NAME@ALIAS, NAME:VERSION or NAME)."""
    (result,) = _runtime(obj, model, device).generate([{"ref": ref, "text": text, "max_new_tokens": max_new_tokens}])
    _raise_if_failed(result)
    if as_json:
        emit_json(result)
    else:
        click.echo(result["text"])
    return 0


@click.command("classify")
@click.argument("ref", shell_complete=complete_ref)
@click.argument("texts", nargs=-1, required=True)
@click.option("--model", help=_MODEL_HELP)
@click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (one object per text).")
@click.pass_obj
def classify_cmd(obj, ref, texts, model, device, as_json):
    """Classify each TEXT with version REF: the predicted label and the probability of every label."""
    results = _runtime(obj, model, device).classify([{"ref": ref, "text": t} for t in texts])
    for result in results:
        _raise_if_failed(result)
    if as_json:
        emit_json([{**r, "input": t} for r, t in zip(results, texts, strict=True)])
        return 0
    first = results[0]
    click.echo(f"{first['name']}:{first['version']}  sha256 {first['sha256'][:12]}")
    labels = list(first["probs"])
    table(["text", "label", *labels],
          [[t if len(t) <= 60 else t[:57] + "...", r["label"], *(f"{r['probs'][lab]:.4f}" for lab in labels)]
           for t, r in zip(texts, results, strict=True)])
    return 0


@contextlib.contextmanager
def _quiet_after_shutdown():
    """uvicorn shuts down gracefully on SIGTERM / SIGINT, then re-raises the signal with the handlers it found
    installed; no-op handlers make that a normal exit (status 0) instead of death by signal."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _authenticator(obj, host: str, no_auth: bool):
    """What checks a request's ``Authorization`` header: the registry's API tokens, read from its
    database (direct mode) or verified by the registry server (remote mode). None with --no-auth,
    which only a loopback --host may use."""
    import ipaddress

    from promptreg.errors import InputError

    if no_auth:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise InputError(f"--no-auth only on a loopback --host (127.0.0.1, ::1, localhost), not {host}")
        click.echo("warning: serving WITHOUT authentication (--no-auth)", err=True)
        return None
    from promptreg.server.auth import Authenticator

    if obj.remote:
        from promptreg.client.verify import RemoteTokens

        auth = Authenticator(RemoteTokens(obj.settings.url))
    else:
        from promptreg.server.tokens import TokenStore

        auth = Authenticator(TokenStore(obj.get().engine))
    return lambda header: auth.cached(header) or auth.authenticate(header)


def _check_port(host: str, port: int) -> None:
    """One clear line when the address cannot be bound (before the model is loaded)."""
    import socket

    from promptreg.errors import InputError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _capturer(obj, rate, hook, regex, max_bytes, flush_s, seed, store_uri):
    """The serve command's Capturer (None when --capture-rate is 0); a bad option is a one-line error before
    the model loads."""
    from promptreg.errors import InputError
    from promptreg.runtime.capture import Capturer, chain, load_hook, regex_redactor

    if rate <= 0:
        if hook or regex or store_uri:
            raise InputError("--capture-redact/--capture-redact-regex/--capture-store need --capture-rate > 0")
        return None
    redact = chain(regex_redactor(list(regex)) if regex else None, load_hook(hook) if hook else None)
    registry = obj.get()
    if store_uri:
        from promptreg.registry.store import open_store

        store = open_store(store_uri, s3_endpoint_url=registry.settings.s3_endpoint_url)
    elif getattr(registry, "remote", False):
        raise InputError("in remote mode serve cannot see the server's artifact store: pass --capture-store URI "
                         "(the store the promptreg server uses)")
    else:
        store = registry.store
    store.check()
    return Capturer(store, rate=rate, redact=redact, max_bytes=max_bytes, seed=seed, flush_s=flush_s)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (loopback by default).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--model", help="Base model folder or 'smollm2' (default: PROMPTREG_BASE_MODEL).")
@click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP)
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(1, 4096),
              help="Most requests in one mixed batch.")
@click.option("--max-wait-ms", default=10.0, show_default=True, type=click.FloatRange(0, 10_000),
              help="How long the batcher waits for more requests after the first one.")
@click.option("--alias-ttl", "alias_ttl_s", default=2.0, show_default=True, type=click.FloatRange(0, 3600),
              help="Seconds an alias resolution is reused (a promote/rollback takes effect within it).")
@click.option("--max-versions", default=64, show_default=True, type=click.IntRange(1, 100_000),
              help="Versions kept in the LRU cache.")
@click.option("--max-cache-mb", default=256.0, show_default=True, type=click.FloatRange(0, 1e6),
              help="Tensor megabytes (MiB) kept in the LRU cache.")
@click.option("--engine", default="promptreg", show_default=True, type=click.Choice(["promptreg", "vllm"]),
              help="promptreg: own runtime, every method. vllm: input-level versions (prompt tuning, P-tuning) as "
                   "vLLM prompt embeddings (runtime.vllm_engine; prefix tuning / ID-SPAM refused).")
@click.option("--vllm-url", help="vllm engine: a running vLLM OpenAI-compatible server (started with "
                                 "--enable-prompt-embeds) instead of an in-process engine.")
@click.option("--vllm-api-key", envvar="PROMPTREG_VLLM_API_KEY", help="That server's --api-key.")
@click.option("--vllm-dtype", default="float32", show_default=True,
              help="In-process vllm engine: dtype (float32 answers as the own runtime does; bfloat16 is faster).")
@click.option("--max-model-len", default=2048, show_default=True, type=click.IntRange(16, 1 << 20),
              help="In-process vllm engine: context length (prompt + new tokens).")
@click.option("--vllm-kv-cache-mb", type=click.FloatRange(1, 1e7),
              help="In-process vllm engine: KV cache size in MiB (default: vLLM's own rule).")
@click.option("--no-auth", is_flag=True,
              help="Serve without authentication (loopback --host only: local experiments). By default every "
                   "route but /healthz needs a registry API token (Authorization: Bearer prt_...).")
@click.option("--capture-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Share of answered requests captured (request, response, request id) into the artifact store "
                   "under captures/ (0: off). Drift checks read them with --data captured.")
@click.option("--capture-redact", "capture_hook", metavar="MODULE:FUNCTION",
              help="Redaction hook: called with each captured row (a dict), returns it redacted or None to drop it.")
@click.option("--capture-redact-regex", "capture_regex", multiple=True, metavar="PATTERN",
              help="Replace matches in the captured text by [REDACTED] (repeatable; applied before the hook).")
@click.option("--capture-max-bytes", default=64 * 1024, show_default=True, type=click.IntRange(256, 1 << 26),
              help="Largest captured row (JSON bytes): longer texts are cut and the row marked truncated.")
@click.option("--capture-flush-s", default=5.0, show_default=True, type=click.FloatRange(0.05, 3600),
              help="Seconds between two writes of the captured rows (one object per prompt version and hour).")
@click.option("--capture-seed", type=int, help="Seed of the capture sampler (default: random).")
@click.option("--capture-store", help="Artifact store URI to capture into (default: the registry's; required in "
                                      "remote mode: the server's store).")
@click.pass_obj
def serve_cmd(obj, host, port, model, device, max_batch, max_wait_ms, alias_ttl_s, max_versions, max_cache_mb, engine,
              vllm_url, vllm_api_key, vllm_dtype, max_model_len, vllm_kv_cache_mb, capture_rate, capture_hook,
              capture_regex, capture_max_bytes, capture_flush_s, capture_seed, capture_store, no_auth):
    """HTTP server: POST /v1/classify, /v1/generate, /feedback; GET /healthz, /metrics. Stops cleanly on
    SIGTERM/Ctrl-C (captured rows still queued are written first)."""
    from promptreg.errors import InputError

    authenticate = _authenticator(obj, host, no_auth)
    capture = _capturer(obj, capture_rate, capture_hook, capture_regex, capture_max_bytes, capture_flush_s,
                        capture_seed, capture_store)

    cache = dict(alias_ttl_s=alias_ttl_s, max_versions=max_versions, max_bytes=int(max_cache_mb * 2**20))
    if engine == "vllm":
        from promptreg.runtime.vllm_engine import start_vllm_runtime

        _check_port(host, port)
        kv = None if vllm_kv_cache_mb is None else int(vllm_kv_cache_mb * 2**20)
        runtime = start_vllm_runtime(obj.get(), model, url=vllm_url,
                                     api_key=vllm_api_key, dtype=vllm_dtype, max_model_len=max_model_len,
                                     kv_cache_bytes=kv, **cache)
    else:
        runtime = _runtime(obj, model, device, **cache)
    if not runtime.model_arg:
        raise InputError("serve needs a base model: pass --model PATH (or 'smollm2') or set PROMPTREG_BASE_MODEL")
    _check_port(host, port)
    base = runtime.base()  # load now: a bad model is a one-line error before the port opens
    import uvicorn

    from promptreg.runtime.server import create_app

    app = create_app(runtime, max_batch=max_batch, max_wait_ms=max_wait_ms, capture=capture,
                     authenticate=authenticate)
    click.echo(f"serving base model {base.folder} ({base.fingerprint[:12]}, {engine} engine on {base.device}) on "
               f"http://{host}:{port} "
               f"(max batch {max_batch}, max wait {max_wait_ms:g} ms, alias TTL {alias_ttl_s:g} s)", err=True)
    if capture is not None:
        click.echo(f"capturing {capture_rate:g} of the answered requests into {capture.store.describe()} "
                   "under captures/", err=True)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    try:
        with _quiet_after_shutdown():
            server.run()
    except (OSError, SystemExit) as exc:  # uvicorn exits 1 when it cannot bind
        raise InputError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        if engine == "vllm":
            runtime.close()
    if not server.started:
        raise InputError(f"the server on {host}:{port} did not start (port in use?)")
    return 0
