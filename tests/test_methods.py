"""Soft-prompt methods + runtime on the tiny random Llama (GQA: 4 heads, 2 kv heads, 2 layers).

Covers, for each method: training lowers a toy loss with the base model untouched; left padding does
not change results; export -> rebuild (inference and resume); PEFT parity for the PEFT methods;
greedy generation with the cache equals greedy without it; initialisations. Prefix tuning runs with
its default activation init (real tokens' key/values) and with the old random init, with and without
the projection MLP."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from promptreg.errors import InputError
from promptreg.softprompt.methods import METHODS, ModelDims, build_method, make_config, method_from_tensors
from promptreg.softprompt.soft_model import SoftPromptModel
from tests.peft_reference import PEFT_GENERATE_BROKEN, PEFT_GENERATE_REASON, peft_forward_greedy

METHOD_NAMES = ["prompt_tuning", "p_tuning", "prefix_tuning", "id_spam", "iapt"]
SMALL = {
    "prompt_tuning": {"num_virtual_tokens": 4, "init": "labels"},
    "p_tuning": {"num_virtual_tokens": 4, "encoder": "mlp", "encoder_hidden": 32},
    "prefix_tuning": {"num_virtual_tokens": 4, "projection": True, "projection_hidden": 32},
    "id_spam": {"num_virtual_tokens": 4, "bottleneck": 16, "heads": 2},
    "iapt": {"num_virtual_tokens": 4, "bottleneck": 16, "activation": "gelu"},
}
LABEL_WORDS = [" positive", " negative"]
POSITIVE = ["the movie was great", "i liked it", "a good film", "really great acting"]
NEGATIVE = ["the movie was awful", "i disliked it", "a bad film", "really awful acting"]
TEXTS = POSITIVE + NEGATIVE
TARGETS = torch.tensor([0] * len(POSITIVE) + [1] * len(NEGATIVE))
# (method, config) cases: every method's SMALL config, plus prefix tuning's other init / projection modes
PREFIX_VARIANTS = [
    ("prefix_tuning", SMALL["prefix_tuning"] | {"projection": False}),
    ("prefix_tuning", SMALL["prefix_tuning"] | {"init": "random"}),
    ("prefix_tuning", SMALL["prefix_tuning"] | {"init": "random", "projection": False}),
]
CASES = [(m, SMALL[m]) for m in METHOD_NAMES] + PREFIX_VARIANTS


def case_id(case) -> str:
    name, config = case
    extra = {k: v for k, v in config.items() if SMALL[name].get(k, object()) != v}
    return name + "".join(f"-{k}={v}" for k, v in extra.items())


# ---- fixtures and helpers ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def load_base(model_dir, attn: str = "sdpa"):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn).eval()


@pytest.fixture
def base(tiny_model_dir):
    return load_base(tiny_model_dir)


def make(name, base, tok, config=None, seed=0, label_words=LABEL_WORDS):
    dims = ModelDims.from_config(base.config)
    return build_method(name, SMALL[name] if config is None else config, dims,
                        embedding_weight=base.get_input_embeddings().weight, tokenizer=tok,
                        label_words=label_words, seed=seed, base_model=base)


def label_ids(tok) -> torch.Tensor:
    return torch.tensor([tok(w, add_special_tokens=False)["input_ids"][0] for w in LABEL_WORDS])


def encode_rows(tok, texts, n_slots, *, slots_at: int = 1, template: bool = True):
    """Per row: (ids, virtual flags); ``n_slots`` pad placeholders inserted at ``slots_at``."""
    out = []
    for text in texts:
        body = tok(f"Review : {text} Sentiment :" if template else text)["input_ids"]  # starts with <s>
        ids = body[:slots_at] + [tok.pad_token_id] * n_slots + body[slots_at:]
        flags = [False] * slots_at + [True] * n_slots + [False] * (len(body) - slots_at)
        out.append((ids, flags))
    return out


def left_pad(rows, pad_id):
    """LEFT-padded batch (contract): input_ids, attention_mask (slots count as real), virtual_mask."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r, _ in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r, _ in rows])
    vmask = torch.tensor([[False] * (width - len(r)) + f for r, f in rows])
    return ids, mask, vmask


def batch(tok, sp, texts=TEXTS, **kw):
    return left_pad(encode_rows(tok, texts, sp.input_slots, **kw), tok.pad_token_id)


