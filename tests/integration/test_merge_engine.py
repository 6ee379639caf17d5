"""The merge engine on real checkpoint folders: exact values, layout, heads, pre-flight errors, bad weights."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_bert
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from upcycle.checkpoints import (
    load_tokenizer,
    quiet_transformers,
    resolve_checkpoint,
    save_checkpoint,
)
from upcycle.checkpoints.streaming import MappedCheckpoint
from upcycle.cli import app
from upcycle.errors import CheckpointError, ConfigError, MergeError
from upcycle.merging import combine, kernels, load_config, merge, plan_merge
from upcycle.merging.card import hub_id
from upcycle.merging.engine import tensor_seed


def finetuned_variant(base: Path, folder: Path, seed: int, num_labels: int = 2, scale: float = 0.02,
                      recorded_base: str | None = None) -> Path:
    """``base`` as a sequence classifier with every weight moved by seeded noise, saved the way upcycle saves
    a finetuned checkpoint (with the base's fingerprint in its provenance)."""
    from transformers import AutoModelForSequenceClassification

    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=num_labels)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    checkpoint = resolve_checkpoint(base)
    save_checkpoint(model, load_tokenizer(checkpoint), folder,
                    {"base_fingerprint": recorded_base or checkpoint.fingerprint, "task": f"task{seed}"})
    return folder


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family")
    base = save_tiny_bert(root / "base")
    return {"base": base, "a": finetuned_variant(base, root / "a", 1), "b": finetuned_variant(base, root / "b", 2),
            "c3": finetuned_variant(base, root / "c3", 3, num_labels=3)}


def config(method: str, family: dict[str, Path], names=("a", "b"), **extra) -> dict:
    models = [{"model": str(family[n]), "parameters": {"weight": w}} for n, w in zip(names, (0.7, 0.5, 0.3))]
    result = {"merge_method": method, "models": models, **extra}
    if method != "linear":
        result.setdefault("base_model", str(family["base"]))
    return result


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    checkpoint = resolve_checkpoint(folder)
    merged: dict[str, torch.Tensor] = {}
    for file in checkpoint.weight_files:
        merged.update(load_file(file))
    return merged


def test_task_arithmetic_output_equals_the_kernel_on_every_tensor(family, tmp_path):
    out = merge(config("task_arithmetic", family, parameters={"lambda": 0.8}), tmp_path / "ta")
    result, base = tensors(out.path), tensors(family["base"])
    a, b = tensors(family["a"]), tensors(family["b"])
    assert set(result) == set(base) - {"embeddings.position_ids"}  # an int buffer the experts do not store
    for name, value in result.items():
        expected = base[name] + 0.8 * (0.7 * (a[f"bert.{name}"] - base[name]) + 0.5 * (b[f"bert.{name}"] - base[name]))
        assert torch.allclose(value, expected, atol=1e-6), name
    assert not any(name.startswith("classifier") for name in result)
    # a bare body with the base's tokenizer, provenance and a card
    assert out.config["architectures"] == ["BertModel"] and "id2label" not in out.config
    assert (out.path / "tokenizer.json").read_bytes() == (family["base"] / "tokenizer.json").read_bytes()
    record = json.loads((out.path / "upcycle.json").read_text())
    assert record["merge_method"] == "task_arithmetic" and record["seed"] == 0 and record["upcycle_version"]
    assert [row["fingerprint"] for row in record["inputs"]] == [resolve_checkpoint(family[n]).fingerprint
                                                                for n in ("a", "b")]
    assert record["base_fingerprint"] == resolve_checkpoint(family["base"]).fingerprint
    card = (out.path / "README.md").read_text()
    assert "task_arithmetic" in card and record["inputs"][0]["fingerprint"][:16] in card
    assert load_config(out.path / "merge_config.yaml").merge_method == "task_arithmetic"
    from transformers import AutoModelForSequenceClassification

    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(out.path, num_labels=2)
    ids = torch.tensor([[101, 2307, 102]])
    assert torch.isfinite(model(input_ids=ids).logits).all()


