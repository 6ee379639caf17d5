"""Checkpoint resolution, fingerprints, safe loading, head replacement and atomic saving."""

from __future__ import annotations

import ast
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES, save_tiny_bert
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import upcycle
from upcycle.checkpoints import (
    ArchKey,
    atomic_directory,
    head_modules,
    load_for_classification,
    load_tokenizer,
    resolve_checkpoint,
    save_checkpoint,
)
from upcycle.cli import app
from upcycle.errors import CheckpointError

MINILM_FINGERPRINT = "dddbed9b2da0f50ead702201235307c796393f98b63a032ed3106bc9a9e9cba9"


def test_default_minilm_resolves_to_the_bundled_model():
    checkpoint = resolve_checkpoint("minilm")
    assert (checkpoint.path / "model.safetensors").exists()
    assert checkpoint.arch == ArchKey("bert", 6, 384, 1536, 12, 30522, 512)
    assert str(checkpoint.arch) == "bert-L6-H384-V30522"
    # the bundled sentence-transformers/all-MiniLM-L6-v2 weights: a different file or a changed hash is a bug
    assert checkpoint.fingerprint == MINILM_FINGERPRINT


def test_fingerprint_ignores_layout_and_metadata_but_not_values(tiny_bert, tmp_path):
    from transformers import AutoModel

    original = resolve_checkpoint(tiny_bert).fingerprint
    model = AutoModel.from_pretrained(tiny_bert)
    model.save_pretrained(tmp_path / "sharded", safe_serialization=True, max_shard_size="200KB")
    sharded = resolve_checkpoint(tmp_path / "sharded")
    assert len(sharded.weight_files) > 1
    assert sharded.fingerprint == original

    tensors = load_file(tiny_bert / "model.safetensors")
    (tmp_path / "meta").mkdir()
    shutil.copy(tiny_bert / "config.json", tmp_path / "meta")
    save_file(tensors, tmp_path / "meta" / "model.safetensors", metadata={"note": "other metadata"})
    assert resolve_checkpoint(tmp_path / "meta").fingerprint == original

    name = next(iter(tensors))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    save_file(tensors, tmp_path / "meta" / "model.safetensors")
    assert resolve_checkpoint(tmp_path / "meta").fingerprint != original