def loss_of(model, tok, b, targets=TARGETS) -> torch.Tensor:
    """Restricted softmax over the two label tokens."""
    return F.cross_entropy(model.label_logits(*b, label_ids(tok)), targets[: b[0].shape[0]])


def train(model, tok, b, steps, opt=None, lr=5e-2, targets=TARGETS):
    opt = opt or torch.optim.AdamW([p for p in model.soft_prompt.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss_of(model, tok, b, targets).backward()
        opt.step()
    return opt


# ---- training ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,config", CASES, ids=[case_id(c) for c in CASES])
def test_training_lowers_loss_and_base_stays_frozen(base, tok, name, config):
    sp = make(name, base, tok, config)
    model = SoftPromptModel(base, sp)
    assert all(not p.requires_grad for p in base.parameters())
    before = {k: v.clone() for k, v in base.state_dict().items()}
    b = batch(tok, sp)
    # a constant target (" negative" for every input): learnable by every method even on a random
    # 2-layer model, where the word-dependent task is beyond prompt/prefix tuning's reach
    constant = torch.ones(len(TEXTS), dtype=torch.long)
    with torch.no_grad():
        initial = loss_of(model, tok, b, constant).item()
    model.train()
    assert not base.training  # the base never leaves eval mode
    train(model, tok, b, steps=10, targets=constant)
    with torch.no_grad():
        final = loss_of(model, tok, b, constant).item()
    assert final < initial * 0.7, (initial, final)
    after = base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in base.parameters())


# ---- left padding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("name,extra", [(m, {}) for m in METHOD_NAMES] + [
    ("id_spam", {"layer": 0}), ("iapt", {"layers": [1], "activation": "tanh"}),
    ("prefix_tuning", {"projection": False}), ("prefix_tuning", {"init": "random"}),
    ("prefix_tuning", {"init": "random", "projection": False})])
def test_left_padding_does_not_change_results(tiny_model_dir, tok, name, extra, attn):
    base = load_base(tiny_model_dir, attn)
    sp = make(name, base, tok, config=SMALL[name] | extra)
    model = SoftPromptModel(base, sp)
    texts = ["great", "the movie was really awful and too long", "i liked it"]
    with torch.no_grad():
        together = model.label_logits(*batch(tok, sp, texts), label_ids(tok))
        alone = torch.cat([model.label_logits(*batch(tok, sp, [t]), label_ids(tok)) for t in texts])
        full = model.token_logits(*batch(tok, sp, texts), positions=torch.tensor([-1]))[:, 0]
    assert not torch.isnan(together).any()
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    # label logits are the full-vocabulary logits restricted to the label tokens
    torch.testing.assert_close(full[:, label_ids(tok)], together, rtol=0, atol=1e-5)


def test_virtual_slot_count_is_checked(base, tok):
    sp = make("prompt_tuning", base, tok)
    model = SoftPromptModel(base, sp)
    ids, mask, vmask = batch(tok, sp, ["great"])
    with pytest.raises(InputError, match="exactly 4 virtual slots"):
        model.label_logits(ids, mask, vmask & False, label_ids(tok))
    with pytest.raises(InputError, match="virtual_mask"):
        model.label_logits(ids, mask, None, label_ids(tok))
    prefix = SoftPromptModel(base, make("prefix_tuning", base, tok))
    with pytest.raises(InputError, match="no virtual input slots"):
        prefix.label_logits(ids, mask, vmask, label_ids(tok))


# ---- export / rebuild -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,config", CASES, ids=[case_id(c) for c in CASES])
def test_export_then_rebuild_for_inference_is_identical(base, tok, name, config):
    sp = make(name, base, tok, config)
    model = SoftPromptModel(base, sp)
    b = batch(tok, sp)
    train(model, tok, b, steps=3)
    tensors = sp.export_tensors()
    assert all(t.dtype == torch.float32 and t.is_contiguous() and not t.requires_grad for t in tensors.values())
    if name in ("id_spam", "iapt"):
        prefix = "generators." if name == "iapt" else "generator."
        assert "prompt_embeddings" not in tensors and all(k.startswith(prefix) for k in tensors)
    else:
        assert tensors["prompt_embeddings"].shape[0] == 4
    if name == "prefix_tuning":
        assert tensors["prompt_embeddings"].shape[1] == 2 * 2 * 2 * 16  # layers * (k, v) * kv heads * head_dim
    rebuilt = method_from_tensors(name, sp.method_config(), tensors, sp.dims, trainable=False)
    assert all(not p.requires_grad for p in rebuilt.parameters())
    other = SoftPromptModel(base, rebuilt)
    with torch.no_grad():
        assert torch.equal(model.label_logits(*b, label_ids(tok)), other.label_logits(*b, label_ids(tok)))
    again = rebuilt.export_tensors()
    assert again.keys() == tensors.keys() and all(torch.equal(again[k], tensors[k]) for k in tensors)


