"""``promptreg inspect``: the pure computation on hand-built tensors, then the service / CLI on the tiny model:
a prompt initialised from known text has those tokens as nearest at step 0; --json shape; the summary in
the version's MLflow description and audit log; one-line refusals (prefix tuning; ID-SPAM without --text)."""

from __future__ import annotations

import json

import pytest
import torch

from promptreg.errors import InputError
from promptreg.reporting.inspection import inspection_markdown, inspection_text
from promptreg.softprompt.inspection import WAYWARDNESS_CAVEAT, PromptInspection, inspect_vectors
from tests.cli_utils import assert_one_line_error, run_cli

INIT_TEXT = "great movie acting plot"


def test_inspect_vectors_on_hand_built_tensors():
    vocab = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    vectors = torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, 0.5], [2.0, 2.0, 0.0]])
    stats = inspect_vectors(vectors, vocab, top_k=2)
    assert [v.nearest[0][0] for v in stats.vectors] == [1, 2, 3]
    assert stats.vectors[1].nearest == [(2, pytest.approx(1.0)), (4, pytest.approx(1.0))]  # tie: lower id first
    assert stats.vectors[0].nearest[1][1] == pytest.approx(1 / 2 ** 0.5)  # then row 3, cos 45 degrees
    # norms 5, 0.5, 2.83 against vocabulary norms 1, 2, 3, 1.41, 3
    assert [round(v.norm, 3) for v in stats.vectors] == [5.0, 0.5, 2.828]
    assert [v.norm_percentile for v in stats.vectors] == [100.0, 0.0, 60.0]
    assert stats.vocab_norm["min"] == pytest.approx(1.0) and stats.vocab_norm["max"] == pytest.approx(3.0)
    assert stats.vocab_norm["median"] == pytest.approx(2.0)
    assert stats.pairwise[0][0] == pytest.approx(1.0) and stats.pairwise[0][1] == pytest.approx(0.0)
    assert stats.pairwise[0][2] == pytest.approx(1 / 2 ** 0.5) and stats.pairwise[2][0] == stats.pairwise[0][2]
    assert stats.pairwise_mean == pytest.approx(2 * (1 / 2 ** 0.5) / 6)
    assert stats.pairwise_max == (0, 2, pytest.approx(1 / 2 ** 0.5))
    assert json.loads(json.dumps(stats.to_dict()))["vectors"][0]["nearest"][0][0] == 1
    assert vectors[0, 1] == 5.0  # inputs untouched
    with pytest.raises(InputError, match="same H"):
        inspect_vectors(torch.zeros(2, 4), vocab)
    with pytest.raises(InputError, match="top_k"):
        inspect_vectors(vectors, vocab, top_k=0)


def _report(**kw) -> PromptInspection:
    base = dict(prompt="toy", version=1, sha256="a" * 64, method="prompt_tuning", space="input embeddings", text=None,
                top_k=2, base_model_fingerprint="f" * 64,
                tokens=[{"index": 0, "norm": 1.5, "norm_percentile": 40.0,
                         "nearest": [{"id": 7, "token": " great", "cosine": 0.99}, {"id": 9, "token": "|x", "cosine": 0.5}]},
                        {"index": 1, "norm": 3.0, "norm_percentile": 99.5,
                         "nearest": [{"id": 8, "token": "\n", "cosine": 0.2}, {"id": 7, "token": " great", "cosine": 0.1}]}],
                pairwise=[[1.0, 0.3], [0.3, 1.0]], pairwise_mean=0.3,
                vocab_norm={"min": 0.5, "p5": 0.7, "median": 1.0, "p95": 1.6, "max": 2.0, "mean": 1.05})
    base.update(kw)
    return PromptInspection(**base)


def test_renderings_carry_the_caveat_and_escape_tokens():
    r = _report()
    text = inspection_text(r)
    assert WAYWARDNESS_CAVEAT in text and sum("Waywardness" in line for line in text) == 1
    assert any('" great" 0.990' in line and '"|x" 0.500' in line for line in text)
    assert any('"\\n" 0.200' in line for line in text)
    summary = {**r.summary(), "at": "2026-01-01 00:00 UTC", "actor": "ann"}
    assert summary["tokens"][0] == {"norm": 1.5, "norm_percentile": 40.0, "nearest": [[" great", 0.99], ["|x", 0.5]]}
    md = "\n".join(inspection_markdown(summary))
    assert "Prompt Waywardness" in md and "| 0 | 1.500 | 40.0 |" in md and '`"\\|x"` 0.50' in md
    assert "… 0 more" not in md
    many = {**summary, "tokens": summary["tokens"] * 30, "num_virtual_tokens": 60}
    assert "*… 40 more virtual tokens" in "\n".join(inspection_markdown(many))


# ----------------------------------------------------------------------------------------- the real flow


