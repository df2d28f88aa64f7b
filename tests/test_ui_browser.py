"""``promptreg ui`` and what a reviewer sees in the MLflow UI, checked in a real browser.

The browser test builds a registry on the embedded default with the tiny model (two versions, both
promoted to ``production`` through the gate, so v2 holds it and v1 held it), starts the UI exactly as
a user does (``promptreg ui --port P --no-browser``: a subprocess in its own process group), and drives
headless Debian ``chromium`` with Playwright (loopback only). It asserts: the ``production`` alias sits
on version 2's row of the registered model, version 2's page shows the ``promptreg.*`` tags (aliases,
gate verdict, status) and the markdown description (gate table, links), the source run shows the
evaluation metric and the per-example evaluation table (MLflow's "View as table"), the eval run in
``promptreg/toy/eval`` is reachable from the description's link, and ``SIGTERM`` to ``promptreg ui``
stops the server. Screenshots go to ``tests/artifacts/ui/``.

Chromium (``apt-get install -y chromium``) and Playwright for Python (``pip install playwright``; no
``playwright install``: the system chromium is used) are installed by ``make test``; without them the
test FAILS, saying so.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from promptreg import Registry
from promptreg.artifact.builder import write_artifact
from promptreg.evaluation.suite import load_suite
from promptreg.services.evaluate import Evaluator
from promptreg.services.lifecycle import promote
from tests.fixtures.services import free_port
from tests.helpers import TEMPLATE, prompt_shape, write_suite

CHROMIUM = os.environ.get("PROMPTREG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = Path(__file__).parent / "artifacts" / "ui"
SUITE = "toy-sentiment"
UI_TIMEOUT_S = 120
PAGE_TIMEOUT_MS = 60_000

# `promptreg` itself, with the `ui` command registered if the CLI does not list it (yet).
PROMPTREG_MAIN = ("from promptreg.cli.main import cli, main\n"
                  "from promptreg.cli.ui_cmds import ui_cmd\n"
                  "cli.commands.setdefault('ui', ui_cmd)\n"
                  "main()\n")
_CLEAN_ENV = ("PROMPTREG_HOME", "PROMPTREG_DB_URL", "MLFLOW_TRACKING_URI", "PROMPTREG_ARTIFACT_URI",
              "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "PROMPTREG_MLFLOW_ARTIFACT_URI")


def promptreg_argv(*args: str) -> list[str]:
    return [sys.executable, "-c", PROMPTREG_MAIN, *map(str, args)]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}


def ui_artifact(dest: Path, model_dir: Path, *, seed: int) -> Path:
    """A sentiment soft prompt for the tiny model (real fingerprint) whose manifest also carries a
    dataset and a Great Expectations validation summary, as `promptreg train` writes them."""
    from promptreg.fingerprints.model import model_fingerprint

    info = model_fingerprint(model_dir).to_dict()
    base = {k: info[k] for k in ("fingerprint", "name_or_path", "model_type", "hidden_size", "num_hidden_layers",
                                 "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size")}
    base["name_or_path"] = str(model_dir)
    rng = np.random.default_rng(seed)
    tensors = {"prompt_embeddings": rng.standard_normal(prompt_shape("prefix_tuning", base, 4)).astype(np.float32)}
    return write_artifact(
        dest, method="prefix_tuning", tensors=tensors, base_model=base,
        task={"type": "classification", "template": TEMPLATE,
              "verbalizer": {"positive": [" positive"], "negative": [" negative"]}},
        method_config={"init": "random", "seed": seed}, metrics={"eval_accuracy": 0.5, "test_accuracy": 0.5},
        dataset={"fingerprint": f"{seed:064x}", "name": "toy-reviews", "source": "/data/toy-reviews.jsonl",
                 "rows": 40},
        validation={"success": True, "failures": [],
                    "warnings": ["train: text length: 1 row(s) longer than 400 characters"],
                    "stats": {"splits": {"train": {"rows": 40}, "eval": {"rows": 10}},
                              "expectations": {"evaluated": 14, "failed": 1}}},
        created_by="tests")


@pytest.fixture
def promoted(tmp_path, tiny_model_dir):
    """toy:1 then toy:2 promoted to production through the gate (same predictions: v2 passes vs v1)."""
    reg = Registry(home=str(tmp_path / ".promptreg"))
    for v, seed in ((1, 0), (2, 5)):
        assert reg.push(ui_artifact(tmp_path / f"art{v}", tiny_model_dir, seed=seed), "toy",
                        description="Toy sentiment soft prompt").version.version == v
    suite = load_suite(write_suite(tmp_path / "suite", positive_share=0.75, accuracy="{margin: 0.02}"))
    ev = Evaluator(reg, model=tiny_model_dir)
    promote(reg, "toy:1", "production", suite=suite, evaluator=ev)
    moved = promote(reg, "toy:2", "production", suite=suite, evaluator=ev)
    assert moved.gate is not None and moved.gate.passed and moved.previous == 1
    assert ev.warnings == []
    return reg


# ------------------------------------------------------------------------------------------ the UI process


class UiProcess:
    """``promptreg ui`` as a user runs it: its own process group; stopped with SIGTERM (forwarded to
    the mlflow server it started), killed with everything it started if that does not work."""

    def __init__(self, home: Path, port: int, cwd: Path):
        self.port = port
        self.proc = subprocess.Popen(promptreg_argv("--home", home, "ui", "--port", port, "--no-browser"),
                                     cwd=cwd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.url = self._read_url()

    def _read_url(self) -> str:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + UI_TIMEOUT_S
        while time.monotonic() < deadline:
            if sel.select(timeout=1.0):
                line = self.proc.stdout.readline()
                if line.startswith("MLflow UI: "):
                    return line.split("MLflow UI: ", 1)[1].strip()
                if not line and self.proc.poll() is not None:
                    break
        raise AssertionError(f"`promptreg ui` printed no URL (exit {self.proc.poll()}): {self._stderr()}")

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read()[-2000:]

    def _descendant_groups(self) -> set[int]:
        groups = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:       # ppid
                groups.add(int(fields[2]))            # pgrp
        return groups

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM to ``promptreg ui`` only (not its group): it must stop the server itself."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("`promptreg ui` did not exit within 40 s of SIGTERM") from None

    def kill(self) -> None:
        for pgid in self._descendant_groups() | {self.proc.pid}:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


# ------------------------------------------------------------------------------------------ browser helpers


def _require_browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is not installed: `make test` installs it (pip install playwright); "
                    "the browser test cannot run without it")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"chromium not found at {CHROMIUM}: `make test` installs it (apt-get install -y chromium); "
                    "the browser test cannot run without it")
    return sync_playwright


def _shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _close_assistant(page) -> None:
    """The MLflow Assistant side panel hides part of the page in screenshots: close it if it is there."""
    try:
        button = page.get_by_role("button", name="Close")
        if button.count():
            button.first.click(timeout=2000)
    except Exception:  # noqa: BLE001 - purely cosmetic
        pass


def _aliases_cell(page, version: int):
    """The 'Aliases' cell of a version's row in the registered model's version table."""
    header = page.get_by_role("row").filter(has=page.get_by_role("columnheader", name="Aliases")).first
    names = [h.strip() for h in header.get_by_role("columnheader").all_inner_texts()]
    index = next(i for i, n in enumerate(names) if n.startswith("Aliases"))
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Version {version}", exact=True)).first
    return row.get_by_role("cell").nth(index)


def _tag_row(page, key: str):
    return page.get_by_role("row").filter(has=page.get_by_text(key, exact=True)).first


# ------------------------------------------------------------------------------------------ the test


@pytest.mark.integration
def test_mlflow_ui_shows_aliases_tags_metrics_and_tables(promoted, tmp_path):
    sync_playwright = _require_browser()
    from playwright.sync_api import expect

    reg = promoted
    v2 = reg.show("toy:2")
    assert v2.aliases == ["production"] and v2.mlflow_model_version == "2"
    source_run = v2.mlflow_run_id
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=reg.settings.tracking_uri)
    source_exp = client.get_run(source_run).info.experiment_id
    eval_exp = client.get_experiment_by_name("promptreg/toy/eval")
    assert eval_exp is not None

    for old in SHOTS.glob("*.png"):
        old.unlink()
    ui = UiProcess(tmp_path / ".promptreg", free_port(), cwd=tmp_path)
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", ui.url), ui.url
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1800})
                page.set_default_timeout(PAGE_TIMEOUT_MS)
                expect.set_options(timeout=PAGE_TIMEOUT_MS)

                # 1. the registered model: description, and `production` on version 2's row only
                page.goto(f"{ui.url}/#/models/toy")
                expect(page.get_by_role("link", name="Version 2", exact=True)).to_be_visible()
                _close_assistant(page)
                expect(page.get_by_text("Toy sentiment soft prompt").first).to_be_visible()
                expect(page.get_by_role("row").filter(has_text="aliases").filter(has_text="production → v2")
                       .first).to_be_visible()
                expect(_aliases_cell(page, 2)).to_contain_text("production")
                expect(_aliases_cell(page, 1)).not_to_contain_text("production")
                _shot(page, "01-registered-model")

                # 2. version 2: alias, promptreg.* tags, the markdown description with the gate verdict
                page.goto(f"{ui.url}/#/models/toy/versions/2")
                expect(page.get_by_text("promptreg.aliases", exact=True).first).to_be_visible()
                _close_assistant(page)
                expect(_tag_row(page, "promptreg.aliases")).to_contain_text("production")
                expect(_tag_row(page, "promptreg.gate.production")).to_contain_text("passed")
                expect(_tag_row(page, "promptreg.status")).to_contain_text("active")
                expect(_tag_row(page, "promptreg.sha256")).to_contain_text(v2.sha256)
                expect(page.get_by_text("Gate vs production", exact=True).first).to_be_visible()
                expect(page.get_by_role("row").filter(has_text="toy/accuracy").first).to_contain_text("pass")
                expect(page.get_by_text("Data validation (Great Expectations)").first).to_be_visible()
                expect(page.get_by_text("14 expectations evaluated, 1 failed", exact=False).first).to_be_visible()
                expect(page.get_by_role("link", name="v2", exact=True).first).to_be_visible()   # "Source Run: v2"
                source_link = page.get_by_role("link", name="source run").first
                assert source_link.get_attribute("href") == f"#/experiments/{source_exp}/runs/{source_run}"
                eval_href = page.get_by_role("link", name=f"eval run: {SUITE}").first.get_attribute("href")
                assert eval_href and eval_href.startswith(f"#/experiments/{eval_exp.experiment_id}/runs/")
                _shot(page, "02-model-version")

                # 3. the source run: the evaluation metric
                page.goto(f"{ui.url}/#/experiments/{source_exp}/runs/{source_run}")
                metric = f"eval/{SUITE}/toy/accuracy"
                expect(page.get_by_text(metric, exact=True).first).to_be_visible()
                _close_assistant(page)
                expect(page.get_by_role("row").filter(has=page.get_by_text(metric, exact=True)).first
                       ).to_contain_text("0.75")
                _shot(page, "03-source-run")

                # 4. the evaluation table: per-example outcomes, rendered as a table by MLflow
                page.goto(f"{ui.url}/#/experiments/{source_exp}/runs/{source_run}/artifactPath/"
                          f"eval/{SUITE}/outcomes.json")
                expect(page.get_by_text("View as table").first).to_be_visible()
                _close_assistant(page)
                expect(page.get_by_role("columnheader", name="prediction")).to_be_visible()
                expect(page.get_by_role("columnheader", name="correct")).to_be_visible()
                expect(page.get_by_text("the movie was", exact=False).first).to_be_visible()
                _shot(page, "04-evaluation-table")

                # 5. the eval run of its own, reached through the description's link
                page.goto(f"{ui.url}/{eval_href}")
                expect(page.get_by_text(metric, exact=True).first).to_be_visible()
                _close_assistant(page)
                expect(page.get_by_text("v2-toy-sentiment").first).to_be_visible()
                expect(page.get_by_text("promptreg/toy/eval").first).to_be_visible()
                _shot(page, "05-eval-run")
            finally:
                browser.close()
        assert ui.stop() == 0, ui._stderr()
        assert not _answers(ui.url), "the MLflow UI still answers after `promptreg ui` was stopped"
    finally:
        ui.kill()
    assert sorted(p.name for p in SHOTS.glob("*.png")) == [
        "01-registered-model.png", "02-model-version.png", "03-source-run.png", "04-evaluation-table.png",
        "05-eval-run.png"]


# ------------------------------------------------------------------------------------------ without a browser


def test_ui_with_a_tracking_server_prints_its_url(tmp_path):
    res = subprocess.run(promptreg_argv("--tracking-uri", "https://alice:s3cret@mlflow.example.internal/", "ui",
                                        "--no-browser"),
                         cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "MLflow UI: https://mlflow.example.internal"
    assert "s3cret" not in res.stdout + res.stderr
    assert not (tmp_path / ".promptreg").exists()        # nothing started, nothing created


def test_ui_on_a_busy_port_is_one_error_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run(promptreg_argv("--home", tmp_path / ".promptreg", "ui", "--port", port, "--no-browser"),
                             cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert lines == [f"error: port {port} on 127.0.0.1 is already in use: pass --port"], res.stderr
    assert res.stdout == ""


def test_ui_command_line_uses_the_embedded_store(tmp_path):
    from promptreg.cli.ui_cmds import ui_command
    from promptreg.settings import Settings

    settings = Settings.load(cwd=tmp_path, env={})
    cmd = ui_command(settings, "127.0.0.1", 5123)
    assert cmd[:4] == [sys.executable, "-m", "mlflow", "ui"]
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / '.promptreg' / 'mlflow.db'}"
    root = (tmp_path / ".promptreg" / "mlartifacts").as_uri()
    assert cmd[cmd.index("--default-artifact-root") + 1] == root
    assert cmd[cmd.index("--artifacts-destination") + 1] == root
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "5123"