RESUME = [
    ("prompt_tuning", SMALL["prompt_tuning"]),
    ("p_tuning", SMALL["p_tuning"]),
    ("p_tuning", SMALL["p_tuning"] | {"encoder": "lstm", "encoder_hidden": 16}),
    ("prefix_tuning", SMALL["prefix_tuning"]),
    ("prefix_tuning", SMALL["prefix_tuning"] | {"projection": False}),
    ("prefix_tuning", SMALL["prefix_tuning"] | {"init": "random"}),
    ("prefix_tuning", SMALL["prefix_tuning"] | {"init": "random", "projection": False}),
    ("id_spam", SMALL["id_spam"]),
    ("iapt", SMALL["iapt"]),
    ("iapt", SMALL["iapt"] | {"layers": "0", "activation": "silu"}),
]


@pytest.mark.parametrize("name,config", RESUME)
def test_resume_from_export_equals_uninterrupted_training(base, tok, name, config):
    b = batch(tok, make(name, base, tok, config))
    # uninterrupted: 6 steps
    straight = SoftPromptModel(base, make(name, base, tok, config, seed=7))
    train(straight, tok, b, steps=6)
    # interrupted after 3 steps: export, rebuild trainable, restore the optimizer state, 3 more steps
    first = SoftPromptModel(base, make(name, base, tok, config, seed=7))
    opt = train(first, tok, b, steps=3)
    sp = first.soft_prompt
    resumed_sp = method_from_tensors(name, sp.method_config(), sp.export_tensors(), sp.dims, trainable=True)
    names = [n for n, _ in sp.named_parameters()]
    assert [n for n, p in resumed_sp.named_parameters() if p.requires_grad] == names
    assert all(torch.equal(p, q) for p, q in zip(sp.parameters(), resumed_sp.parameters(), strict=True))
    resumed = SoftPromptModel(base, resumed_sp)
    opt2 = torch.optim.AdamW(list(resumed_sp.parameters()), lr=5e-2)
    opt2.load_state_dict(opt.state_dict())
    train(resumed, tok, b, steps=3, opt=opt2)
    want, got = straight.soft_prompt.export_tensors(), resumed_sp.export_tensors()
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


def test_resume_needs_encoder_weights(base, tok):
    sp = make("p_tuning", base, tok)
    only_output = {"prompt_embeddings": sp.export_tensors()["prompt_embeddings"]}  # like a PEFT export
    with pytest.raises(InputError, match="encoder"):
        method_from_tensors("p_tuning", sp.method_config(), only_output, sp.dims, trainable=True)
    rebuilt = method_from_tensors("p_tuning", sp.method_config(), only_output, sp.dims)
    assert torch.equal(rebuilt.prompt(), only_output["prompt_embeddings"])


def test_rebuild_reads_stored_configs_leniently(base, tok):
    """Imported/stored method_configs carry provenance and PEFT's names (e.g. init 'sample_vocab')."""
    dims = ModelDims.from_config(base.config)
    pt = make("prompt_tuning", base, tok)
    stored = {"imported_from": "peft", "peft_version": "0.21.2", "init": "sample_vocab", "num_virtual_tokens": 4}
    rebuilt = method_from_tensors("prompt_tuning", stored, pt.export_tensors(), dims)
    assert torch.equal(rebuilt.prompt(), pt.export_tensors()["prompt_embeddings"])
    mc = rebuilt.method_config()
    assert (mc["imported_from"], mc["init"], mc["num_virtual_tokens"]) == ("peft", "sample_vocab", 4)
    prefix = make("prefix_tuning", base, tok)  # trained with projection, imported without the MLP
    only = {"prompt_embeddings": prefix.export_tensors()["prompt_embeddings"]}
    stored = {"projection": True, "exported_projection": True, "num_virtual_tokens": 4}
    rebuilt = method_from_tensors("prefix_tuning", stored, only, dims)
    assert torch.equal(rebuilt.prompt(), only["prompt_embeddings"])
    with pytest.raises(InputError, match="encoder"):
        method_from_tensors("prefix_tuning", stored, only, dims, trainable=True)


