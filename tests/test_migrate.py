"""``promptreg migrate`` (issue 19): a prompt carried to a new base model between two tiny models of
different hidden sizes (initialised from its nearest tokens, gated against the incumbent on ITS OWN
model), a warm start between same-sized models, the refusal when the training data changed, and
``env set-base-model`` suggesting the command."""

from __future__ import annotations

import pytest

from promptreg import Registry
from promptreg.errors import InputError
from tests.fixtures.models import build_tiny_llama
from tests.helpers import write_suite
from tests.test_training import TEMPLATE, _job


@pytest.fixture(scope="module")
def narrow_model_dir(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_narrow") / "model", seed=3, hidden_size=32)


@pytest.fixture(scope="module")
def incumbent(tmp_path_factory, tiny_model_dir):
    """toy:1 trained on the tiny model, toy@production -> 1; shared by the tests of this module (trained
    once: they run in file order and each says which versions it expects)."""
    from promptreg.services.train import run_training
    from promptreg.training.trainer import TrainConfig

    tmp_path = tmp_path_factory.mktemp("migrate")
    reg = Registry(home=str(tmp_path / ".promptreg"))
    cfg = TrainConfig(method="prompt_tuning", method_options={"num_virtual_tokens": 4, "init": "labels"},
                      template=TEMPLATE, max_steps=4, batch_size=8, lr=5e-2, seed=0)
    run_training(reg, _job(tmp_path, tiny_model_dir, push="toy", test_path=None, config=cfg))
    reg.set_alias("toy", "production", 1)
    return reg, tmp_path


def test_migrate_refuses_when_the_training_data_changed(incumbent, narrow_model_dir):
    reg, tmp_path = incumbent
    train = tmp_path / "train.jsonl"
    original = train.read_text()
    train.write_text(original + '{"text": "a late extra row", "label": "positive"}\n')
    try:
        with pytest.raises(InputError, match="no longer matches") as exc:
            reg.migrate("toy@production", str(narrow_model_dir), max_steps=2)
    finally:
        train.write_text(original)
    assert "\n" not in str(exc.value) and "toy:1" in str(exc.value)
    assert [v.version for v in reg.list_versions("toy")] == [1]  # nothing registered


def test_migrate_to_a_narrower_model_is_gated_against_the_incumbent_on_its_own_model(
        incumbent, tiny_model_dir, narrow_model_dir, tmp_path):
    from promptreg.fingerprints.model import model_fingerprint

    reg, _ = incumbent
    old_fp = model_fingerprint(tiny_model_dir).fingerprint
    new_fp = model_fingerprint(narrow_model_dir).fingerprint

    env = reg.set_environment_model("prod", str(narrow_model_dir))  # the deployment moves to the new model
    [flagged] = env.incompatible
    assert (flagged["prompt"], flagged["alias"], flagged["version"]) == ("toy", "production", 1)
    assert flagged["suggest"] == f"promptreg migrate toy@production --to-model {narrow_model_dir.resolve()}"

    suite = write_suite(tmp_path / "suite", rows=24, checks=False)
    out = reg.migrate("toy@production", str(narrow_model_dir), suite=suite, max_steps=6)
    cand = out.candidate
    assert (cand.name, cand.version, cand.base_model_fingerprint) == ("toy", 2, new_fp)
    assert out.init == "nearest-tokens" and out.init_text  # other width: the incumbent's nearest tokens' text
    manifest = reg.manifest("toy:2")
    assert manifest["base_model"]["fingerprint"] == new_fp and manifest["base_model"]["hidden_size"] == 32
    moved = manifest["extra"]["migrated_from"]
    assert (moved["base_model_fingerprint"], moved["to_base_model_fingerprint"]) == (old_fp, new_fp)
    assert (moved["prompt"], moved["version"], moved["init"]) == ("toy", 1, "nearest-tokens")
    assert manifest["dataset"]["fingerprint"] == reg.manifest("toy:1")["dataset"]["fingerprint"]
    assert manifest["method_config"]["init"] == "text" and manifest["method_config"]["init_text"] == out.init_text

    gate = out.gate
    assert (gate.candidate, gate.baseline, gate.against) == (2, 1, "production")
    assert gate.base_model_fingerprint == new_fp and any("own base model" in n for n in gate.notes)
    assert gate.mcnemar  # paired example by example: McNemar on the discordant pairs
    # each side was evaluated on its own model: the stored eval runs carry each one's fingerprint
    from promptreg.registry import queries as q

    with reg.session() as s:
        ids = {v: q.version_of(s, "toy", v).id for v in (1, 2)}
        runs = {(r.version_id, r.base_model_fingerprint) for r in q.eval_runs_of(s, ids.values())}
    assert runs == {(ids[1], old_fp), (ids[2], new_fp)}
    assert gate.passed  # margins of 1.0: the tiny models only have to produce a verdict
    # promote without a suite uses the stored verdict of exactly this pair (candidate, incumbent)
    assert reg.promote("toy:2", "production").version == 2


def test_migrate_between_same_sized_models_warm_starts(incumbent, tmp_path):
    reg, _ = incumbent
    other = build_tiny_llama(tmp_path / "other", seed=7)  # same dimensions, other weights
    out = reg.migrate("toy:1", str(other), max_steps=2)
    assert out.init == "warm-start" and out.gate is None and out.candidate.version == 3
    assert reg.manifest("toy:3")["extra"]["migrated_from"]["init"] == "warm-start"
    with pytest.raises(InputError, match="already bound"):
        reg.migrate("toy:3", str(other))
