"""Mixed batches (``promptreg.runtime.mixed.MixedRunner``): every row with its own soft prompt.

Reference semantics: each row run ALONE (batch of 1) through ``SoftPromptModel`` (or the plain base model
for zero-shot rows). Tiny random GQA Llama (4 heads, 2 kv heads, 2 layers), float32; every method's
weights are re-drawn as randn * 0.5 so the prompts change the outputs."""

from __future__ import annotations

import pytest
import torch

from promptreg.errors import InputError
from promptreg.runtime.mixed import MixedRow, MixedRunner
from promptreg.softprompt.collate import Encoder
from promptreg.softprompt.methods import ModelDims, build_method
from promptreg.softprompt.soft_model import SoftPromptModel

TEMPLATE = "{virtual}Review: {text} Sentiment:"
TEXTS = ["the movie was great", "bad", "a very long and really boring film with dull acting and poor writing",
         "fun plot , i laughed", "not worth it"]
# (name, method, config): two prompts per method, different N (and two ID-SPAM layers)
PROMPTS = [
    ("pt3", "prompt_tuning", {"num_virtual_tokens": 3, "init": "random"}),
    ("pt5", "prompt_tuning", {"num_virtual_tokens": 5, "init": "random"}),
    ("pp4", "p_tuning", {"num_virtual_tokens": 4, "encoder": "mlp", "encoder_hidden": 16}),
    ("pp2", "p_tuning", {"num_virtual_tokens": 2, "encoder": "lstm", "encoder_hidden": 8}),
    ("px4", "prefix_tuning", {"num_virtual_tokens": 4, "projection": True, "projection_hidden": 16,
                              "init": "random"}),
    ("px6", "prefix_tuning", {"num_virtual_tokens": 6, "projection": False, "init": "random"}),
    ("id3", "id_spam", {"num_virtual_tokens": 3, "bottleneck": 8, "heads": 2}),  # layer 1 (num_layers // 2)
    ("id2", "id_spam", {"num_virtual_tokens": 2, "bottleneck": 8, "heads": 1, "layer": 0}),
    ("ia4", "iapt", {"num_virtual_tokens": 4, "bottleneck": 8, "activation": "gelu"}),  # every layer
    ("ia3", "iapt", {"num_virtual_tokens": 3, "bottleneck": 8, "layers": "1", "activation": "tanh"}),
]
METHOD_NAMES = ["prompt_tuning", "p_tuning", "prefix_tuning", "id_spam", "iapt"]
ATOL = 1e-5
MAX_NEW = 8