# ---- PEFT parity ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,extra", [("prompt_tuning", {}), ("p_tuning", {}),
                                        ("p_tuning", {"encoder": "lstm", "encoder_hidden": 16}),
                                        ("prefix_tuning", {}), ("prefix_tuning", {"projection": False}),
                                        ("prefix_tuning", {"init": "random"}),
                                        ("prefix_tuning", {"init": "random", "projection": False})])
def test_peft_loads_our_artifact_and_agrees(tmp_path, tiny_model_dir, tok, name, extra):
    from peft import PeftModel

    from promptreg.artifact.builder import write_artifact
    from promptreg.artifact.validate import validate_artifact
    from promptreg.fingerprints.model import model_fingerprint

    base = load_base(tiny_model_dir)
    sp = make(name, base, tok, config=SMALL[name] | extra)
    model = SoftPromptModel(base, sp)
    train(model, tok, batch(tok, sp), steps=3)
    folder = write_artifact(tmp_path / name, method=name, tensors=sp.export_tensors(),
                            base_model=model_fingerprint(tiny_model_dir).to_dict(),
                            method_config=sp.method_config())
    validate_artifact(folder)
    peft_model = PeftModel.from_pretrained(load_base(tiny_model_dir), folder).eval()

    texts = ["the movie was great", "awful"]
    for text in texts:
        ids = torch.tensor([tok(f"Review : {text} Sentiment :")["input_ids"]])
        with torch.no_grad():
            want = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1]
            # ours: the same unpadded row with the virtual slots at the very start (where PEFT puts them)
            ours = model.token_logits(*batch(tok, sp, [text], slots_at=0), positions=torch.tensor([-1]))[:, 0]
        torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)


# ---- generation -------------------------------------------------------------------------------------

def greedy_without_cache(model, ids, mask, vmask, steps):
    out = []
    for _ in range(steps):
        with torch.no_grad():
            nxt = model.token_logits(ids, mask, vmask, positions=torch.tensor([-1]))[:, 0].argmax(-1)
        out.append(int(nxt[0]))
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        vmask = torch.cat([vmask, torch.zeros_like(vmask[:, :1])], 1)
    return out


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_generation_with_cache_equals_greedy_without(base, tok, name):
    """The cached decoder, the library's no-cache reference (``use_cache=False``) and this test's own
    full-recompute greedy loop agree, row alone and left-padded in a batch."""
    sp = make(name, base, tok)
    model = SoftPromptModel(base, sp)
    texts = ["the movie was great", "i disliked the long and boring ending"]
    together = model.generate(*batch(tok, sp, texts), max_new_tokens=5)
    assert together == model.generate(*batch(tok, sp, texts), max_new_tokens=5, use_cache=False)
    for row, text in enumerate(texts):
        b = batch(tok, sp, [text])
        want = greedy_without_cache(model, *b, 5)
        assert model.generate(*b, max_new_tokens=5) == [want]
        assert model.generate(*b, max_new_tokens=5, use_cache=False) == [want]
        assert together[row] == want  # left padding changes nothing


PEFT_METHODS = ["prompt_tuning", "p_tuning", "prefix_tuning"]


def _peft_pair(tmp_path, tiny_model_dir, tok, name):
    """Our soft prompt, the same prompt loaded by PEFT from our artifact, and one row's inputs for each
    (PEFT prepends input-level prompts: our N virtual slots go first)."""
    from peft import PeftModel

    from promptreg.artifact.builder import write_artifact
    from promptreg.fingerprints.model import model_fingerprint

    base = load_base(tiny_model_dir)
    sp = make(name, base, tok)
    folder = write_artifact(tmp_path / name, method=name, tensors=sp.export_tensors(),
                            base_model=model_fingerprint(tiny_model_dir).to_dict(), method_config=sp.method_config())
    peft_model = PeftModel.from_pretrained(load_base(tiny_model_dir), folder).eval()
    ids = torch.tensor([tok("Review : the movie was great Sentiment :")["input_ids"]])
    n = sp.input_slots
    ours_ids = torch.cat([torch.full((1, n), tok.pad_token_id), ids], dim=1)
    vmask = torch.zeros_like(ours_ids, dtype=torch.bool)
    vmask[:, :n] = True
    return SoftPromptModel(base, sp), (ours_ids, torch.ones_like(ours_ids), vmask if n else None), peft_model, ids


