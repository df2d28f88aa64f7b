"""Input-level soft prompts as prompt embeddings (runtime.prompt_embeds, issue 18), without vLLM.

The embeddings an engine receives for ``[left text | soft prompt | template + text]`` must make a plain
forward of the base model (inputs_embeds, positions 0..T-1) give what SoftPromptModel gives for the row:
that is the whole claim the vLLM engine rests on, checked here on the tiny random Llama (float32)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from promptreg.errors import InputError
from promptreg.runtime.prompt_embeds import (
    build_prompt_embeds,
    embedding_matrix,
    load_embedding_base,
    method_kind,
    refuse_unless_input,
)

TEMPLATES = ["{virtual}Review : {text} Sentiment :", "Review : {virtual} {text} Sentiment :"]
CONFIGS = {"prompt_tuning": {"num_virtual_tokens": 3, "init": "random"},
           "p_tuning": {"num_virtual_tokens": 4, "encoder": "mlp", "encoder_hidden": 16}}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _soft(model, tok, method, seed):
    from promptreg.softprompt.methods import ModelDims, build_method

    sp = build_method(method, CONFIGS[method], ModelDims.from_config(model.config),
                      embedding_weight=model.get_input_embeddings().weight.detach(), tokenizer=tok, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sp.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return sp.eval()


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_plain_forward_on_the_embeddings_equals_the_soft_prompt_model(tiny, method, template):
    from promptreg.softprompt.collate import Encoded, Encoder, collate
    from promptreg.softprompt.soft_model import SoftPromptModel

    model, tok = tiny
    sp = _soft(model, tok, method, seed=7)
    enc = Encoder(tok, template, slots=sp.input_slots)
    label_ids = torch.tensor([tok.convert_tokens_to_ids("positive"), tok.convert_tokens_to_ids("negative")])
    sm = SoftPromptModel(model, sp, share_prefix=False)
    for text in ["the movie was great", "bad", "a long and boring film with dull acting"]:
        ids, virtual = enc.prompt(text)
        with torch.no_grad():
            embeds = build_prompt_embeds(model.get_input_embeddings().weight, ids, virtual, sp.prompt())
            # the slots hold the prompt in order, every other row is the token's embedding
            slots = [i for i, v in enumerate(virtual) if v]
            assert torch.equal(embeds[slots], sp.prompt())
            others = [i for i, v in enumerate(virtual) if not v]
            assert torch.equal(embeds[others], model.get_input_embeddings().weight[[ids[i] for i in others]])
            if template.startswith("Review"):
                assert others[0] < slots[0]  # left text before the soft prompt
            plain = model(inputs_embeds=embeds.unsqueeze(0)).logits[0, -1]
            batch = collate([Encoded(ids, virtual)], enc.pad_id)
            want = sm.label_logits(batch["input_ids"], batch["attention_mask"], batch["virtual_mask"], label_ids)[0]
            ref_tokens = sm.generate(batch["input_ids"], batch["attention_mask"], batch["virtual_mask"],
                                     max_new_tokens=6)[0]
        assert torch.allclose(plain[label_ids], want, atol=1e-5), (plain[label_ids], want)
        # greedy continuation from the embeddings alone (no soft prompt machinery) gives the same tokens
        cur, got = embeds.unsqueeze(0), []
        with torch.no_grad():
            for _ in range(6):
                nxt = int(model(inputs_embeds=cur).logits[0, -1].argmax())
                got.append(nxt)
                cur = torch.cat([cur, model.get_input_embeddings().weight[[nxt]].unsqueeze(0)], dim=1)
        assert got == ref_tokens


def test_embedding_matrix_is_read_alone_from_single_and_sharded_folders(tiny, tiny_model_dir, tiny_model_dir_sharded):
    model, _ = tiny
    want = model.get_input_embeddings().weight.detach()
    assert torch.equal(embedding_matrix(tiny_model_dir), want)
    assert torch.equal(embedding_matrix(tiny_model_dir_sharded), want)
    base = load_embedding_base(tiny_model_dir)
    assert base.dims.hidden_size == want.shape[1] and torch.equal(base.weight, want)
    assert base.fingerprint == load_embedding_base(tiny_model_dir_sharded).fingerprint


def test_only_input_level_methods_pass_and_the_others_are_refused_in_one_line():
    assert method_kind("prompt_tuning") == method_kind("p_tuning") == "input"
    refuse_unless_input("prompt_tuning", "a:1")
    refuse_unless_input("p_tuning", "a:2")
    for method in ("prefix_tuning", "id_spam"):
        with pytest.raises(InputError) as err:
            refuse_unless_input(method, "s:3")
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"s:3 is {method}") and "promptreg serve --engine promptreg" in msg
    with pytest.raises(InputError, match="unknown method"):
        refuse_unless_input("lora", "s:4")


def test_bad_rows_are_refused(tiny):
    model, _ = tiny
    w = model.get_input_embeddings().weight
    prompt = torch.zeros(2, w.shape[1])
    with pytest.raises(InputError, match="2 virtual tokens, the row has 1"):
        build_prompt_embeds(w, [1, 2, 3], [False, True, False], prompt)
    with pytest.raises(InputError, match="outside the vocabulary"):
        build_prompt_embeds(w, [1, 10_000], None, None)
    with pytest.raises(InputError, match="width"):
        build_prompt_embeds(w, [1, 2], [True, True], torch.zeros(2, 7))
    assert torch.equal(build_prompt_embeds(w, [4, 5], None, None), w[[4, 5]])


def test_the_vllm_engine_module_imports_without_vllm():
    code = ("import sys; import promptreg.runtime.vllm_engine as m; "
            "assert 'vllm' not in sys.modules, 'vllm imported eagerly'; print(m.VllmRuntime.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "VllmRuntime", out.stderr[-2000:]


def test_serve_engine_vllm_without_vllm_is_a_one_line_error(tmp_path, tiny_model_dir):
    import importlib.util

    from tests.cli_utils import assert_one_line_error, run_cli

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: tests/vllm runs serve --engine vllm for real")
    res = run_cli("--home", str(tmp_path / "home"), "serve", "--engine", "vllm", "--model", str(tiny_model_dir),
                  "--port", "0", cwd=tmp_path)
    assert_one_line_error(res, 2, "vLLM is not installed in this environment: run 'make vllm-venv'")
