"""Shared fixtures: a tiny random BERT saved as a real checkpoint, tiny tables, the shared datasets."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402
import random  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from upcycle.checkpoints import resolve_checkpoint  # noqa: E402
from upcycle.store import Store  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
POSITIVE = ["excellent", "wonderful", "great", "superb", "delightful", "brilliant"]
NEGATIVE = ["terrible", "awful", "dreadful", "horrible", "boring", "poor"]
FILLER = ["the", "movie", "film", "plot", "actors", "story", "was", "really", "quite", "and", "a", "scene"]
TINY_OVERRIDES = {"learning_rate": 2e-3, "epochs": 4, "batch_size": 16, "warmup_ratio": 0.0}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "sst2" / "dataset.json").exists():
        pytest.fail(f"The shared datasets are expected at {SHARED_DATA} (../shared/datasets from the repo root).")
    return SHARED_DATA


def save_tiny_bert(folder: Path, seed: int = 0, **config_overrides) -> Path:
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer, saved as a Hugging Face folder (safetensors)."""
    import torch
    from transformers import BertConfig, BertModel

    from upcycle.checkpoints import load_tokenizer

    settings = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=128)
    settings.update(config_overrides)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**settings))
    model.save_pretrained(folder, safe_serialization=True)
    load_tokenizer(resolve_checkpoint("minilm")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def save_tiny_lm(folder: Path, kind: str = "llama", seed: int = 0) -> Path:
    """A 2-layer random generative LM (``llama``: causal; ``t5``: seq2seq) with MiniLM's tokenizer, saved as a
    Hugging Face folder (safetensors). Random, but a real model: scores through it are real computations."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    from upcycle.checkpoints import load_tokenizer

    torch.manual_seed(seed)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=0))
    else:
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=30522, d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4, decoder_start_token_id=0,
            pad_token_id=0, eos_token_id=102))
    model.save_pretrained(folder, safe_serialization=True)
    load_tokenizer(resolve_checkpoint("minilm")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-t5"), "t5")


def sentiment_rows(count: int, seed: int) -> list[dict]:
    """Separable toy sentiment: a positive or negative cue word among filler words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.choice(["pos", "neg"])
        words = rng.sample(FILLER, 5) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"review": " ".join(words), "sentiment": label})
    return rows


def write_cue_task(root: Path, name: str, labels: list[str], cues: dict[str, list[str]], filler: list[str],
                   sizes=(48, 8, 40), seed: int = 0) -> Path:
    """A classification task folder in the shared datasets' layout: each text is 3 filler words and one cue word
    of its label (``cues[label]``), shuffled; ``sizes`` are the train / validation / test counts."""
    rng = random.Random(seed)
    folder = root / name
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({"name": name, "task": "classification", "inputs": ["text"],
                                                     "label_names": labels}))
    for split, count in zip(("train", "validation", "test"), sizes):
        rows = []
        for _ in range(count):
            label = rng.randrange(len(labels))
            words = rng.sample(filler, 3) + [rng.choice(cues[labels[label]])]
            rng.shuffle(words)
            rows.append({"text": " ".join(words), "label": label})
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write rows as CSV, TSV, JSONL or Parquet, chosen by the suffix."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)
    return path


@pytest.fixture
def sentiment_folder(tmp_path) -> Path:
    folder = tmp_path / "toy_sentiment"
    folder.mkdir()
    write_rows(folder / "train.csv", sentiment_rows(240, seed=1))
    write_rows(folder / "dev.csv", sentiment_rows(40, seed=2))
    write_rows(folder / "test.csv", sentiment_rows(80, seed=3))
    return folder


@pytest.fixture
def store(tmp_path) -> Store:
    with Store(tmp_path / "results.db") as opened:
        yield opened


def pytest_terminal_summary(terminalreporter) -> None:
    """Say loudly, last, when the Ray tests that need root and private namespaces did not run."""
    skipped = [report for report in terminalreporter.stats.get("skipped", []) if "unshare" in str(report.longrepr)]
    if skipped:
        terminalreporter.write_sep("!", f"{len(skipped)} Ray test(s) SKIPPED: they need root and unshare (private "
                                        "network and PID namespaces); Ray on a cluster is untested in this run",
                                   yellow=True)