@pytest.mark.parametrize("name", PEFT_METHODS)
def test_generation_equals_no_cache_reference_and_peft_forward(tmp_path, tiny_model_dir, tok, name):
    """Which side is right is decided by a decoder with no cache: ours (``use_cache=False``) and PEFT's
    plain forward recomputed at every step must agree, and our cached decoder must equal them."""
    model, args, peft_model, ids = _peft_pair(tmp_path, tiny_model_dir, tok, name)
    reference = model.generate(*args, max_new_tokens=8, use_cache=False)[0]
    assert peft_forward_greedy(peft_model, ids, 8) == reference
    assert model.generate(*args, max_new_tokens=8) == [reference]
    assert len(set(reference)) > 1  # a constant output would prove little


@pytest.mark.xfail(PEFT_GENERATE_BROKEN, reason=PEFT_GENERATE_REASON, strict=True)
@pytest.mark.parametrize("name", PEFT_METHODS)
def test_peft_cached_generate_equals_reference(tmp_path, tiny_model_dir, tok, name):
    model, args, peft_model, ids = _peft_pair(tmp_path, tiny_model_dir, tok, name)
    with torch.no_grad():
        peft_out = peft_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                       do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
    assert peft_out[0, ids.shape[1]:].tolist() == model.generate(*args, max_new_tokens=8, use_cache=False)[0]


def test_generation_stops_at_eos(base, tok):
    sp = make("prefix_tuning", base, tok)
    model = SoftPromptModel(base, sp)
    b = batch(tok, sp, ["great"])
    first = model.generate(*b, max_new_tokens=3)[0][0]
    assert model.generate(*b, max_new_tokens=3, eos_token_id=first) == [[]]
    assert model.generate(*b, max_new_tokens=0) == [[]]


# ---- initialisation and configs -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["prompt_tuning", "p_tuning"])
def test_labels_init_uses_label_token_embeddings(base, tok, name):
    sp = make(name, base, tok, config={"num_virtual_tokens": 5, "init": "labels"})
    weight = base.get_input_embeddings().weight
    table = sp.embedding if name == "prompt_tuning" else sp.encoder.embedding.weight
    ids = label_ids(tok)
    assert torch.equal(table[:2].detach(), weight[ids].detach())
    assert sp.method_config()["init_effective"] == "labels"
    fill = sp.method_config()["init_token_ids"]
    assert len(fill) == 3 and torch.equal(table[2:].detach(), weight[fill].detach())
    assert all(i not in tok.all_special_ids for i in fill)


@pytest.mark.parametrize("name", ["prompt_tuning", "p_tuning"])
def test_text_init_uses_text_token_embeddings(base, tok, name):
    sp = make(name, base, tok, config={"num_virtual_tokens": 5, "init": "text", "init_text": "great movie"})
    table = sp.embedding if name == "prompt_tuning" else sp.encoder.embedding.weight
    ids = tok("great movie", add_special_tokens=False)["input_ids"]
    expected = base.get_input_embeddings().weight[[ids[i % 2] for i in range(5)]]
    assert torch.equal(table.detach(), expected.detach())