@pytest.fixture(scope="module")
def env(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    dims = ModelDims.from_config(base.config)
    prompts = {}
    for seed, (name, method, config) in enumerate(PROMPTS):
        sp = build_method(method, config, dims, embedding_weight=base.get_input_embeddings().weight.detach(),
                          tokenizer=tok, seed=seed)
        gen = torch.Generator().manual_seed(100 + seed)
        with torch.no_grad():
            for p in sp.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        sp.requires_grad_(False)
        prompts[name] = sp.eval()
    labels = [tok(w, add_special_tokens=False)["input_ids"][0] for w in ("positive", "negative", "great", "bad")]
    return {"base": base, "tok": tok, "prompts": prompts, "runner": MixedRunner(base, tok),
            "labels": labels, "eos": tok.eos_token_id}


def make_row(env, name: str | None, text: str) -> MixedRow:
    sp = None if name is None else env["prompts"][name]
    enc = Encoder(env["tok"], TEMPLATE, slots=0 if sp is None else sp.input_slots)
    ids, virtual = enc.prompt(text)
    return MixedRow(sp, ids, virtual)


def label_set(env, i: int) -> list[int]:
    """Rows get different label sets (2, 3 or 4 tokens, different order)."""
    lab = env["labels"]
    return [lab[:2], lab[1:4], lab[::-1]][i % 3]


def tensors(row: MixedRow):
    ids = torch.tensor([row.ids])
    return ids, torch.ones_like(ids), torch.tensor([row.virtual])


@torch.no_grad()
def alone_logits(env, row: MixedRow, labels: list[int]) -> torch.Tensor:
    ids, mask, virtual = tensors(row)
    if row.soft_prompt is None:
        return env["base"](input_ids=ids, attention_mask=mask).logits[0, -1, labels].float()
    return SoftPromptModel(env["base"], row.soft_prompt).label_logits(ids, mask, virtual, torch.tensor(labels))[0]


@torch.no_grad()
def alone_generate(env, row: MixedRow, max_new: int = MAX_NEW) -> list[int]:
    ids, mask, virtual = tensors(row)
    if row.soft_prompt is not None:  # the no-cache reference decoder; the row's cached decoding equals it
        model = SoftPromptModel(env["base"], row.soft_prompt)
        reference = model.generate(ids, mask, virtual, max_new_tokens=max_new, eos_token_id=env["eos"],
                                   use_cache=False)[0]
        assert model.generate(ids, mask, virtual, max_new_tokens=max_new, eos_token_id=env["eos"])[0] == reference
        return reference
    out = []
    for _ in range(max_new):  # plain greedy without cache
        tok = int(env["base"](input_ids=ids).logits[0, -1].argmax())
        if tok == env["eos"]:
            break
        out.append(tok)
        ids = torch.cat([ids, torch.tensor([[tok]])], dim=1)
    return out


def check_batch(env, rows: list[MixedRow], *, permutations: int = 2) -> float:
    """Mixed-batch label logits and generations equal each row alone, in any row order. Returns the max
    abs logit difference seen."""
    runner = env["runner"]
    labels = [label_set(env, i) for i in range(len(rows))]
    want_logits = [alone_logits(env, r, lab) for r, lab in zip(rows, labels, strict=True)]
    want_gen = [alone_generate(env, r) for r in rows]
    assert any(want_gen), "every generation is empty: the test would prove nothing"
    worst = 0.0
    gen = torch.Generator().manual_seed(len(rows))
    orders = [list(range(len(rows)))] + [torch.randperm(len(rows), generator=gen).tolist()
                                         for _ in range(permutations)]
    for order in orders:
        got = runner.label_logits([rows[i] for i in order], [labels[i] for i in order])
        got_gen = runner.generate([rows[i] for i in order], MAX_NEW, env["eos"])
        for pos, i in enumerate(order):
            assert got[pos].dtype == torch.float32 and got[pos].shape == want_logits[i].shape
            torch.testing.assert_close(got[pos], want_logits[i], rtol=0, atol=ATOL)
            worst = max(worst, float((got[pos] - want_logits[i]).abs().max()))
            assert got_gen[pos] == want_gen[i], f"row {i} ({rows[i].soft_prompt}) generation differs"
    return worst


# ---- one method per batch (two prompts of that method, different N, plus a zero-shot row) -------

@pytest.mark.parametrize("method", METHOD_NAMES)
def test_single_method_batch_matches_rows_alone(env, method):
    names = [name for name, m, _ in PROMPTS if m == method]
    rows = [make_row(env, names[i % 2], text) for i, text in enumerate(TEXTS)]
    rows.append(make_row(env, None, TEXTS[2]))
    rows.append(make_row(env, names[1], TEXTS[0]))
    worst = check_batch(env, rows)
    print(f"{method}: max abs diff {worst:.2e}")


# ---- every method, different N, zero-shot, different text lengths in ONE batch ----------------------

def test_mixed_batch_all_methods_matches_rows_alone(env):
    names = [name for name, _, _ in PROMPTS] + [None]
    rows = [make_row(env, name, TEXTS[(i + j) % len(TEXTS)]) for i, name in enumerate(names) for j in range(2)]
    worst = check_batch(env, rows, permutations=2)
    print(f"mixed: max abs diff {worst:.2e}")


def test_prompts_change_the_outputs(env):
    """The same text under different prompts (and zero-shot) gives clearly different logits."""
    names = [name for name, _, _ in PROMPTS] + [None]
    rows = [make_row(env, name, TEXTS[0]) for name in names]
    labels = env["labels"]
    got = env["runner"].label_logits(rows, [labels] * len(rows))
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            assert float((got[i] - got[j]).abs().max()) > 1e-3, (names[i], names[j])


@pytest.mark.parametrize("name", [name for name, _, _ in PROMPTS] + [None])
def test_batch_of_one_equals_soft_prompt_model(env, name):
    row = make_row(env, name, TEXTS[3])
    labels = env["labels"]
    got = env["runner"].label_logits([row], [labels])[0]
    want = alone_logits(env, row, labels)
    if name is not None and env["prompts"][name].kind not in ("layer", "deep"):
        assert torch.equal(got, want), float((got - want).abs().max())  # same computation: bit for bit
    else:  # ID-SPAM, IAPT: prompt key/values from a pass over the prompt alone (same values, other shapes);
        # zero-shot: the reference reads the full-vocabulary logits (other matmul shape)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert env["runner"].generate([row], MAX_NEW, env["eos"])[0] == alone_generate(env, row)


# ---- grouping and errors ----------------------------------------------------------------------------

def test_each_distinct_prompt_computed_once(env, monkeypatch):
    calls: dict[str, int] = {}
    for name, sp in env["prompts"].items():
        original = sp.prompt

        def counted(*args, _name=name, _orig=original, **kw):
            calls[_name] = calls.get(_name, 0) + 1
            return _orig(*args, **kw)

        monkeypatch.setattr(sp, "prompt", counted)
    names = [name for name, _, _ in PROMPTS]
    rows = [make_row(env, name, text) for name in names for text in TEXTS[:3]]
    env["runner"].label_logits(rows, [env["labels"]] * len(rows))
    # once per distinct prompt; IAPT: once per distinct prompt and selected layer
    assert calls == {name: len(getattr(env["prompts"][name], "layers", [0])) for name in names}


def test_bad_rows_are_refused(env):
    runner, labels = env["runner"], env["labels"]
    good = make_row(env, "pt3", TEXTS[0])
    wrong_slots = MixedRow(env["prompts"]["pt5"], good.ids, good.virtual)  # 3 slots for a 5-token prompt
    with pytest.raises(InputError, match="needs 5 virtual slots"):
        runner.label_logits([good, wrong_slots], [labels, labels])
    with pytest.raises(InputError, match="zero-shot rows take 0"):
        runner.generate([MixedRow(None, good.ids, good.virtual)], 2)
    with pytest.raises(InputError, match="one list per row"):
        runner.label_logits([good, good], [labels])
    with pytest.raises(InputError, match="outside the vocabulary"):
        runner.label_logits([good], [[10**6]])
    with pytest.raises(InputError, match="no token ids"):
        runner.label_logits([MixedRow(None, [], [])], [labels])
    assert runner.label_logits([], []) == [] and runner.generate([], 4) == []


def test_mixed_batch_with_eager_attention(env, tiny_model_dir):
    """The per-row masks also work with eager attention (additive float masks)."""
    from transformers import AutoModelForCausalLM

    eager = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    env = dict(env, base=eager, runner=MixedRunner(eager, env["tok"]))
    names = [name for name, _, _ in PROMPTS] + [None]
    rows = [make_row(env, name, TEXTS[i % len(TEXTS)]) for i, name in enumerate(names)]
    check_batch(env, rows, permutations=1)


def test_our_forward_calls_raise_no_library_deprecation(env):
    """Every path (each method alone cached and uncached, the mixed batch, the shared-prefix fast path)
    calls transformers with the argument names its release expects: no Python warning, and no warning
    through transformers' own logger (its `warning_once` for deprecated names), is raised."""
    import logging
    import warnings

    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    rows = [make_row(env, name, text) for name, text in zip([None] + [p[0] for p in PROMPTS], TEXTS * 2, strict=False)]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for row in rows:
                if row.soft_prompt is not None:
                    model = SoftPromptModel(env["base"], row.soft_prompt)
                    for use_cache in (True, False):
                        model.generate(*tensors(row), max_new_tokens=3, use_cache=use_cache)
                    model.label_logits(*tensors(row), torch.tensor(env["labels"]))
            env["runner"].generate(rows, 3, env["eos"])
            env["runner"].label_logits(rows, [env["labels"]] * len(rows))
            shared = make_row(env, "pt3", "x")
            SoftPromptModel(env["base"], shared.soft_prompt).hidden_states(  # two rows: the shared-prefix path
                *(torch.cat([t, t]) for t in tensors(shared)))
    finally:
        hf_logger.removeHandler(handler)
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in records] == []
