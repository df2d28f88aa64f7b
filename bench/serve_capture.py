"""What traffic capture costs a request: ``promptreg serve`` (our runtime, the real FastAPI app on uvicorn,
loopback) with capture off vs ``--capture-rate 1.0`` (issue 18 part 3).

Set-up: a temporary embedded registry holding one prompt-tuning version (random weights, N virtual
tokens) of the base model; the serve app over ONE PromptRuntime (the model loaded once, the version
cached); ``--clients`` closed-loop clients, each on its own keep-alive HTTP connection, send single
``/v1/classify`` requests (review-like texts of 8-40 words). Conditions alternate round by round
(off, on, off, on, ...) so that drift of the shared machine hits both alike; each round sends
``--requests`` requests after ``--warmup`` unmeasured ones. With capture on, every answer is captured
(rate 1.0) into the local artifact store by the background flusher (``--flush-s``), the default
``--capture-max-bytes`` and no redaction hook.

Also measured in isolation (no server): the request-path work per captured request (``sample()`` +
building the row + ``offer()``) and the flusher's cost per row (JSON + one whole object per flush).

Prints ONE JSON object on stdout (progress on stderr): per condition the median / p90 / p99 latency
(ms) over all rounds, requests/s, the per-round medians, and the overhead of capture (median and p99
difference, ratio). Not a test.

Run: .venv/bin/python bench/serve_capture.py [--model smollm2|tiny|FOLDER] [--clients 4] [--requests 300]
[--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = ("the movie was great fun and the acting superb but the plot dragged on far too long with dull "
         "music weak jokes and a brilliant ending that made everything worth it").split()


def log(msg: str) -> None:
    print(f"[serve_capture] {msg}", file=sys.stderr, flush=True)


def texts(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(8, 40))) for _ in range(n)]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


class Served:
    """The serve app on uvicorn in a thread (as tests/test_serving.py runs it)."""

    def __init__(self, app) -> None:
        import uvicorn

        from tests.fixtures.services import free_port

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(60)


def load(port: int, ref: str, bodies: list[str], clients: int) -> tuple[list[float], float]:
    """Closed loop: ``clients`` threads share the bodies; latencies (s) and wall time."""
    lock, it, lat = threading.Lock(), iter(bodies), []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                text = next(it, None)
            if text is None:
                break
            body = json.dumps({"ref": ref, "text": text})
            t = time.perf_counter()
            conn.request("POST", "/v1/classify", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = resp.read()
            dt = time.perf_counter() - t
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {payload[:200]!r}")
            with lock:
                lat.append(dt)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - t0


def isolated_costs(store, n: int = 20_000) -> dict:
    """µs per captured request on the request path, and per row in the flusher."""
    from promptreg.runtime.capture import Capturer
    from promptreg.runtime.server import _iso_now, capture_row
    from promptreg.runtime.service import PromptRequest

    c = Capturer(store, rate=1.0, max_queue=n + 1)
    reqs = [PromptRequest("bench@production", t) for t in texts(n, seed=3)]
    res = {"name": "bench", "version": 1, "sha256": "a" * 64, "label": "positive",
           "probs": {"negative": 0.31, "positive": 0.69}}
    t = time.perf_counter()
    for i, req in enumerate(reqs):
        if c.sample():
            c.offer(capture_row("classify", f"{i:032x}", _iso_now(), req, res))
    path_us = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    written = c.flush()
    flush_us = (time.perf_counter() - t) / max(1, written) * 1e6
    return {"request_path_us_per_request": round(path_us, 2), "flusher_us_per_row": round(flush_us, 2),
            "rows": written, "objects": c.stats.objects}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="'smollm2' (default), 'tiny' (random tiny Llama) or a folder")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=300, help="measured requests per round")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="rounds per condition (alternating off/on)")
    ap.add_argument("--flush-s", type=float, default=1.0)
    ap.add_argument("--tokens", type=int, default=20, help="virtual tokens of the version")
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    args = ap.parse_args()

    import torch

    from promptreg import Registry
    from promptreg.runtime.capture import Capturer
    from promptreg.runtime.loader import resolve_model_path
    from promptreg.runtime.server import create_app
    from promptreg.runtime.service import PromptRuntime
    from tests.helpers import make_model_artifact

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(prefix="promptreg-bench-capture-") as tmp:
        tmp = Path(tmp)
        if args.model == "tiny":
            from tests.fixtures.models import build_tiny_llama

            model_dir = build_tiny_llama(tmp / "tiny")
        else:
            model_dir = resolve_model_path(args.model)
        reg = Registry(home=str(tmp / ".promptreg"))
        reg.push(make_model_artifact(tmp / "art", model_dir, method="prompt_tuning", n=args.tokens), "bench")
        reg.set_alias("bench", "production", 1)
        runtime = PromptRuntime(reg, model_dir, device="cpu")
        runtime.base()
        ref = "bench@production"
        lat: dict[str, list[float]] = {"off": [], "on": []}
        rounds: dict[str, list[dict]] = {"off": [], "on": []}
        captured = 0
        for r in range(args.rounds):
            for cond in ("off", "on"):
                capture = Capturer(reg.store, rate=1.0, flush_s=args.flush_s) if cond == "on" else None
                app = create_app(runtime, max_wait_ms=args.max_wait_ms, capture=capture)
                bodies = texts(args.warmup + args.requests, seed=100 * r + (cond == "on"))
                with Served(app) as srv:
                    load(srv.port, ref, bodies[:args.warmup], args.clients)
                    got, wall = load(srv.port, ref, bodies[args.warmup:], args.clients)
                if capture is not None:
                    captured += capture.stats.written
                lat[cond] += got
                rounds[cond].append({"median_ms": round(statistics.median(got) * 1e3, 3),
                                     "rps": round(len(got) / wall, 2)})
                log(f"round {r + 1} capture {cond}: median {statistics.median(got) * 1e3:.2f} ms, "
                    f"{len(got) / wall:.1f} req/s")
        summary = {}
        for cond, values in lat.items():
            summary[cond] = {"median_ms": round(statistics.median(values) * 1e3, 3),
                             "p90_ms": round(pct(values, 0.9) * 1e3, 3), "p99_ms": round(pct(values, 0.99) * 1e3, 3),
                             "rps_mean": round(statistics.mean(x["rps"] for x in rounds[cond]), 2),
                             "rounds": rounds[cond], "requests": len(values)}
        off, on = summary["off"], summary["on"]
        report = {
            "model": str(model_dir), "clients": args.clients, "requests_per_round": args.requests,
            "rounds": args.rounds, "flush_s": args.flush_s, "torch_threads": torch.get_num_threads(),
            "capture_off": off, "capture_on": on, "rows_captured": captured,
            "overhead": {"median_ms": round(on["median_ms"] - off["median_ms"], 3),
                         "median_ratio": round(on["median_ms"] / off["median_ms"], 4),
                         "p99_ms": round(on["p99_ms"] - off["p99_ms"], 3),
                         "rps_ratio": round(on["rps_mean"] / off["rps_mean"], 4)},
            "isolated": isolated_costs(reg.store),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
