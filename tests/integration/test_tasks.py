"""Task loaders and validation, on slices of the real shared data and on small files made here."""

from __future__ import annotations

import json
import math
import re

import pytest
from conftest import sentiment_rows, write_rows

from upcycle.errors import TaskError
from upcycle.tasks import load_task, sample_indices


def test_canonical_single_text(shared_data):
    task = load_task(shared_data / "sst2")
    card = json.loads((shared_data / "sst2" / "dataset.json").read_text())
    assert task.name == "sst2" and task.kind == "classification" and not task.is_pair
    assert task.label_names == ("negative", "positive")
    assert task.sizes() == card["splits"]
    assert task.splits["train"].texts[0].startswith("a stirring , funny")
    assert task.splits["train"].labels[0] == 1


def test_canonical_pair_and_regression(shared_data):
    rte = load_task(shared_data / "rte")
    assert rte.is_pair and rte.num_labels == 2 and len(rte.splits["test"].text_pairs) == 277
    stsb = load_task(shared_data / "stsb")
    assert stsb.kind == "regression" and stsb.label_names is None and stsb.num_labels == 1
    assert stsb.primary_metric == "spearman"
    assert all(0.0 <= y <= 5.0 for y in stsb.splits["train"].labels)


def test_name_resolves_inside_data_dir(shared_data, monkeypatch):
    monkeypatch.setenv("UPCYCLE_DATA_DIR", str(shared_data))
    assert load_task("cb").fingerprint == load_task(shared_data / "cb").fingerprint


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_table_formats_map_string_labels_in_sorted_order(tmp_path, suffix):
    file = write_rows(tmp_path / f"reviews{suffix}", sentiment_rows(100, seed=0))
    task = load_task(file, text_column="review", label_column="sentiment")
    assert task.name == "reviews"
    assert task.label_names == ("neg", "pos")  # stable: sorted, whatever order rows come in
    train = task.splits["train"]
    assert {task.label_names[y] for y in train.labels} == {"neg", "pos"}
    assert sum(task.sizes().values()) == 100
    assert len(task.notes) == 2  # test and validation carved from the single file


def test_same_file_in_two_formats_has_one_fingerprint(tmp_path):
    rows = sentiment_rows(60, seed=4)
    csv = load_task(write_rows(tmp_path / "a.csv", rows), text_column="review", label_column="sentiment")
    parquet = load_task(write_rows(tmp_path / "b.parquet", rows), text_column="review", label_column="sentiment")
    assert csv.fingerprint == parquet.fingerprint


def test_folder_of_split_files(sentiment_folder):
    task = load_task(sentiment_folder, text_column="review", label_column="sentiment")
    assert task.sizes() == {"train": 240, "validation": 40, "test": 80}
    assert task.notes == ()


def test_pair_columns_and_inferred_regression(tmp_path):
    rows = [{"a": f"sentence {i}", "b": f"other {i}", "score": i / 7} for i in range(50)]
    task = load_task(write_rows(tmp_path / "sim.csv", rows), text_column="a", text_pair_column="b",
                     label_column="score")
    assert task.kind == "regression" and task.is_pair
    assert task.splits["train"].text_pairs[0].startswith("other")


def test_subsample_is_stratified_and_deterministic(shared_data):
    task = load_task(shared_data / "trec_coarse")
    small = task.subsample(300, 100, seed=0)
    assert small.sizes() == {"train": 300, "validation": 100, "test": 100}
    assert small.splits["train"].texts == task.subsample(300, 100, seed=0).splits["train"].texts
    assert small.splits["train"].texts != task.subsample(300, 100, seed=1).splits["train"].texts
    full = task.splits["train"].labels
    for label in set(full):
        expected = full.count(label) / len(full) * 300
        assert abs(small.splits["train"].labels.count(label) - expected) <= 1.5


def test_sample_indices_keeps_rare_classes():
    labels = [0] * 990 + [1] * 5 + [2] * 5
    chosen = sample_indices(labels, 20, seed=0, stratify=True)
    assert len(chosen) == 20 == len(set(chosen))
    assert {labels[i] for i in chosen} == {0, 1, 2}