def test_vocab_and_random_init_are_seeded(base, tok):
    a = make("prompt_tuning", base, tok, config={"num_virtual_tokens": 6, "init": "vocab"}, seed=1)
    b = make("prompt_tuning", base, tok, config={"num_virtual_tokens": 6, "init": "vocab"}, seed=1)
    c = make("prompt_tuning", base, tok, config={"num_virtual_tokens": 6, "init": "vocab"}, seed=2)
    assert torch.equal(a.embedding, b.embedding) and not torch.equal(a.embedding, c.embedding)
    state = torch.random.get_rng_state()
    r = make("prompt_tuning", base, tok, config={"num_virtual_tokens": 6, "init": "random"}, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is not consumed
    assert r.embedding.shape == (6, 64)
    # "labels" without label words falls back to sampled vocabulary, and says so
    dims = ModelDims.from_config(base.config)
    d = build_method("prompt_tuning", {"num_virtual_tokens": 3}, dims,
                     embedding_weight=base.get_input_embeddings().weight, tokenizer=tok)
    assert d.method_config()["init_effective"] == "vocab"


def test_config_errors_are_one_line(base, tok):
    dims = ModelDims.from_config(base.config)
    weight = base.get_input_embeddings().weight
    cases = [
        ("prompt_tuning", {"num_virtual_tokens": 0}, "num_virtual_tokens"),
        ("prompt_tuning", {"init": "zeros"}, "init must be one of"),
        ("prompt_tuning", {"init": "text"}, "init_text"),
        ("prompt_tuning", {"surprise": 1}, "unknown prompt_tuning option"),
        ("prefix_tuning", {"init": "labels"}, "init must be one of activations, random"),
        ("prefix_tuning", {"init_text": "  "}, "init_text"),
        ("p_tuning", {"encoder": "gru"}, "encoder must be one of"),
        ("id_spam", {"layer": 2}, "layer must be in 0..1"),
        ("id_spam", {"heads": 3}, "heads"),
        ("iapt", {"layers": "0,2"}, "layers must be in 0..1"),
        ("iapt", {"layers": "x"}, "layers must be 'all'"),
        ("iapt", {"activation": "rational"}, "activation must be one of relu, gelu, silu, tanh"),
        ("lora", {}, "unknown method"),
    ]
    for name, config, match in cases:
        with pytest.raises(InputError, match=match) as exc:
            build_method(name, config, dims, embedding_weight=weight, tokenizer=tok)
        assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="tokenizer"):
        build_method("prompt_tuning", {"init": "labels"}, dims, embedding_weight=weight, label_words=["x"])


def test_method_config_rebuilds_and_dims_agree(tiny_model_dir, base, tok):
    from promptreg.fingerprints.model import model_fingerprint

    dims = ModelDims.from_config(base.config)
    assert dims == ModelDims(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                             vocab_size=base.config.vocab_size)
    assert ModelDims.from_manifest(model_fingerprint(tiny_model_dir).to_dict()) == dims
    for name in METHOD_NAMES:
        sp = make(name, base, tok)
        mc = sp.method_config()
        assert mc == json.loads(json.dumps(mc))  # JSON-able
        expected = SMALL[name] | ({"layer": 1} if name == "id_spam" else {}) | (
            {"layers": [0, 1]} if name == "iapt" else {})
        assert make_config(name, mc) == make_config(name, expected)  # derived keys are ignored
        assert METHODS[name].method == name and sp.input_slots == (4 if sp.kind == "input" else 0)
    assert make("id_spam", base, tok).method_config()["layer"] == 1
    p = make("p_tuning", base, tok).method_config()
    assert (p["encoder_type"], p["encoder_hidden_size"]) == ("MLP", 32)


# ---- prefix tuning: activation initialisation ------------------------------------------------------------

def plain_label_logits(base, tok, prefix_ids, text):
    """The base model's label logits for [prefix_ids + the templated text], computed the plain way."""
    ids = torch.tensor([list(prefix_ids) + tok(f"Review : {text} Sentiment :")["input_ids"]])
    with torch.no_grad():
        return base(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1, label_ids(tok)]


PREFIX_INITS = [
    ({}, LABEL_WORDS, "labels"),
    ({"init_text": "a truly great film"}, LABEL_WORDS, "text"),  # an explicit init_text wins
    ({}, None, "vocab"),
]