def test_pickle_weights_are_refused_unless_allowed(tiny_bert, tmp_path):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_bert)
    model.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    if (tmp_path / "pickled" / "model.safetensors").exists():  # transformers 5 may always write safetensors
        (tmp_path / "pickled" / "model.safetensors").unlink()
        torch.save(model.state_dict(), tmp_path / "pickled" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle.*--allow-pickle"):
        resolve_checkpoint(tmp_path / "pickled")
    allowed = resolve_checkpoint(tmp_path / "pickled", allow_pickle=True)
    assert allowed.is_pickle and len(allowed.fingerprint) == 64


def test_unusable_folders_get_clear_errors(tmp_path, tiny_bert):
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        resolve_checkpoint(tmp_path / "empty")
    shutil.copy(tiny_bert / "config.json", tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no weights"):
        resolve_checkpoint(tmp_path / "empty")
    (tmp_path / "empty" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        _ = resolve_checkpoint(tmp_path / "empty").fingerprint


def test_hub_id_offline_is_a_clear_error():
    with pytest.raises(CheckpointError, match="Could not fetch 'someone/some-model'.*HF_HUB_OFFLINE"):
        resolve_checkpoint("someone/some-model")


def test_head_is_kept_for_the_same_labels_and_replaced_otherwise(tiny_bert, tmp_path):
    labels = ("neg", "pos")
    source = load_for_classification(resolve_checkpoint(tiny_bert), labels, seed=0)
    with torch.no_grad():
        source.classifier.weight.fill_(0.5)
    tokenizer = load_tokenizer(resolve_checkpoint(tiny_bert))
    expert = save_checkpoint(source, tokenizer, tmp_path / "expert", {"task": "toy"})
    assert expert.provenance == {"task": "toy"}

    same = load_for_classification(expert, labels, seed=1)
    assert torch.all(same.classifier.weight == 0.5)
    for other_labels in [("pos", "neg"), ("a", "b", "c"), None]:
        other = load_for_classification(expert, other_labels, seed=1)
        assert not torch.any(other.classifier.weight == 0.5)
        assert torch.equal(other.bert.encoder.layer[0].attention.self.query.weight,
                           source.bert.encoder.layer[0].attention.self.query.weight)
    assert [type(m).__name__ for m in head_modules(same)] == ["Dropout", "Linear"]


def test_nan_weights_are_named(tiny_bert, tmp_path):
    tensors = load_file(tiny_bert / "model.safetensors")
    name = "encoder.layer.1.output.dense.weight"
    tensors[name][0, 0] = float("nan")
    (tmp_path / "nan").mkdir()
    shutil.copy(tiny_bert / "config.json", tmp_path / "nan")
    save_file(tensors, tmp_path / "nan" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"layer\.1\.output\.dense\.weight.*NaN"):
        load_for_classification(resolve_checkpoint(tmp_path / "nan"), ("a", "b"), seed=0)


def test_interrupted_save_leaves_nothing(tiny_bert, tmp_path, monkeypatch):
    model = load_for_classification(resolve_checkpoint(tiny_bert), ("a", "b"), seed=0)
    tokenizer = load_tokenizer(resolve_checkpoint(tiny_bert))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C after the weights were written

    monkeypatch.setattr(tokenizer, "save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, tokenizer, tmp_path / "out", {})
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(CheckpointError, match="already exists"):
        with atomic_directory(target):
            pass
    with pytest.raises(RuntimeError):
        with atomic_directory(target, overwrite=True) as staging:
            (staging / "new.txt").write_text("half")
            raise RuntimeError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and (target / "old.txt").exists()
    with atomic_directory(target, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_architectures_differ_in_their_keys(tmp_path):
    wide = resolve_checkpoint(save_tiny_bert(tmp_path / "wide", hidden_size=64))
    deep = resolve_checkpoint(save_tiny_bert(tmp_path / "deep", num_hidden_layers=3))
    assert wide.arch != deep.arch and str(wide.arch) == "bert-L2-H64-V30522"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_checkpoints_have_the_permissions_the_umask_asks_for(tiny_bert, tmp_path, umask):
    """Not the private 0700 / 0600 of a temporary folder and of transformers' weight writer."""
    model = load_for_classification(resolve_checkpoint(tiny_bert), ("a", "b"), seed=0)
    previous = os.umask(umask)
    try:
        saved = save_checkpoint(model, load_tokenizer(resolve_checkpoint(tiny_bert)), tmp_path / "kept", {})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(saved.path.stat().st_mode) == 0o777 & ~umask
    files = sorted(saved.path.iterdir())
    assert "model.safetensors" in [f.name for f in files]
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o666 & ~umask for f in files}


def test_remote_code_is_never_trusted(tiny_bert, sentiment_folder, monkeypatch):
    """Every tokenizer and model load passes trust_remote_code=False explicitly, not by transformers' default."""
    import transformers

    from upcycle.tasks import load_task
    from upcycle.training import embed

    calls: dict[str, list[dict]] = {"AutoTokenizer": [], "AutoModelForSequenceClassification": [], "AutoModel": []}
    for name, seen in calls.items():
        cls = getattr(transformers, name)
        original = cls.from_pretrained  # bound to cls: the wrapper calls straight through

        def recording(*args, _original=original, _seen=seen, **kwargs):
            _seen.append(kwargs)
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", recording)

    checkpoint = resolve_checkpoint(tiny_bert)
    tokenizer = load_tokenizer(checkpoint)
    model = load_for_classification(checkpoint, ("neg", "pos"), seed=0)
    task = load_task(sentiment_folder, text_column="review", label_column="sentiment")
    features = embed(checkpoint, task.splits["test"].take(range(8)))
    assert tokenizer is not None and model is not None and features.shape == (8, 32)  # the real loads ran
    assert {name: len(seen) for name, seen in calls.items()} == {
        "AutoTokenizer": 2, "AutoModelForSequenceClassification": 1, "AutoModel": 1}  # embed loads a tokenizer too
    for name, seen in calls.items():
        for kwargs in seen:
            assert kwargs.get("trust_remote_code", "absent") is False, (name, kwargs)


def test_every_from_pretrained_in_the_source_refuses_remote_code():
    """The runtime test above covers the loads it runs; this covers every call site, present and future."""
    source = Path(upcycle.__file__).parent
    sites = []
    for file in sorted(source.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                trusted = {k.arg: k.value for k in node.keywords}.get("trust_remote_code")
                explicit_false = isinstance(trusted, ast.Constant) and trusted.value is False
                sites.append((f"{file.relative_to(source)}:{node.lineno}", explicit_false))
    assert len(sites) >= 3, sites  # the tokenizer, the classifier and the feature encoder at least
    assert [site for site, ok in sites if not ok] == []


def pickled_checkpoint(tiny_bert: Path, folder: Path) -> Path:
    """The tiny BERT with its config and tokenizer files but pickle weights only (pytorch_model.bin)."""
    from transformers import AutoModel

    folder.mkdir()
    for file in tiny_bert.iterdir():
        if file.suffix != ".safetensors":
            shutil.copy(file, folder)
    torch.save(AutoModel.from_pretrained(tiny_bert).state_dict(), folder / "pytorch_model.bin")
    assert sorted(p.name for p in folder.glob("*.bin")) == ["pytorch_model.bin"]
    assert not list(folder.glob("*.safetensors"))
    return folder


def test_cli_finetune_refuses_pickle_weights_unless_allowed(tiny_bert, sentiment_folder, tmp_path):
    folder = pickled_checkpoint(tiny_bert, tmp_path / "pickled")
    settings = [item for key, value in (TINY_OVERRIDES | {"epochs": 1}).items() for item in ("--set", f"{key}={value}")]
    args = ["finetune", folder, sentiment_folder, "--text-column", "review", "--label-column", "sentiment",
            "--db", tmp_path / "cli.db", *settings]

    def invoke(*extra):
        return CliRunner().invoke(app, [str(arg) for arg in [*args, *extra]], catch_exceptions=False,
                                  env={"COLUMNS": "200"})

    refused = invoke()
    assert refused.exit_code == 2, refused.output
    message = " ".join(refused.output.split())  # the console may wrap the long line
    assert "pickle files (pytorch_model.bin)" in message and "--allow-pickle" in message, message
    assert "Traceback" not in refused.output and "accuracy" not in refused.output

    allowed = invoke("--allow-pickle")
    assert allowed.exit_code == 0, allowed.output
    assert "accuracy" in allowed.output and "1 epochs" in allowed.output
    # what was accepted is the pickled body itself, not a silently re-initialised model
    pickled = load_for_classification(resolve_checkpoint(folder, allow_pickle=True), ("neg", "pos"), seed=0)
    safe = load_for_classification(resolve_checkpoint(tiny_bert), ("neg", "pos"), seed=0)
    for name, tensor in safe.bert.state_dict().items():
        assert torch.equal(pickled.bert.state_dict()[name], tensor), name