# --------------------------------------------------------------------------------------------- bad input


def test_missing_column_names_the_columns(tmp_path):
    file = write_rows(tmp_path / "r.csv", sentiment_rows(30, seed=0))
    with pytest.raises(TaskError, match=r"no column \['text'\].*'review', 'sentiment'"):
        load_task(file, label_column="sentiment")


def test_empty_split(sentiment_folder):
    (sentiment_folder / "test.csv").write_text("review,sentiment\n")
    with pytest.raises(TaskError, match="test.*empty"):
        load_task(sentiment_folder, text_column="review", label_column="sentiment")


def test_test_label_never_seen_in_train(sentiment_folder):
    rows = sentiment_rows(10, seed=9) + [{"review": "meh", "sentiment": "neutral"}]
    write_rows(sentiment_folder / "test.csv", rows)
    with pytest.raises(TaskError, match="'neutral'.*never appears in train"):
        load_task(sentiment_folder, text_column="review", label_column="sentiment")


def test_canonical_label_unseen_in_train(tmp_path, shared_data):
    folder = tmp_path / "cb"
    folder.mkdir()
    for name in ("dataset.json", "validation.jsonl"):
        (folder / name).write_bytes((shared_data / "cb" / name).read_bytes())
    rows = [json.loads(line) for line in (shared_data / "cb" / "train.jsonl").read_text().splitlines()]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["label"] != 2))
    (folder / "test.jsonl").write_bytes((shared_data / "cb" / "test.jsonl").read_bytes())
    with pytest.raises(TaskError, match="never seen in train"):
        load_task(folder)


def test_nan_regression_target(tmp_path):
    rows = [{"text": f"s {i}", "label": i / 3} for i in range(20)]
    rows[7]["label"] = math.nan
    file = write_rows(tmp_path / "r.csv", rows)
    with pytest.raises(TaskError, match="row 8"):
        load_task(file, task_type="regression")


def test_malformed_jsonl_names_the_line(tmp_path):
    file = write_rows(tmp_path / "r.jsonl", sentiment_rows(20, seed=0))
    lines = file.read_text().splitlines()
    lines[4] = lines[4][:-3]
    file.write_text("\n".join(lines) + "\n")
    with pytest.raises(TaskError, match=r"r\.jsonl:5: malformed JSON"):
        load_task(file, text_column="review", label_column="sentiment")


def test_corrupt_parquet_and_binary_csv(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(TaskError, match="bad.parquet"):
        load_task(tmp_path / "bad.parquet")
    (tmp_path / "bad.csv").write_bytes(b"text,label\n\xff\xfe\x00broken,1\n")
    with pytest.raises(TaskError, match="bad.csv"):
        load_task(tmp_path / "bad.csv")


def test_single_class_train(tmp_path):
    rows = [{"text": f"s {i}", "label": "same"} for i in range(30)]
    with pytest.raises(TaskError, match="single class"):
        load_task(write_rows(tmp_path / "one.csv", rows))


def test_unknown_source_and_offline_hub(monkeypatch, tmp_path):
    with pytest.raises(TaskError, match="not found"):
        load_task("./no/such/file.csv")
    with pytest.raises(TaskError, match="Could not load the Hugging Face dataset 'nyu-mll/glue:sst2'.*Offline"):
        load_task("nyu-mll/glue:sst2")
    # a bare name ("sst2", as the README's examples write it) says where else it was looked for, and how to fix it
    monkeypatch.delenv("UPCYCLE_DATA_DIR", raising=False)
    with pytest.raises(TaskError, match=r"Offline.*looked up as a folder in the data directory \(set UPCYCLE_DATA_DIR"):
        load_task("sst2")
    with pytest.raises(TaskError, match=re.escape(f"data directory ({tmp_path}); 'sst2' is not there")):
        load_task("sst2", data_dir=tmp_path)


def test_hub_dataset_conversion_keeps_class_names(monkeypatch):
    """The hub path past the network edge: a DatasetDict with a ClassLabel and a 'dev'-style split name."""
    import datasets

    rows = sentiment_rows(60, seed=5)
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})

    def table(part):
        return datasets.Dataset.from_dict(
            {"text": [r["review"] for r in part], "label": [int(r["sentiment"] == "pos") for r in part]},
            features=features,
        )

    loaded = datasets.DatasetDict({"train": table(rows[:40]), "validation": table(rows[40:50]),
                                   "test": table(rows[50:])})
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args: calls.append(args) or loaded)
    task = load_task("someone/reviews:default")
    assert calls == [("someone/reviews", "default")]
    assert task.name == "reviews" and task.label_names == ("negative", "positive")
    assert task.sizes() == {"train": 40, "validation": 10, "test": 10}