def test_the_card_names_a_local_base_in_prose_only_and_links_no_missing_page(family, tmp_path, monkeypatch):
    """``org/name``-looking but a local folder: no ``base_model:`` for the hub to follow, the name in the text."""
    monkeypatch.chdir(family["base"].parent.parent)
    local = f"{family['base'].parent.name}/base"
    out = merge(config("task_arithmetic", family, base_model=local), tmp_path / "card")
    card = (out.path / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "base_model" not in front and "library_name: transformers" in front
    assert f"on the base `{local}`" in card and "pypi.org" not in card and "](http" not in card


def test_only_a_hub_id_becomes_the_cards_base_model(family):
    assert hub_id("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_id("org/name:main") == "org/name"
    assert [hub_id(reference) for reference in ("minilm", "MiniLM", str(family["base"]), "./a/b", "~/a/b")] == [
        None] * 5

@pytest.mark.parametrize("method, extra", [
    ("linear", {}),
    ("ties", {"parameters": {"lambda": 1.0}}),
    ("dare_ties", {"seed": 3}),
    ("slerp", {"parameters": {"t": 0.3}}),
])
def test_every_method_matches_its_kernel(family, tmp_path, method, extra):
    spec = config(method, family, names=("a",) if method == "slerp" else ("a", "b"), **extra)
    if method in ("ties", "dare_ties"):
        for entry in spec["models"]:
            entry["parameters"]["density"] = 0.5
    out = merge(spec, tmp_path / method)
    result, base = tensors(out.path), tensors(family["base"])
    inputs = [tensors(family[n]) for n in (("a",) if method == "slerp" else ("a", "b"))]
    plan = plan_merge(load_config(spec))
    for item in plan.tensors:
        if item.action != "merge":
            continue
        values = [model[source] for model, source in zip(inputs, item.sources)]
        generator = torch.Generator().manual_seed(tensor_seed(3, item.output.name)) if method == "dare_ties" else None
        expected = combine(item.parameters, base.get(item.base_source), values, generator)
        assert torch.equal(result[item.output.name], expected), item.output.name
    again = merge(spec, tmp_path / f"{method}-again")
    assert again.fingerprint == out.fingerprint  # deterministic, DARE included (seeded per tensor)


def test_whole_model_ties_trim_equals_brute_force_on_the_concatenated_task_vectors(family, tmp_path):
    spec = config("ties", family, trim_scope="model")
    for entry, density in zip(spec["models"], (0.3, 0.6)):
        entry["parameters"]["density"] = density
    out = merge(spec, tmp_path / "ties-model")
    result, base = tensors(out.path), tensors(family["base"])
    inputs = [tensors(family[n]) for n in ("a", "b")]
    merged = [t for t in plan_merge(load_config(spec)).tensors if t.action == "merge"]
    kept = []
    for i, (model, density) in enumerate(zip(inputs, (0.3, 0.6))):
        deltas = {t.output.name: model[t.sources[i]] - base[t.base_source] for t in merged}
        flat = torch.cat([d.reshape(-1) for d in deltas.values()]).abs()
        cut = flat.kthvalue(flat.numel() - int(density * flat.numel()) + 1).values
        kept.append({name: d * (d.abs() >= cut) for name, d in deltas.items()})
        fraction = sum(int((d != 0).sum()) for d in kept[-1].values()) / flat.numel()
        assert abs(fraction - density) < 1e-3
    for item in merged:
        stack = torch.stack([0.7 * kept[0][item.output.name], 0.5 * kept[1][item.output.name]])
        expected = base[item.base_source] + kernels.disjoint_merge(
            stack, torch.tensor([0.7, 0.5]).reshape(2, *([1] * (stack.dim() - 1))))
        assert torch.allclose(result[item.output.name], expected, atol=1e-6), item.output.name
    # the scope matters: per-tensor trimming keeps a different set of entries
    per_tensor = tensors(merge({**spec, "trim_scope": "tensor"}, tmp_path / "ties-tensor").path)
    assert any(not torch.equal(per_tensor[name], result[name]) for name in result)


def test_whole_model_trim_needs_ties_and_one_density_per_model(family, tmp_path):
    with pytest.raises(ConfigError, match="trim_scope"):
        load_config(config("task_arithmetic", family, trim_scope="model"))
    spec = config("ties", family, trim_scope="model",
                  tensor_parameters=[{"match": "attention", "parameters": {"density": 0.2}}])
    with pytest.raises(MergeError, match="one density"):
        merge(spec, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_sharded_output_loads_and_equals_the_single_file(family, tmp_path):
    spec = config("linear", family)
    single = merge(spec, tmp_path / "single")
    sharded = merge(spec, tmp_path / "sharded", max_shard_bytes=1 << 20)
    assert len(single.weight_files) == 1 and len(sharded.weight_files) > 2
    index = json.loads((sharded.path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors(single.path))
    assert sharded.fingerprint == single.fingerprint  # same tensors, whatever the file layout
    mask = os.umask(0o022)
    os.umask(mask)
    for folder in (single.path, sharded.path):  # an ordinary folder, readable by the umask's rules
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask
        assert {stat.S_IMODE(f.stat().st_mode) for f in folder.iterdir()} == {0o666 & ~mask}
    from transformers import AutoModel

    with quiet_transformers():
        model = AutoModel.from_pretrained(sharded.path)
    assert torch.equal(model.embeddings.word_embeddings.weight, tensors(single.path)["embeddings.word_embeddings.weight"])


def test_heads_are_merged_when_asked_and_shapes_agree_else_dropped(family, tmp_path):
    merged = merge(config("ties", family, heads="merge"), tmp_path / "heads")
    values, a, b = tensors(merged.path), tensors(family["a"]), tensors(family["b"])
    assert merged.config["architectures"] == ["BertForSequenceClassification"]
    assert "bert.encoder.layer.0.attention.self.query.weight" in values
    # the base has no head: the heads are the weighted average of the inputs'
    expected = (0.7 * a["classifier.weight"] + 0.5 * b["classifier.weight"]) / 1.2
    assert torch.allclose(values["classifier.weight"], expected, atol=1e-6)
    plan = plan_merge(load_config(config("linear", family, names=("a", "c3"), heads="merge")))
    assert plan.heads == "dropped" and any("differ" in note for note in plan.notes)


def test_a_llama_style_decoder_merges_with_its_lm_head(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                           tie_word_embeddings=False)
    folders = []
    for seed in range(3):
        torch.manual_seed(seed)
        folder = tmp_path / f"llama{seed}"
        LlamaForCausalLM(settings).save_pretrained(folder, safe_serialization=True)
        folders.append(folder)
    spec = {"merge_method": "ties", "base_model": str(folders[0]), "dtype": "bfloat16",
            "models": [{"model": str(f), "parameters": {"weight": 1.0, "density": 0.3}} for f in folders[1:]]}
    out = merge(spec, tmp_path / "merged")
    values = tensors(out.path)
    assert "lm_head.weight" in values and "model.layers.1.mlp.up_proj.weight" in values
    assert all(value.dtype == torch.bfloat16 for value in values.values())
    assert out.config["architectures"] == ["LlamaForCausalLM"] and out.config["dtype"] == "bfloat16"
    model = LlamaForCausalLM.from_pretrained(out.path)
    assert torch.isfinite(model(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


# ------------------------------------------------------------------------------------------ pre-flight


def rewrite_weights(folder: Path, edit) -> None:
    file = folder / "model.safetensors"
    values = load_file(file)
    edit(values)
    save_file(values, file, metadata={"format": "pt"})


def edit_config(folder: Path, **changes) -> None:
    file = folder / "config.json"
    data = json.loads(file.read_text())
    data.update(changes)
    file.write_text(json.dumps(data))


def mismatched(kind: str, family: dict[str, Path], root: Path) -> tuple[Path, str]:
    """A copy of expert b broken in one way, and the words the pre-flight error must contain."""
    folder = root / f"b-{kind}"
    shutil.copytree(family["b"], folder)
    if kind == "model_type":
        edit_config(folder, model_type="roberta")
        return folder, "'roberta' model"
    if kind == "geometry":
        edit_config(folder, num_hidden_layers=3)
        return folder, "num_layers=3"
    if kind == "vocabulary":
        edit_config(folder, vocab_size=30000)
        return folder, "vocabulary of 30000 tokens"
    if kind == "tokenizer":
        data = json.loads((folder / "tokenizer.json").read_text())
        vocab = data["model"]["vocab"]
        vocab["hello"], vocab["world"] = vocab["world"], vocab["hello"]
        (folder / "tokenizer.json").write_text(json.dumps(data))
        return folder, "Tokenizers differ"
    if kind == "missing tensor":
        rewrite_weights(folder, lambda values: values.pop("bert.encoder.layer.1.output.dense.bias"))
        return folder, "lacks 1 tensor(s)"
    if kind == "shape":
        rewrite_weights(folder, lambda values: values.__setitem__("bert.pooler.dense.bias", torch.zeros(33)))
        return folder, "'pooler.dense.bias' has shape [33]"
    if kind == "other base":
        record = json.loads((folder / "upcycle.json").read_text())
        record["base_fingerprint"] = "f" * 64
        (folder / "upcycle.json").write_text(json.dumps(record))
        return folder, "different base models"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["model_type", "geometry", "vocabulary", "tokenizer", "missing tensor", "shape",
                                  "other base"])
def test_each_mismatch_is_one_clear_error_before_any_tensor_is_read(family, tmp_path, kind, monkeypatch):
    broken, words = mismatched(kind, family, tmp_path)

    def no_reading(*args, **kwargs):
        raise AssertionError("the pre-flight read a tensor")

    monkeypatch.setattr(MappedCheckpoint, "get", no_reading)
    spec = {"merge_method": "linear", "models": [{"model": str(family["a"])}, {"model": str(broken)}]}
    with pytest.raises(MergeError, match=re.escape(words)):
        merge(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_base_that_is_not_the_inputs_base_is_refused(family, tmp_path):
    other = save_tiny_bert(tmp_path / "other-base", seed=9)
    with pytest.raises(MergeError, match="is not the model the inputs were finetuned from"):
        plan_merge(load_config(config("task_arithmetic", family, base_model=str(other))))


def test_nan_in_an_input_is_named_and_nothing_is_written(family, tmp_path):
    poisoned = tmp_path / "poisoned"
    shutil.copytree(family["b"], poisoned)

    def poison(values):
        values["bert.encoder.layer.1.attention.self.key.weight"][0, 0] = float("nan")

    rewrite_weights(poisoned, poison)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    spec = {"merge_method": "linear", "models": [{"model": str(family["a"])}, {"model": str(poisoned)}]}
    with pytest.raises(MergeError, match=r"poisoned: tensor 'bert.encoder.layer.1.attention.self.key.weight' holds 1 NaN"):
        merge(spec, tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_truncated_weights_and_bad_configs_are_clear_errors(family, tmp_path):
    truncated = tmp_path / "truncated"
    shutil.copytree(family["b"], truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        merge({"merge_method": "linear", "models": [{"model": str(family["a"])}, {"model": str(truncated)}]},
              tmp_path / "out")
    with pytest.raises(ConfigError, match="needs a base_model"):
        merge({"merge_method": "ties", "models": [{"model": str(family["a"])}]}, tmp_path / "out")
    with pytest.raises(CheckpointError, match="not found"):
        merge({"merge_method": "linear", "models": [{"model": str(tmp_path / "nowhere")}]}, tmp_path / "out")


def test_cli_dry_run_prints_the_plan_and_merge_registers(family, tmp_path):
    spec = tmp_path / "merge.yaml"
    spec.write_text(f"""
merge_method: ties
base_model: {family['base']}
models:
  - model: {family['a']}
    parameters: {{weight: 1.0, density: 0.5}}
  - model: {family['b']}
    parameters: {{weight: 1.0, density: 0.5}}
tensor_parameters:
  - match: 'embeddings\\.'
    parameters: {{lambda: 0.0}}
""")
    runner = CliRunner()
    dry = runner.invoke(app, ["merge", str(spec), str(tmp_path / "out"), "--dry-run"], env={"COLUMNS": "200"})
    assert dry.exit_code == 0, dry.output
    assert "BertModel" in dry.output and "heads dropped" in dry.output and "lambda=0.0" in dry.output
    assert "no tensor was read or written" in dry.output and not (tmp_path / "out").exists()
    db = tmp_path / "zoo.db"
    done = runner.invoke(app, ["merge", str(spec), str(tmp_path / "out"), "--register", "--db", str(db)])
    assert done.exit_code == 0, done.output
    values, base = tensors(tmp_path / "out"), tensors(family["base"])
    assert torch.equal(values["embeddings.word_embeddings.weight"], base["embeddings.word_embeddings.weight"])
    listing = runner.invoke(app, ["zoo", "list", "--db", str(db)], env={"COLUMNS": "200"})
    assert "out" in listing.output
    again = runner.invoke(app, ["merge", str(spec), str(tmp_path / "out")])
    assert again.exit_code == 2 and "already exists" in again.output


def test_kernels_refuse_nan_by_name():
    with pytest.raises(MergeError, match="m: tensor 'w' holds 2 NaN or inf"):
        kernels.require_finite(torch.tensor([1.0, float("inf"), float("nan")]), name="w", model="m")