@pytest.mark.parametrize("projection", [True, False])
@pytest.mark.parametrize("extra,words,source", PREFIX_INITS, ids=[s for _, _, s in PREFIX_INITS])
def test_activation_init_reproduces_the_real_tokens(base, tok, projection, extra, words, source):
    config = SMALL["prefix_tuning"] | {"num_virtual_tokens": 5, "projection": projection} | extra
    sp = make("prefix_tuning", base, tok, config, label_words=words)
    mc = sp.method_config()
    assert (mc["init"], mc["init_effective"], mc["init_source"]) == ("activations", "activations", source)
    ids = mc["init_token_ids"]
    assert len(ids) == 5
    if source == "labels":  # the label words' tokens, repeated to N
        word_ids = [i for w in LABEL_WORDS for i in tok(w, add_special_tokens=False)["input_ids"]]
        assert ids == [word_ids[i % len(word_ids)] for i in range(5)]
    elif source == "text":
        text_ids = tok("a truly great film", add_special_tokens=False)["input_ids"]
        assert ids == [text_ids[i % len(text_ids)] for i in range(5)]
    else:
        assert all(i < 5000 and i not in tok.all_special_ids for i in ids)
    model = SoftPromptModel(base, sp)
    texts = ["the movie was great", "i disliked the long and boring ending", "awful"]
    with torch.no_grad():
        ours = model.label_logits(*batch(tok, sp, texts), label_ids(tok))  # left-padded batch
    want = torch.cat([plain_label_logits(base, tok, ids, t) for t in texts])
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-4)
    if projection:  # residual MLP on a fixed base: zero at step 0, exported with its base
        tensors = sp.export_tensors()
        assert torch.equal(tensors["encoder.base_kv"], tensors["prompt_embeddings"])
        assert not any(n.endswith("base_kv") for n, _ in sp.named_parameters())


def test_activation_init_is_seeded_and_leaves_the_base_alone(base, tok):
    config = SMALL["prefix_tuning"] | {"projection": False}
    before = {k: v.clone() for k, v in base.state_dict().items()}
    state = torch.random.get_rng_state()
    a = make("prefix_tuning", base, tok, config, seed=1, label_words=None)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = make("prefix_tuning", base, tok, config, seed=1, label_words=None)
    c = make("prefix_tuning", base, tok, config, seed=2, label_words=None)
    assert torch.equal(a.prefix, b.prefix) and not torch.equal(a.prefix, c.prefix)
    assert a.prefix.requires_grad and a.prefix.grad_fn is None  # a leaf: no graph into the base model
    assert all(p.grad is None for p in base.parameters())
    after = base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not base.training


def test_activation_init_without_base_model_falls_back_to_random(base, tok):
    dims = ModelDims.from_config(base.config)
    sp = build_method("prefix_tuning", SMALL["prefix_tuning"], dims,
                      embedding_weight=base.get_input_embeddings().weight, tokenizer=tok, label_words=LABEL_WORDS)
    mc = sp.method_config()
    assert (mc["init"], mc["init_effective"]) == ("activations", "random")
    assert "encoder.base_kv" not in sp.export_tensors()
    # the other methods accept (and ignore) base_model
    pt = build_method("prompt_tuning", SMALL["prompt_tuning"], dims, embedding_weight=base.get_input_embeddings().weight,
                      tokenizer=tok, label_words=LABEL_WORDS, base_model=base)
    assert pt.method_config()["init_effective"] == "labels"


def test_activation_init_trains_through_the_projection(base, tok):
    sp = make("prefix_tuning", base, tok)
    model = SoftPromptModel(base, sp)
    start = {k: v.clone() for k, v in sp.encoder.state_dict().items()}
    train(model, tok, batch(tok, sp), steps=3)
    now = sp.encoder.state_dict()
    assert torch.equal(now["base_kv"], start["base_kv"])  # a fixed buffer
    for key in ("embedding.weight", "transform.0.weight", "transform.2.weight"):
        assert not torch.equal(now[key], start[key]), key  # the whole MLP trains


def test_prefix_artifacts_without_base_kv_still_load(base, tok):
    """Artifacts stored before the init option: projection encoders without ``encoder.base_kv``."""
    sp = make("prefix_tuning", base, tok, SMALL["prefix_tuning"] | {"init": "random"})
    tensors = sp.export_tensors()
    assert "encoder.base_kv" not in tensors
    old_config = {"num_virtual_tokens": 4, "projection": True, "projection_hidden": 32}
    for trainable in (False, True):
        rebuilt = method_from_tensors("prefix_tuning", old_config, tensors, sp.dims, trainable=trainable)
        assert torch.equal(rebuilt.export_tensors()["prompt_embeddings"], tensors["prompt_embeddings"])
        assert rebuilt.export_tensors().keys() == tensors.keys()
        assert rebuilt.method_config()["init"] == "random"
    wrong = dict(tensors) | {"encoder.base_kv": torch.zeros(3, 7)}
    with pytest.raises(InputError, match="base_kv"):
        method_from_tensors("prefix_tuning", old_config, wrong, sp.dims, trainable=True)
