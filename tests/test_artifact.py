"""Artifact format: manifest validation, content hash, and PEFT compatibility on a real (tiny) model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from promptreg.artifact.hashing import folder_sha256
from promptreg.artifact.validate import validate_artifact
from promptreg.errors import InputError
from tests.helpers import TINY_BASE, make_artifact


def test_hash_is_canonical_and_sensitive(tmp_path):
    a = make_artifact(tmp_path / "a", seed=1)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert folder_sha256(a) == folder_sha256(b)
    (b / ".DS_Store").write_text("junk")  # hidden files are not part of the artifact
    assert folder_sha256(a) == folder_sha256(b)
    data = bytearray((b / "soft_prompt.safetensors").read_bytes())
    data[-1] ^= 0x01
    (b / "soft_prompt.safetensors").write_bytes(bytes(data))
    assert folder_sha256(a) != folder_sha256(b)


def test_renaming_a_file_changes_the_hash(tmp_path):
    a = make_artifact(tmp_path / "a")
    before = folder_sha256(a)
    (a / "notes.txt").write_text("x")
    with_notes = folder_sha256(a)
    os.rename(a / "notes.txt", a / "notes2.txt")
    assert len({before, with_notes, folder_sha256(a)}) == 3


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning", "prefix_tuning"])
def test_valid_artifacts_validate(tmp_path, method):
    art = validate_artifact(make_artifact(tmp_path / method, method=method))
    assert art.manifest.method == method
    assert {"promptreg.json", "soft_prompt.safetensors", "adapter_config.json",
            "adapter_model.safetensors"} <= set(art.files)
    assert art.sha256 == folder_sha256(tmp_path / method)


def _rewrite_manifest(folder: Path, mutate) -> None:
    path = folder / "promptreg.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))


def _invalid(tmp_path, mutate, match):
    folder = make_artifact(tmp_path / "art")
    mutate(folder)
    with pytest.raises(InputError, match=match) as exc:
        validate_artifact(folder)
    assert "\n" not in str(exc.value)


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        validate_artifact(tmp_path / "nope")


def test_missing_manifest(tmp_path):
    _invalid(tmp_path, lambda f: (f / "promptreg.json").unlink(), "missing promptreg.json")


def test_malformed_manifest_json(tmp_path):
    _invalid(tmp_path, lambda f: (f / "promptreg.json").write_text("{not json"), "not valid JSON")


def test_manifest_schema_errors(tmp_path):
    _invalid(tmp_path, lambda f: _rewrite_manifest(f, lambda d: d.update(method="lora")), "method")


def test_manifest_bad_fingerprint(tmp_path):
    _invalid(tmp_path, lambda f: _rewrite_manifest(f, lambda d: d["base_model"].update(fingerprint="xyz")),
             "fingerprint")


def test_manifest_unknown_field_rejected(tmp_path):
    _invalid(tmp_path, lambda f: _rewrite_manifest(f, lambda d: d.update(surprise=1)), "surprise")


def _replace_tensor(folder: Path, value: np.ndarray) -> None:
    for file in ("soft_prompt.safetensors", "adapter_model.safetensors"):
        tensors = load_file(str(folder / file))
        tensors["prompt_embeddings"] = value
        save_file(tensors, str(folder / file))


def test_nan_tensor_rejected(tmp_path):
    def mutate(f):
        t = load_file(str(f / "soft_prompt.safetensors"))["prompt_embeddings"].copy()
        t[0, 0] = np.nan
        _replace_tensor(f, t)
    _invalid(tmp_path, mutate, "NaN")


def test_wrong_shape_rejected(tmp_path):
    def mutate(f):
        _replace_tensor(f, np.zeros((4, 63), np.float32))
        _rewrite_manifest(f, lambda d: d["tensors"]["prompt_embeddings"].update(shape=[4, 63]))
    _invalid(tmp_path, mutate, "shape")


def test_manifest_tensor_mismatch_rejected(tmp_path):
    _invalid(tmp_path, lambda f: _rewrite_manifest(f, lambda d: d["tensors"]["prompt_embeddings"].update(shape=[5, 64])),
             "manifest says")


def test_peft_weights_must_match(tmp_path):
    def mutate(f):
        save_file({"prompt_embeddings": np.ones((4, 64), np.float32)}, str(f / "adapter_model.safetensors"))
    _invalid(tmp_path, mutate, "differs")


def test_peft_config_must_match(tmp_path):
    def mutate(f):
        cfg = json.loads((f / "adapter_config.json").read_text())
        cfg["num_virtual_tokens"] = 9
        (f / "adapter_config.json").write_text(json.dumps(cfg))
    _invalid(tmp_path, mutate, "num_virtual_tokens")


def test_pickle_files_refused(tmp_path):
    _invalid(tmp_path, lambda f: (f / "extra.bin").write_bytes(b"\x80\x04N."), "pickle")


def test_symlink_refused(tmp_path):
    (tmp_path / "outside.txt").write_text("secret")
    _invalid(tmp_path, lambda f: os.symlink(tmp_path / "outside.txt", f / "link.txt"), "symlink")


def test_truncated_safetensors_rejected(tmp_path):
    def mutate(f):
        data = (f / "soft_prompt.safetensors").read_bytes()
        (f / "soft_prompt.safetensors").write_bytes(data[:-10])
    _invalid(tmp_path, mutate, "safetensors")


# ---- PEFT compatibility on a real tiny Llama (GQA: 4 heads, 2 kv heads) --------------------------

def _base_info(model_dir: Path) -> dict:
    from promptreg.fingerprints.model import model_fingerprint

    return model_fingerprint(model_dir).to_dict()


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning", "prefix_tuning"])
def test_peft_loads_export_and_matches_reference(tmp_path, tiny_model_dir, method):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, DynamicCache

    base_info = _base_info(tiny_model_dir)
    folder = make_artifact(tmp_path / method, method=method, n=3, base=base_info | {"head_dim": 16})
    validate_artifact(folder)
    prompt = torch.from_numpy(load_file(str(folder / "soft_prompt.safetensors"))["prompt_embeddings"])

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    peft_model = PeftModel.from_pretrained(base, folder).eval()
    assert torch.equal(peft_model.prompt_encoder["default"].embedding.weight.detach(), prompt)

    ids = torch.tensor([[2, 10, 11, 12, 13]])
    with torch.no_grad():
        got = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
        n = prompt.shape[0]
        if method == "prefix_tuning":
            # our documented layout: each row is (layer, key/value, kv head, head_dim)
            kv = prompt.view(n, 2, 2, 2, 16).permute(1, 2, 3, 0, 4)  # layer, k/v, head, token, dim
            cache = DynamicCache(config=plain.config)
            for layer in range(2):
                cache.update(kv[layer, 0].unsqueeze(0), kv[layer, 1].unsqueeze(0), layer)
            mask = torch.ones(1, n + ids.shape[1], dtype=torch.long)
            want = plain(input_ids=ids, past_key_values=cache, attention_mask=mask).logits
        else:
            embeds = torch.cat([prompt.unsqueeze(0), plain.get_input_embeddings()(ids)], dim=1)
            want = plain(inputs_embeds=embeds, attention_mask=torch.ones(1, embeds.shape[1])).logits
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_peft_prefix_generation_runs(tmp_path, tiny_model_dir):
    """PEFT prefix tuning breaks when transformers changes its cache classes: prove generate works."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder = make_artifact(tmp_path / "prefix", method="prefix_tuning", n=3,
                           base=_base_info(tiny_model_dir) | {"head_dim": 16})
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(base, folder).eval()
    ids = torch.tensor([[2, 10, 11]])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 4


def test_base_shape_rules_follow_gqa():
    from promptreg.artifact.manifest import Manifest

    m = Manifest(method="prefix_tuning", num_virtual_tokens=5, tensors={"prompt_embeddings": {"shape": [5, 128], "dtype": "F32"}},
                 base_model=TINY_BASE, created_at="2026-01-01T00:00:00+00:00", promptreg_version="0")
    assert m.expected_prompt_shape() == [5, 2 * 2 * 2 * 16]