# ---------------------------------------------------------------------------------- missing labels (issue 14)


@pytest.mark.parametrize(("file_name", "hole"), [("data.csv", "NaN"), ("data.csv", "nan"), ("data.csv", "NA"),
                                                 ("data.csv", math.nan), ("data.jsonl", None)],
                         ids=["csv-NaN", "csv-nan", "csv-NA", "csv-empty-cell", "jsonl-null"])
def test_missing_regression_label_names_the_row_before_guessing_the_kind(tmp_path, file_name, hole):
    """One missing label in a numeric column used to turn it into strings, hence 'classification', and the
    error then blamed 'labels never seen in train: ['1.48', ...]'."""
    rows = [{"text": f"s {i}", "label": round(i / 3 + 0.15, 2)} for i in range(20)]
    rows[7]["label"] = hole
    file = write_rows(tmp_path / file_name, rows)
    if file_name.endswith(".csv"):
        assert file.read_text().splitlines()[8] == f"s 7,{'' if hole is math.nan else hole}"  # the cell as meant
    with pytest.raises(TaskError) as caught:
        load_task(file)
    message = str(caught.value)
    assert message.startswith(f"{file} (train): row 8: the label is missing (")
    assert message.endswith("); remove the row or fill it in.")
    assert "never seen" not in message and "never appears" not in message


def test_missing_label_in_a_later_split_and_in_integer_classes(tmp_path):
    folder = tmp_path / "scores"
    folder.mkdir()
    write_rows(folder / "train.csv", [{"text": f"s {i}", "label": i / 4} for i in range(30)])
    dev = [{"text": f"d {i}", "label": i / 4} for i in range(10)]
    dev[2]["label"] = "nan"
    write_rows(folder / "dev.csv", dev)
    with pytest.raises(TaskError, match=r"scores \(validation\): row 3: the label is missing \('nan'\)"):
        load_task(folder)
    classes = [{"text": f"s {i}", "label": i % 2} for i in range(20)]
    classes[4]["label"] = "NaN"
    with pytest.raises(TaskError, match=r"\(train\): row 5: the label is missing \('NaN'\)"):
        load_task(write_rows(tmp_path / "classes.csv", classes))


def test_words_like_na_stay_classes_among_string_labels(tmp_path):
    rows = [{"text": f"s {i}", "label": ["NA", "cause", "part"][i % 3]} for i in range(30)]
    task = load_task(write_rows(tmp_path / "relations.csv", rows))
    assert task.kind == "classification" and task.label_names == ("NA", "cause", "part")
    rows[4]["label"] = ""
    with pytest.raises(TaskError, match=r"\(train\): row 5: the label is missing \(empty, null or NaN\)"):
        load_task(write_rows(tmp_path / "relations.csv", rows))


def test_canonical_folder_with_a_null_label(tmp_path):
    folder = tmp_path / "scores"
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({"task": "regression", "inputs": ["text"]}))
    rows = [{"text": f"s {i}", "label": i / 4} for i in range(20)]
    rows[2]["label"] = None
    write_rows(folder / "train.jsonl", rows)
    with pytest.raises(TaskError, match=r"train\.jsonl: row 3: the label is missing \(empty, null or NaN\)"):
        load_task(folder)
