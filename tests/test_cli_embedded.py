"""The CLI as a user runs it, on the embedded default (no configuration: ./.promptreg/)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from tests.cli_utils import assert_one_line_error, run_cli
from tests.helpers import make_artifact


def _tamper(path: Path) -> None:
    os.chmod(path, stat.S_IWUSR | stat.S_IRUSR)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_push_list_show_history_pull(tmp_path):
    from mlflow.tracking import MlflowClient

    res = run_cli("list", cwd=tmp_path)
    assert res.code == 0 and "no prompts" in res.out
    assert (tmp_path / ".promptreg" / "registry.db").is_file()

    art1 = make_artifact(tmp_path / "art1", seed=1, dataset={"fingerprint": "b" * 64, "name": "toy", "rows": 10})
    res = run_cli("push", art1, "--name", "sentiment", "--description", "toy sentiment prompt", cwd=tmp_path)
    assert res.code == 0, res.err
    assert "pushed sentiment:1" in res.out and "mlflow: ok" in res.out

    res = run_cli("push", art1, "--name", "sentiment", cwd=tmp_path)  # idempotent
    assert res.code == 0 and "already registered" in res.out and "sentiment:1" in res.out

    art2 = make_artifact(tmp_path / "art2", seed=2, method="prefix_tuning")
    res = run_cli("push", art2, "--name", "sentiment", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    pushed = res.json()
    assert pushed["version"] == 2 and pushed["created"] is True and pushed["method"] == "prefix_tuning"

    prompts = run_cli("list", "--json", cwd=tmp_path).json()
    assert [(p["name"], p["versions"], p["latest"]) for p in prompts] == [("sentiment", 2, 2)]
    assert prompts[0]["description"] == "toy sentiment prompt"
    versions = run_cli("list", "sentiment", "--json", cwd=tmp_path).json()
    assert [v["version"] for v in versions] == [1, 2]

    show1 = run_cli("show", "sentiment:1", "--json", cwd=tmp_path).json()
    assert show1["dataset_fingerprint"] == "b" * 64 and show1["metrics"] == {"accuracy": 0.51}
    assert show1["mirror_status"] == "ok" and show1["mlflow_model_version"] == "1"
    assert run_cli("show", "sentiment", "--json", cwd=tmp_path).json()["version"] == 2
    text = run_cli("show", "sentiment:2", cwd=tmp_path)
    assert text.code == 0 and "prefix_tuning" in text.out and pushed["sha256"] in text.out
    manifest = run_cli("show", "sentiment:1", "--manifest", cwd=tmp_path).json()
    assert manifest["method"] == "prompt_tuning" and manifest["kind"] == "promptreg.soft_prompt"

    history = run_cli("history", "sentiment", "--json", cwd=tmp_path).json()
    assert [(e["action"], e["to_version"]) for e in history] == [("push", 1), ("push", 2)]

    res = run_cli("pull", "sentiment:1", tmp_path / "pulled", cwd=tmp_path)
    assert res.code == 0, res.err
    for name in ("soft_prompt.safetensors", "promptreg.json", "adapter_config.json"):
        assert (tmp_path / "pulled" / name).read_bytes() == (art1 / name).read_bytes()

    # MLflow, read back through its own client
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.promptreg' / 'mlflow.db'}")
    model = client.get_registered_model("sentiment")
    assert model.description.startswith("toy sentiment prompt") and "| owner |" in model.description
    mv = client.get_model_version("sentiment", "1")
    assert mv.tags["promptreg.sha256"] == show1["sha256"]
    assert mv.tags["promptreg.base_model"] == show1["base_model_fingerprint"]
    run = client.get_run(mv.run_id)
    assert run.data.metrics["accuracy"] == 0.51 and run.data.tags["promptreg.dataset"] == "b" * 64

    # tampering with the stored artifact is detected, and nothing is written to the destination
    from urllib.parse import unquote, urlparse

    stored = Path(unquote(urlparse(show1["artifact_uri"]).path)) / "soft_prompt.safetensors"
    assert stored.is_file()
    _tamper(stored)
    res = run_cli("pull", "sentiment:1", tmp_path / "pulled2", cwd=tmp_path)
    assert_one_line_error(res, 2, "sha256 mismatch")
    assert not (tmp_path / "pulled2").exists()


def test_bad_input_is_one_line_exit_2(tmp_path):
    assert_one_line_error(run_cli("push", tmp_path / "missing", "--name", "x", cwd=tmp_path), 2, "no such folder")
    art = make_artifact(tmp_path / "art")
    assert_one_line_error(run_cli("push", art, "--name", "../x", cwd=tmp_path), 2, "invalid prompt name")
    assert_one_line_error(run_cli("push", art, cwd=tmp_path), 2, "--name")
    bad = make_artifact(tmp_path / "nan")
    for f in ("soft_prompt.safetensors", "adapter_model.safetensors"):
        t = load_file(str(bad / f))
        t["prompt_embeddings"][0, 0] = np.nan
        save_file(t, str(bad / f))
    assert_one_line_error(run_cli("push", bad, "--name", "x", cwd=tmp_path), 2, "NaN")
    assert_one_line_error(run_cli("show", "nope", cwd=tmp_path), 2, "no prompt named 'nope'")
    assert_one_line_error(run_cli("show", "x:abc", cwd=tmp_path), 2, "invalid version")
    assert_one_line_error(run_cli("show", "x@Prod", cwd=tmp_path), 2, "invalid alias")
    assert run_cli("push", art, "--name", "x", cwd=tmp_path).code == 0
    assert_one_line_error(run_cli("show", "x:7", cwd=tmp_path), 2, "no version 7")
    assert_one_line_error(run_cli("show", "x@production", cwd=tmp_path), 2, "no alias")
    assert_one_line_error(run_cli("frobnicate", cwd=tmp_path), 2, "No such command")
    assert_one_line_error(run_cli("pull", "x:1", art, cwd=tmp_path), 2, "not an empty folder")
    # a failed push registered nothing
    assert [p["versions"] for p in run_cli("list", "--json", cwd=tmp_path).json()] == [1]


def test_unreachable_database_is_one_line(tmp_path):
    from tests.fixtures.services import free_port

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nope"
    res = run_cli("--db-url", url, "list", cwd=tmp_path, timeout=60)
    assert_one_line_error(res, 2, "unreachable")
    res = run_cli("--verbose", "--db-url", url, "list", cwd=tmp_path, timeout=60)
    assert res.code == 2 and "Traceback" in res.err


def test_init_and_doctor(tmp_path):
    res = run_cli("init", cwd=tmp_path)
    assert res.code == 0, res.err
    home = tmp_path / ".promptreg"
    assert (home / "registry.db").is_file() and (home / "mlflow.db").is_file()
    res = run_cli("doctor", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    checks = res.json()
    assert [c["component"] for c in checks] == ["registry database", "artifact store", "MLflow tracking"]
    assert all(c["ok"] for c in checks)
    res = run_cli("--tracking-uri", "http://127.0.0.1:9/", "doctor", cwd=tmp_path, timeout=120)
    assert res.code == 2 and "FAIL" in res.out


def test_config_file_and_env_precedence(tmp_path):
    (tmp_path / "promptreg.toml").write_text('[promptreg]\nhome = "from-file"\n')
    assert run_cli("list", cwd=tmp_path).code == 0
    assert (tmp_path / "from-file" / "registry.db").is_file()
    assert run_cli("list", cwd=tmp_path, env={"PROMPTREG_HOME": str(tmp_path / "from-env")}).code == 0
    assert (tmp_path / "from-env" / "registry.db").is_file()
    assert run_cli("--home", tmp_path / "from-flag", "list", cwd=tmp_path,
                   env={"PROMPTREG_HOME": str(tmp_path / "from-env")}).code == 0
    assert (tmp_path / "from-flag" / "registry.db").is_file()
    (tmp_path / "promptreg.toml").write_text("not = [toml")
    assert_one_line_error(run_cli("list", cwd=tmp_path), 2, "promptreg.toml")


def test_help_and_list_do_not_import_heavy_modules(tmp_path):
    import subprocess
    import sys

    code = ("import sys\nfrom promptreg.cli.main import cli\n"
            "for args in (['--help'], ['list']):\n"
            "    try:\n        cli.main(args=args, prog_name='promptreg', standalone_mode=False)\n"
            "    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'mlflow', 'great_expectations') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PROMPTREG_HOME": str(tmp_path / "h")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
