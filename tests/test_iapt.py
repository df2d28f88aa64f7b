"""IAPT beyond the shared method tests (test_methods, test_mixed_runtime, test_training, test_serving,
test_lifecycle parametrise it with the other methods): the generator's pooling and layer selection, the
registry round trip through ``pull``, the refusal of a PEFT export, and ``promptreg train --method iapt``."""

from __future__ import annotations

import json

import pytest
import torch

from promptreg import Registry
from promptreg.errors import InputError
from promptreg.softprompt.methods import ModelDims, build_method, make_config
from promptreg.softprompt.methods.iapt import IaptGenerator
from promptreg.softprompt.soft_model import SoftPromptModel
from tests.helpers import TEMPLATE


def _base(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(tiny_model_dir))


def test_generator_pools_only_real_tokens():
    torch.manual_seed(0)
    gen = IaptGenerator(3, 8, 4, "gelu")
    x = torch.randn(1, 5, 8)
    alone = gen(x[:, 2:], torch.ones(1, 3))
    padded = gen(torch.cat([torch.randn(1, 2, 8) * 100, x[:, 2:]], 1), torch.tensor([[0, 0, 1, 1, 1]]))
    torch.testing.assert_close(alone, padded, rtol=0, atol=1e-6)
    assert alone.shape == (1, 3, 8)
    empty = gen(x, torch.zeros(1, 5))  # no real token: uniform pooling, no NaN
    assert torch.isfinite(empty).all()


def test_layer_selection_and_config(tiny_model_dir):
    base, tok = _base(tiny_model_dir)
    dims = ModelDims.from_config(base.config)
    weight = base.get_input_embeddings().weight
    sp = build_method("iapt", {"layers": "1", "bottleneck": 8}, dims, embedding_weight=weight, tokenizer=tok)
    assert sp.layers == (1,) and sorted({k.split(".")[1] for k in sp.export_tensors()}) == ["1"]
    assert make_config("iapt", {"layers": "all"}).layers is None
    assert make_config("iapt", {"layers": [1, 0, 1]}).layers == (0, 1)
    assert sp.input_slots == 0 and sp.kind == "deep"
    with pytest.raises(InputError, match="iapt: prompt"):
        sp.prompt(torch.zeros(1, 2, 64), torch.ones(1, 2), 0)  # layer 0 has no generator
    # a layer without a generator really is untouched: only layer 1's prompt changes the output
    model = SoftPromptModel(base, sp)
    ids = torch.tensor([tok("Review : great Sentiment :")["input_ids"]])
    with torch.no_grad():
        before = model.hidden_states(ids, torch.ones_like(ids))
        sp.generators["1"].up.bias.add_(1.0)
        after = model.hidden_states(ids, torch.ones_like(ids))
    assert not torch.allclose(before, after)


def test_push_pull_round_trip_and_peft_export_refused(tmp_path, tiny_model_dir):
    from promptreg.artifact.builder import write_artifact
    from promptreg.artifact.manifest import MANIFEST_FILE, Manifest
    from promptreg.artifact.peft_export import adapter_config
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.runtime.loader import soft_prompt_from_folder

    base, tok = _base(tiny_model_dir)
    dims = ModelDims.from_config(base.config)
    sp = build_method("iapt", {"num_virtual_tokens": 3, "bottleneck": 8, "activation": "tanh"}, dims,
                      embedding_weight=base.get_input_embeddings().weight, tokenizer=tok, seed=4)
    with torch.no_grad():
        for p in sp.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    art = write_artifact(tmp_path / "art", method="iapt", tensors=sp.export_tensors(),
                         base_model=model_fingerprint(tiny_model_dir).to_dict(),
                         num_virtual_tokens=sp.num_virtual_tokens, method_config=sp.method_config(),
                         task={"type": "classification", "template": TEMPLATE,
                               "verbalizer": {"positive": [" positive"], "negative": [" negative"]}})
    assert not (art / "adapter_config.json").exists()  # not a PEFT method: no PEFT files
    reg = Registry(home=str(tmp_path / ".promptreg"))
    assert reg.push(art, "ia").version.method == "iapt"
    pulled = reg.pull("ia:1", tmp_path / "pulled")
    manifest = json.loads((pulled / MANIFEST_FILE).read_text())
    assert manifest["method_config"]["layers"] == [0, 1] and manifest["method_config"]["activation"] == "tanh"
    rebuilt = soft_prompt_from_folder(pulled, manifest, dims, label="ia:1")
    ids = torch.tensor([tok("Review : the movie was great Sentiment :")["input_ids"]])
    labels = torch.tensor([tok(w, add_special_tokens=False)["input_ids"][0] for w in (" positive", " negative")])
    with torch.no_grad():
        want = SoftPromptModel(base, sp).label_logits(ids, torch.ones_like(ids), None, labels)
        got = SoftPromptModel(base, rebuilt).label_logits(ids, torch.ones_like(ids), None, labels)
    assert torch.equal(want, got)
    with pytest.raises(ValueError, match="method iapt has no PEFT equivalent") as exc:
        adapter_config(Manifest.model_validate(manifest))
    assert "\n" not in str(exc.value)


def test_cli_train_iapt_and_push(tmp_path, tiny_model_dir):
    from tests.cli_utils import run_cli
    from tests.test_training import toy_examples, write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", toy_examples(24, 8))
    res = run_cli("train", "--model", tiny_model_dir, "--train", train, "--labels", "negative,positive",
                  "--template", TEMPLATE, "--method", "iapt", "--num-virtual-tokens", "2", "--layers", "0,1",
                  "--bottleneck", "8", "--activation", "silu", "--max-steps", "2", "--batch-size", "8",
                  "--lr", "1e-3", "--push", "cli-iapt", "--json", "--no-progress", cwd=tmp_path, timeout=300)
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert report["pushed"]["name"] == "cli-iapt"
    info = Registry(home=str(tmp_path / ".promptreg")).show("cli-iapt:1")
    assert info.method == "iapt"
    res = run_cli("train", "--model", tiny_model_dir, "--train", train, "--method", "iapt", "--layers", "0,x",
                  cwd=tmp_path)
    assert res.code == 2 and res.err.startswith("error: iapt: layers") and "Traceback" not in res.err
