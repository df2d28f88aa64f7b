"""Multi-token verbalizers: a label scored by its whole answer's log-probability (sum or mean per token).

Pure parts on hand-built tensors (softprompt.collate.with_answers / answer_targets); the scores against a
plain full-logits reference; single-row == batched == mixed batch (1e-5) for every method; the fast path
(one-token answers) unchanged; two labels sharing their first token train and classify on the tiny model;
the option travels training config -> manifest -> serving."""

from __future__ import annotations

import pytest
import torch

from promptreg.errors import InputError
from promptreg.softprompt.collate import (
    Answers,
    Encoder,
    answer_targets,
    answer_tokens,
    collate,
    with_answers,
)

TEMPLATE = "{virtual}Review: {text} Sentiment:"
TEXTS = ["the movie was great", "bad", "a very long and really boring film with dull acting", "fun plot", "not worth it"]
ANSWERS = [" very bad", " very good", " okay"]  # two share their first token, one is a single token
ATOL = 1e-5


def test_with_answers_layout_on_hand_built_batch():
    batch = {"input_ids": torch.tensor([[0, 5, 6], [7, 8, 9]]), "attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
             "virtual_mask": torch.tensor([[False, True, False], [False, False, False]])}
    answers = Answers(((20, 21, 22), (30,)))
    wide, targets, mask = with_answers(batch, answers)
    assert wide["input_ids"].tolist() == [[0, 5, 6, 20, 21], [0, 0, 0, 5, 6], [7, 8, 9, 20, 21], [0, 0, 7, 8, 9]]
    assert wide["attention_mask"].tolist() == [[0, 1, 1, 1, 1], [0, 0, 0, 1, 1], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert wide["virtual_mask"].tolist()[0] == [False, True, False, False, False]
    assert wide["virtual_mask"].tolist()[1] == [False, False, False, True, False]
    assert targets.tolist() == [[20, 21, 22], [0, 0, 30]]
    assert mask.tolist() == [[True, True, True], [False, False, True]]
    assert answer_targets(answers)[0].tolist() == targets.tolist()


def test_answers_tokenise_whole_and_refuse_identical(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ans = answer_tokens(tok, ANSWERS, "mean")
    assert [len(t) for t in ans.tokens] == [2, 2, 1] and ans.tokens[0][0] == ans.tokens[1][0]
    assert not ans.single_token and ans.score == "mean"
    assert answer_tokens(tok, [" good", " bad"]).single_token
    with pytest.raises(InputError, match="same tokens"):
        answer_tokens(tok, [" very good", "very  good"])
    with pytest.raises(InputError, match="label score"):
        Answers(((1,),), "max")
    assert Answers.of(torch.tensor([4, 5])) == Answers(((4,), (5,)))


@pytest.fixture(scope="module")
def env(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.runtime.mixed import MixedRunner
    from promptreg.softprompt.methods import ModelDims, build_method

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    dims = ModelDims.from_config(base.config)
    configs = {"prompt_tuning": {"num_virtual_tokens": 3, "init": "random"},
               "p_tuning": {"num_virtual_tokens": 4, "encoder": "mlp", "encoder_hidden": 16},
               "prefix_tuning": {"num_virtual_tokens": 4, "projection": False, "init": "random"},
               "id_spam": {"num_virtual_tokens": 3, "bottleneck": 8, "heads": 2}}
    prompts = {}
    for seed, (method, config) in enumerate(configs.items()):
        sp = build_method(method, config, dims, embedding_weight=base.get_input_embeddings().weight.detach(),
                          tokenizer=tok, seed=seed)
        gen = torch.Generator().manual_seed(100 + seed)
        with torch.no_grad():
            for p in sp.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        prompts[method] = sp.requires_grad_(False).eval()
    return {"base": base, "tok": tok, "prompts": prompts, "runner": MixedRunner(base, tok)}


def _rows(env, method):
    sp = env["prompts"].get(method)
    enc = Encoder(env["tok"], TEMPLATE, slots=0 if sp is None else sp.input_slots)
    return enc, [enc.classification(t, 0) for t in TEXTS]


@pytest.mark.parametrize("score", ["sum", "mean"])
def test_scores_equal_full_logits_reference_zero_shot(env, score):
    from promptreg.softprompt.scoring import label_logits

    base, ans = env["base"], answer_tokens(env["tok"], ANSWERS, score)
    enc, rows = _rows(env, None)
    with torch.no_grad():
        got = label_logits(base, None, collate(rows, enc.pad_id), ans)
        for i, row in enumerate(rows):
            for k, a in enumerate(ans.tokens):
                logp = base(input_ids=torch.tensor([row.ids + list(a)])).logits.log_softmax(-1)[0]
                want = sum(float(logp[len(row.ids) - 1 + j, t]) for j, t in enumerate(a))
                assert abs(float(got[i, k]) - (want / len(a) if score == "mean" else want)) < ATOL


@pytest.mark.parametrize("method", [None, "prompt_tuning", "p_tuning", "prefix_tuning", "id_spam"])
def test_single_row_batched_and_mixed_batch_agree(env, method):
    from promptreg.runtime.mixed import MixedRow
    from promptreg.softprompt.scoring import classify
    from promptreg.softprompt.soft_model import SoftPromptModel

    base, sp = env["base"], env["prompts"].get(method)
    model = SoftPromptModel(base, sp) if sp is not None else None
    enc, rows = _rows(env, method)
    for score in [("sum", "mean", "sum", "mean", "sum")[[None, *env["prompts"]].index(method)]]:  # one each
        ans = answer_tokens(env["tok"], ANSWERS, score)
        alone = torch.cat([classify(base, model, [r], ans, batch_size=1, pad_id=enc.pad_id) for r in rows])
        batched = classify(base, model, rows, ans, batch_size=8, pad_id=enc.pad_id)
        torch.testing.assert_close(batched, alone, rtol=0, atol=ATOL)
        # the mixed batch: these rows among every other method's rows, with one-token and multi-token label sets
        mixed_rows, mixed_ans, mine = [], [], []
        one_token = answer_tokens(env["tok"], [" good", " bad"])
        for other in [None, *env["prompts"]]:
            o_enc, o_rows = _rows(env, other)
            for i, r in enumerate(o_rows):
                if other == method:
                    mine.append(len(mixed_rows))
                mixed_rows.append(MixedRow(env["prompts"].get(other), r.ids, r.virtual))
                mixed_ans.append(ans if other == method or i % 2 else one_token)
        scores = env["runner"].label_scores(mixed_rows, mixed_ans)
        got = torch.stack([torch.softmax(scores[j], -1) for j in mine])
        torch.testing.assert_close(got, alone, rtol=0, atol=ATOL)
        # the one-token rows of the mixed batch are what label_logits gives them (the fast path)
        j = next(j for j, a in enumerate(mixed_ans) if a is one_token)
        want = env["runner"].label_logits([mixed_rows[j]], [one_token.first])[0]
        torch.testing.assert_close(scores[j], want, rtol=0, atol=ATOL)


def test_one_token_answers_keep_the_fast_path_bit_for_bit(env):
    from promptreg.softprompt.scoring import label_logits
    from promptreg.softprompt.soft_model import SoftPromptModel

    model = SoftPromptModel(env["base"], env["prompts"]["prompt_tuning"])
    enc, rows = _rows(env, "prompt_tuning")
    batch = collate(rows, enc.pad_id)
    ans = answer_tokens(env["tok"], [" good", " bad"], "mean")
    with torch.no_grad():
        before = model.label_logits(batch["input_ids"], batch["attention_mask"], batch["virtual_mask"],
                                    torch.tensor(ans.first))
        assert torch.equal(label_logits(env["base"], model, batch, ans), before)
        assert torch.equal(label_logits(env["base"], model, batch, ans.first), before)


def _word_examples(n: int, seed: int):
    import random

    from promptreg.data.examples import Example

    rng = random.Random(seed)
    words = {"positive": ["great", "good", "excellent", "amazing"], "negative": ["terrible", "bad", "awful", "boring"]}
    labels = [rng.choice(["positive", "negative"]) for _ in range(n)]
    return [Example(text=rng.choice(words[lab]), label=lab) for lab in labels]


def test_labels_sharing_first_token_train_and_classify(tiny_model_dir):
    """" very bad" / " very good": the first token says nothing, the label lives in the second. On the tiny
    random Llama only an input-dependent method learns the word task (ID-SPAM; measured: prompt tuning
    stays at the majority class with one-token labels too)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.data.examples import DataSpec
    from promptreg.softprompt.scoring import accuracy_metrics, classify
    from promptreg.softprompt.soft_model import SoftPromptModel
    from promptreg.training.trainer import TrainConfig, Trainer, params_digest

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    before = params_digest(base)
    spec = DataSpec(labels=["negative", "positive"], verbalizer={"negative": " very bad", "positive": " very good"})
    cfg = TrainConfig(method="id_spam", method_options={"num_virtual_tokens": 4, "layer": 1, "bottleneck": 32},
                      template="{text}", max_steps=48, batch_size=8, lr=2e-2, warmup_ratio=0.0, schedule="constant",
                      eval_every=8, patience=100, seed=0)
    result = Trainer(base, tok, cfg, spec, _word_examples(64, 1), _word_examples(32, 2), progress=False).run()
    assert result.history["eval"][-1]["loss"] < result.history["eval"][0]["loss"] - 0.1, result.history["eval"]
    assert result.label_ids[0][0] == result.label_ids[1][0] and len(result.label_ids[0]) == 2
    assert params_digest(base) == before
    rows_of = {lab: i for i, lab in enumerate(spec.labels)}
    enc = Encoder(tok, "{text}", slots=result.soft_prompt.input_slots)
    held = _word_examples(40, 3)
    rows = [enc.classification(e.text, rows_of[e.label]) for e in held]
    ans = answer_tokens(tok, [spec.answer(lab) for lab in spec.labels])
    probs = classify(base, SoftPromptModel(base, result.soft_prompt), rows, ans, pad_id=enc.pad_id)
    assert accuracy_metrics(probs, [r.label for r in rows], spec.labels)["accuracy"] >= 0.95
    with pytest.raises(InputError, match="label_score"):
        TrainConfig(label_score="max").validate()


def test_manifest_label_score_reaches_serving(tiny_model_dir):
    from transformers import AutoTokenizer

    from promptreg.artifact.manifest import TaskSpec
    from promptreg.runtime.loader import task_parts

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = {"type": "classification", "template": TEMPLATE, "label_score": "mean",
            "verbalizer": {"negative": [" very bad"], "positive": [" very good"]}}
    assert TaskSpec(**task).label_score == "mean"
    _, _, labels, answers = task_parts({"task": task}, tok, 3, label="x:1")
    assert labels == ["negative", "positive"] and answers.score == "mean" and not answers.single_token
    _, _, _, answers = task_parts({"task": {**task, "label_score": None}}, tok, 3, label="x:1")
    assert answers.score == "sum"  # manifests written before the option score as training did then


def test_vllm_refuses_multi_token_answers_in_one_line():
    from promptreg.runtime.service import _Entry
    from promptreg.runtime.vllm_engine import _refuse_multi_token

    entry = _Entry("toy", 2, "a" * 64, None, None, "classification", ["neg", "pos"], Answers(((5, 6), (5, 7))), 0)
    with pytest.raises(InputError, match="toy:2: its labels' answers are several tokens") as exc:
        _refuse_multi_token(entry)
    assert "\n" not in str(exc.value) and "--engine promptreg" in str(exc.value)
    _refuse_multi_token(_Entry("toy", 1, "a" * 64, None, None, "classification", ["n", "p"], Answers(((5,), (6,))), 0))


def _version(dest, model_dir, method: str, config: dict, seed: int, verbalizer: dict, label_score: str | None):
    """A classification version for the tiny model (weights randn * 0.5) with this verbalizer / label score."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.artifact.builder import write_artifact
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.softprompt.methods import ModelDims, build_method

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    sp = build_method(method, config, ModelDims.from_config(base.config), tokenizer=AutoTokenizer.from_pretrained(model_dir),
                      embedding_weight=base.get_input_embeddings().weight.detach(), seed=seed)
    gen = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in sp.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    info = {**model_fingerprint(model_dir).to_dict(), "name_or_path": str(model_dir)}
    task = {"type": "classification", "template": TEMPLATE, "verbalizer": {k: [v] for k, v in verbalizer.items()},
            **({"label_score": label_score} if label_score else {})}
    return write_artifact(dest, method=method, tensors=sp.export_tensors(), base_model=info,
                          num_virtual_tokens=sp.num_virtual_tokens, task=task, method_config=sp.method_config(),
                          created_by="tests")


def test_serving_scores_labels_as_the_manifest_says(tmp_path, tiny_model_dir):
    """A version whose manifest says label_score mean, with answers sharing their first token: the serving
    runtime (one mixed batch with a one-token version) equals the loader path (eval / gate / drift) and the
    scoring computed directly with mean, and differs from sum."""
    import json

    from promptreg import Registry
    from promptreg.artifact.manifest import MANIFEST_FILE
    from promptreg.runtime.loader import load_soft_prompt
    from promptreg.runtime.service import PromptRuntime
    from promptreg.softprompt.scoring import classify
    from tests.fixtures.services import free_port

    reg = Registry(home=str(tmp_path / ".promptreg"), tracking_uri=f"http://127.0.0.1:{free_port()}")
    multi = {"negative": " very bad", "positive": " very good"}
    reg.push(_version(tmp_path / "m", tiny_model_dir, "p_tuning", {"num_virtual_tokens": 3, "encoder": "mlp",
                                                                   "encoder_hidden": 16}, 3, multi, "mean"), "multi")
    reg.push(_version(tmp_path / "o", tiny_model_dir, "prompt_tuning", {"num_virtual_tokens": 2}, 4,
                      {"negative": " bad", "positive": " good"}, None), "one")
    runtime = PromptRuntime(reg, str(tiny_model_dir), device="cpu")
    texts = ["the movie was great", "bad", "a long boring film"]
    served = runtime.classify([{"ref": ref, "text": t} for t in texts for ref in ("multi:1", "one:1")])
    assert all("error" not in r for r in served), served
    info, folder = reg.fetch_verified("multi:1")
    loaded = load_soft_prompt(folder, json.loads((folder / MANIFEST_FILE).read_text()), runtime.base(),
                              label="multi:1", sha256=info.sha256)
    assert loaded.answers.score == "mean" and not loaded.answers.single_token
    alone = torch.tensor(loaded.classify(texts))
    got = torch.tensor([[r["probs"]["negative"], r["probs"]["positive"]] for r in served if r["name"] == "multi"])
    torch.testing.assert_close(got, alone, rtol=0, atol=ATOL)
    rows = [loaded.encoder.classification(t, 0) for t in texts]
    tok, model = runtime.base().tokenizer, runtime.base().model
    direct = {score: classify(model, loaded.soft_model, rows, answer_tokens(tok, list(multi.values()), score),
                              pad_id=loaded.encoder.pad_id) for score in ("sum", "mean")}
    torch.testing.assert_close(direct["mean"], alone, rtol=0, atol=ATOL)
    assert float((direct["sum"] - alone).abs().max()) > 1e-3  # the recorded option is what decides