def _artifact(dest, model_dir, method: str, options: dict):
    """A version of ``method`` for the tiny model, its tensors straight from initialisation (step 0)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.artifact.builder import write_artifact
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.softprompt.methods import ModelDims, build_method

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    soft = build_method(method, options, ModelDims.from_config(base.config),
                        embedding_weight=base.get_input_embeddings().weight.detach(), tokenizer=tok, seed=0,
                        base_model=base)
    info = model_fingerprint(model_dir).to_dict()
    keys = ("fingerprint", "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "vocab_size")
    return write_artifact(dest, method=method, tensors=soft.export_tensors(),
                          base_model={**{k: info[k] for k in keys}, "name_or_path": str(model_dir)},
                          num_virtual_tokens=soft.num_virtual_tokens, method_config=soft.method_config(),
                          task={"type": "classification", "template": "{virtual}Review : {text} Sentiment :",
                                "verbalizer": {"positive": [" positive"], "negative": [" negative"]}},
                          created_by="tests"), tok


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    from promptreg import Registry

    tmp_path = tmp_path_factory.mktemp("inspect")
    reg = Registry(home=str(tmp_path / ".promptreg"))
    art, tok = _artifact(tmp_path / "pt", tiny_model_dir, "prompt_tuning",
                         {"num_virtual_tokens": 4, "init": "text", "init_text": INIT_TEXT})
    reg.push(art, "toy")
    return reg, tok


def test_text_init_prompt_has_its_tokens_nearest_and_is_recorded(project, tmp_path, tiny_model_dir):
    from mlflow.tracking import MlflowClient

    reg, tok = project
    want = tok(INIT_TEXT, add_special_tokens=False)["input_ids"]
    report = reg.inspect("toy:1", model=str(tiny_model_dir), top_k=3)
    assert [t["nearest"][0]["id"] for t in report.tokens] == want
    assert [t["nearest"][0]["token"].strip() for t in report.tokens] == INIT_TEXT.split()
    assert all(t["nearest"][0]["cosine"] == pytest.approx(1.0, abs=1e-5) for t in report.tokens)
    assert all(len(t["nearest"]) == 3 for t in report.tokens) and report.caveat == WAYWARDNESS_CAVEAT
    assert len(report.pairwise) == 4 and report.pairwise[1][1] == pytest.approx(1.0, abs=1e-5)
    assert report.space.startswith("input embeddings")
    # recorded: an audit event with the summary, and the version's MLflow description
    (event,) = [e for e in reg.history("toy") if e.action == "inspect"]
    assert event.to_version == 1 and event.details["tokens"][0]["nearest"][0] == ["great", 1.0]
    assert event.details["num_virtual_tokens"] == 4 and event.details["method"] == "prompt_tuning"
    client = MlflowClient(tracking_uri=reg.settings.tracking_uri)
    desc = client.get_model_version("toy", reg.show("toy:1").mlflow_model_version).description
    assert "**Inspection (nearest vocabulary tokens)**" in desc and "Prompt Waywardness" in desc
    assert '`"great"` 1.00' in desc

    res = run_cli("--home", reg.settings.home, "inspect", "toy:1", "--model", tiny_model_dir, "--top-k", "2", "--json",
                  cwd=tmp_path)
    assert res.code == 0, res.err
    doc = res.json()
    assert set(doc) == {"prompt", "version", "sha256", "method", "space", "text", "top_k", "base_model_fingerprint",
                        "tokens", "pairwise", "pairwise_mean", "vocab_norm", "caveat", "warnings"}
    assert doc["caveat"] == WAYWARDNESS_CAVEAT and doc["top_k"] == 2 and len(doc["tokens"]) == 4
    assert set(doc["tokens"][0]) == {"index", "norm", "norm_percentile", "nearest"}
    assert set(doc["tokens"][0]["nearest"][0]) == {"id", "token", "cosine"} and len(doc["tokens"][0]["nearest"]) == 2
    assert set(doc["vocab_norm"]) == {"min", "p5", "median", "p95", "max", "mean"}


def test_prefix_and_id_spam(project, tmp_path, tiny_model_dir):
    reg, _ = project
    art, _ = _artifact(tmp_path / "px", tiny_model_dir, "prefix_tuning", {"num_virtual_tokens": 4, "init": "random"})
    reg.push(art, "px")
    res = run_cli("--home", reg.settings.home, "inspect", "px:1", "--model", tiny_model_dir, "--json", cwd=tmp_path)
    assert_one_line_error(res, 2, "per-layer key/values")
    art, _ = _artifact(tmp_path / "id", tiny_model_dir, "id_spam", {"num_virtual_tokens": 3, "layer": 1,
                                                                     "bottleneck": 8})
    reg.push(art, "ids")
    with pytest.raises(InputError, match="pass --text TEXT") as exc:
        reg.inspect("ids:1", model=str(tiny_model_dir))
    assert "\n" not in str(exc.value)
    report = reg.inspect("ids:1", model=str(tiny_model_dir), text="the movie was great")
    assert len(report.tokens) == 3 and report.text == "the movie was great"
    assert "before layer 1" in report.space and "proxy" in report.space
    other = reg.inspect("ids:1", model=str(tiny_model_dir), text="bad")
    assert other.tokens[0]["norm"] != report.tokens[0]["norm"]  # the prompt depends on the input
    ignored = reg.inspect("toy:1", model=str(tiny_model_dir), text="anything")
    assert ignored.text is None and any("--text ignored" in w for w in ignored.warnings)
