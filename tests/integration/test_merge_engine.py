"""The merge engine on real checkpoint folders: exact values, layout, heads, pre-flight errors, bad weights."""

from __future__ import annotations

import json
import math
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
from upcycle.merging import kernels, load_config, merge, plan_merge
from upcycle.merging.card import hub_id


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

# ---------------------------------------------------------------- every method against its textbook formula
# The expected values below are written from the papers' definitions in plain torch (float64), without
# upcycle's kernels, combine() or seeds, so that a wrong kernel cannot agree with itself.

WEIGHTS = (0.7, 0.5)  # config()'s weights of a and b
COLINEAR = 0.9995  # mergekit's slerp DOT_THRESHOLD: above this |cos|, interpolate linearly


def body(model: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """The float64 value of a bare output name in an expert (stored under the ``bert.`` body prefix)."""
    return model[f"bert.{name}"].double()


def top_density(delta: torch.Tensor, density: float) -> torch.Tensor:
    """TIES' trim: keep the entries whose |delta| reaches the k-th largest magnitude, k = max(1, int(density n))."""
    magnitude = delta.abs().reshape(-1)
    keep = max(1, int(density * magnitude.numel()))
    cut = magnitude.sort(descending=True).values[keep - 1]
    return torch.where(delta.abs() >= cut, delta, torch.zeros_like(delta))


def elect_and_mean(weighted: list[torch.Tensor], weights: list[float], normalize: bool) -> torch.Tensor:
    """TIES' sign election (+ when the sum is 0) and disjoint merge of weighted deltas, entry by entry."""
    total = sum(weighted)
    sign = torch.where(total >= 0, 1.0, -1.0).double()
    mixed = torch.zeros_like(total)
    divisor = torch.zeros_like(total)
    for value, weight in zip(weighted, weights):
        agrees = (value * sign) > 0  # a zero (trimmed or dropped) entry agrees with no sign
        mixed += torch.where(agrees, value, 0.0)
        divisor += torch.where(agrees, weight, 0.0)
    if not normalize:
        return mixed
    return mixed / torch.where(divisor == 0, 1.0, divisor)


def textbook_slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> tuple[torch.Tensor, bool]:
    """sin((1-t) w) / sin w * a + sin(t w) / sin w * b, w the angle between a and b (flattened); linear when
    the two are (nearly) colinear or one is zero. Returns the value and whether it was spherical."""
    cos = float((a.reshape(-1) @ b.reshape(-1)) / (a.norm() * b.norm())) if a.norm() * b.norm() > 0 else 1.0
    if abs(cos) > COLINEAR:
        return (1 - t) * a + t * b, False
    omega = math.acos(cos)
    return (math.sin((1 - t) * omega) * a + math.sin(t * omega) * b) / math.sin(omega), True


def expected_merge(method: str, base: dict[str, torch.Tensor], a: dict[str, torch.Tensor],
                   b: dict[str, torch.Tensor], name: str, lam: float, density: float) -> torch.Tensor:
    theta_a, theta_b = body(a, name), body(b, name)
    w_a, w_b = WEIGHTS
    if method == "linear":  # model soup: the weighted average, normalised by default
        return (w_a * theta_a + w_b * theta_b) / (w_a + w_b)
    start = base[name].double()
    if method == "task_arithmetic":  # not normalised by default
        return start + lam * (w_a * (theta_a - start) + w_b * (theta_b - start))
    if method == "ties":  # normalised by default: the disjoint mean
        trimmed = [w_a * top_density(theta_a - start, density), w_b * top_density(theta_b - start, density)]
        return start + lam * elect_and_mean(trimmed, [w_a, w_b], normalize=True)
    raise AssertionError(method)


@pytest.mark.parametrize("method, extra", [
    ("linear", {}),
    ("task_arithmetic", {}),
    ("ties", {"parameters": {"lambda": 0.9}}),
])
def test_every_method_matches_its_textbook_formula(family, tmp_path, method, extra):
    spec = config(method, family, **extra)
    density = 0.5
    if method == "ties":
        for entry in spec["models"]:
            entry["parameters"]["density"] = density
    out = merge(spec, tmp_path / method)
    result, base = tensors(out.path), tensors(family["base"])
    a, b = tensors(family["a"]), tensors(family["b"])
    assert set(result) == set(base) - {"embeddings.position_ids"} and len(result) == 39
    lam = extra.get("parameters", {}).get("lambda", 1.0)
    for name, value in result.items():
        assert value.dtype == torch.float32
        expected = expected_merge(method, base, a, b, name, lam, density)
        assert torch.allclose(value.double(), expected, rtol=1e-5, atol=1e-6), name
    if method == "ties":  # the trim and the election matter: without them it would be the plain mean
        name = "encoder.layer.0.attention.self.query.weight"
        untrimmed = expected_merge("task_arithmetic", base, a, b, name, lam, 1.0)
        assert not torch.allclose(result[name].double(), untrimmed, atol=1e-3)
    again = merge(spec, tmp_path / f"{method}-again")
    assert again.fingerprint == out.fingerprint


def test_slerp_matches_its_textbook_formula(family, tmp_path):
    spec = config("slerp", family, names=("a",), parameters={"t": 0.3})
    out = merge(spec, tmp_path / "slerp")
    result, base, a = tensors(out.path), tensors(family["base"]), tensors(family["a"])
    assert set(result) == set(base) - {"embeddings.position_ids"}
    spherical = set()
    for name, value in result.items():
        expected, curved = textbook_slerp(base[name].double(), body(a, name), 0.3)
        assert torch.allclose(value.double(), expected, rtol=1e-5, atol=1e-6), name
        if curved:
            spherical.add(name)
            # on the arc, not the chord: the linear interpolation is measurably different
            assert not torch.allclose(value.double(), 0.7 * base[name].double() + 0.3 * body(a, name), atol=1e-4)
    # both branches are exercised: the random matrices are far from colinear, LayerNorm weights (1 + noise) are not
    assert "encoder.layer.0.attention.self.query.weight" in spherical
    assert "embeddings.LayerNorm.weight" not in spherical and "embeddings.LayerNorm.weight" in result
    again = merge(spec, tmp_path / "slerp-again")
    assert again.fingerprint == out.fingerprint


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_drops_to_the_base_or_rescales_exactly(family, tmp_path, method):
    """DARE's masks are random: check what any correct implementation must give instead of replaying its RNG.

    Every entry of the merged delta is the method's combination (a sum for dare_linear, TIES' elected sum for
    dare_ties; neither normalises by default) of some subset of the inputs' weighted deltas, each survivor
    rescaled by exactly 1 / (1 - p); each model keeps about ``density`` of its entries, independently of the
    other; with density 1 nothing is dropped.
    """
    density, drop = 0.3, 0.7
    spec = config(method, family, seed=5)
    for entry in spec["models"]:
        entry["parameters"]["density"] = density
    out = merge(spec, tmp_path / method)
    result, base = tensors(out.path), tensors(family["base"])
    a, b = tensors(family["a"]), tensors(family["b"])
    assert set(result) == set(base) - {"embeddings.position_ids"}
    kept_a = kept_b = kept_both = counted = 0
    for name, value in result.items():
        start = base[name].double()
        deltas = [WEIGHTS[0] * (body(a, name) - start) / (1 - drop), WEIGHTS[1] * (body(b, name) - start) / (1 - drop)]
        masks = [(0, 0), (1, 0), (0, 1), (1, 1)]
        if method == "dare_linear":
            options = [m_a * deltas[0] + m_b * deltas[1] for m_a, m_b in masks]
        else:
            options = [elect_and_mean([m_a * deltas[0], m_b * deltas[1]], list(WEIGHTS), normalize=False)
                       for m_a, m_b in masks]
        options = torch.stack(options)  # (4, *S): the merged delta for each pair of keep/drop decisions
        distance = (options - (value.double() - start)).abs()
        closest = distance.min(0)
        # each entry is one of the four, to float32 rounding of the stored value (never e.g. an unscaled survivor)
        assert bool((closest.values <= 1e-6 + 1e-5 * value.double().abs()).all()), name
        # where the four options are far apart, the entry tells which inputs were kept
        gaps = (options.unsqueeze(0) - options.unsqueeze(1)).abs()
        gaps = gaps + torch.eye(4, dtype=torch.float64).reshape(4, 4, *([1] * value.dim())) * 1e9
        clear = gaps.amin(dim=(0, 1)) > 1e-4
        choice = closest.indices[clear]
        counted += int(clear.sum())
        kept_a += int(((choice == 1) | (choice == 3)).sum())
        kept_b += int(((choice == 2) | (choice == 3)).sum())
        kept_both += int((choice == 3).sum())
    assert counted > 200_000  # the word embeddings alone are ~1M entries
    assert abs(kept_a / counted - density) < 0.01 and abs(kept_b / counted - density) < 0.01
    assert abs(kept_both / counted - density**2) < 0.01  # the two models' masks are independent
    again = merge(spec, tmp_path / f"{method}-again")
    assert again.fingerprint == out.fingerprint  # seeded per tensor
    other = merge({**spec, "seed": 6}, tmp_path / f"{method}-other-seed")
    assert other.fingerprint != out.fingerprint
    # density 1 drops nothing: dare_linear is task arithmetic, dare_ties is TIES' elected sum without a trim
    for entry in spec["models"]:
        entry["parameters"]["density"] = 1.0
    full = tensors(merge(spec, tmp_path / f"{method}-full").path)
    for name, value in full.items():
        start = base[name].double()
        weighted = [WEIGHTS[0] * (body(a, name) - start), WEIGHTS[1] * (body(b, name) - start)]
        if method == "dare_linear":
            expected = expected_merge("task_arithmetic", base, a, b, name, 1.0, 1.0)
        else:
            expected = start + elect_and_mean(weighted, list(WEIGHTS), normalize=False)
        assert torch.allclose(value.double(), expected, rtol=1e-5, atol=1e-6), name


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
    assert torch.equal(model.embeddings.word_embeddings.weight,
                       tensors(single.path)["embeddings.word_embeddings.weight"])


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
    with pytest.raises(MergeError,
                       match=r"poisoned: tensor 'bert.encoder.layer.1.attention.self.key.weight' holds 1 NaN"):
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


def table_rows(output: str) -> list[list[str]]:
    """The body rows of a rich table printed in ``output``, cell by cell (box-drawing or ASCII borders)."""
    return [[cell.strip() for cell in re.split("[│|]", line)[1:-1]] for line in output.splitlines()
            if line[:1] in ("│", "|")]


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
    dry = runner.invoke(app, ["merge", str(spec), str(tmp_path / "out"), "--dry-run"], env={"COLUMNS": "250"})
    assert dry.exit_code == 0, dry.output
    stored = {n: load_file(family[n] / "model.safetensors") for n in ("a", "b", "base")}
    assert [len(stored[n]) for n in ("a", "b", "base")] == [41, 41, 39]  # the experts add classifier.{weight,bias}

    def mib(name: str) -> str:
        return f"{sum(t.numel() * t.element_size() for t in stored[name].values()) / 2**20:.1f}"

    rows = table_rows(dry.output)
    arch = "bert-L2-H32-V30522"
    assert rows == [
        ["input", str(family["a"]), f"BertForSequenceClassification ({arch})", "41", mib("a")],
        ["input", str(family["b"]), f"BertForSequenceClassification ({arch})", "41", mib("b")],
        ["base", str(family["base"]), f"BertModel ({arch})", "39", mib("base")],
    ], dry.output
    lines = dry.output.splitlines()
    assert lines[0] == f"merge plan: ties -> {tmp_path / 'out'}"
    output = next(line for line in lines if line.startswith("output: "))
    assert output.startswith(f"output: BertModel, 39 tensors, float32, {mib('base')} MiB in 1 shard(s); heads dropped; "
                             f"tokenizer from {family['base']}; working memory about "), output
    # the 5 embeddings tensors get the rule's lambda, the other 34 the default
    embeddings = sum(1 for name in stored["base"] if re.search(r"embeddings\.", name))
    assert embeddings == 5
    groups = sorted(line.strip() for line in lines if re.match(r" +\d+ tensors: ", line))
    assert groups == sorted([
        f"{39 - embeddings} tensors: merge weights=[1.0, 1.0] densities=[0.5, 0.5] lambda=1.0 normalize=True",
        f"{embeddings} tensors: merge weights=[1.0, 1.0] densities=[0.5, 0.5] lambda=0.0 normalize=True",
    ]), dry.output
    assert lines[-1] == "dry run: no tensor was read or written." and not (tmp_path / "out").exists()
    db = tmp_path / "zoo.db"
    done = runner.invoke(app, ["merge", str(spec), str(tmp_path / "out"), "--register", "--db", str(db)])
    assert done.exit_code == 0, done.output
    merged = resolve_checkpoint(tmp_path / "out")
    assert f"registered out {merged.fingerprint[:12]} in {db}" in done.output
    values, base = tensors(tmp_path / "out"), tensors(family["base"])
    assert torch.equal(values["embeddings.word_embeddings.weight"], base["embeddings.word_embeddings.weight"])
    listing = runner.invoke(app, ["zoo", "list", "--db", str(db)], env={"COLUMNS": "250"})
    assert listing.exit_code == 0, listing.output
    entries = table_rows(listing.output)
    assert entries == [["out", merged.fingerprint[:12], arch, "", resolve_checkpoint(family["base"]).fingerprint[:12],
                        str(tmp_path / "out")]], listing.output
    again = runner.invoke(app, ["merge", str(spec), str(tmp_path / "out")])
    assert again.exit_code == 2 and "already exists" in again.output


def test_kernels_refuse_nan_by_name():
    with pytest.raises(MergeError, match="m: tensor 'w' holds 2 NaN or inf"):
        kernels.require_finite(torch.tensor([1.0, float("inf"), float("nan")]), name="w", model="m")
