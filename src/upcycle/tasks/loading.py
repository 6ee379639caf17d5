"""Loading tasks: labelled text datasets from folders, tables or the hub, validated as they are read.

A :class:`Task` is an immutable value. It is loaded from one of:

* a canonical dataset folder (``dataset.json`` + ``train.jsonl`` / ``validation.jsonl`` / ``test.jsonl``),
  the layout of ``../shared/datasets``;
* a CSV / TSV / JSONL / Parquet file, or a folder of them named by split (``train.csv``, ``dev.tsv``, ...),
  with the text, pair and label columns named by the caller;
* a Hugging Face dataset id (``org/name`` or ``org/name:config``) through :func:`datasets.load_dataset`.

Every loader validates what it reads and raises :class:`~upcycle.errors.TaskError` naming the file, the
column or the row at fault.
"""


from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..errors import TaskError
from ..hub import looks_like_hub_id, offline_hint
from .task import SPLITS, Split, Task, TaskKind, sample_indices

SPLIT_ALIASES = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
CARVE_FRACTION = 0.1  # share of train carved out for a missing validation or test split
CARVE_SEED = 0
# Spellings of "no value" in a label column (compared stripped and lower-cased). Empty cells, null and NaN
# are always missing; these words only where the column is otherwise numeric (or the task is regression),
# since 'NA' or 'none' can be a real class name (e.g. 'NA' for "no relation").
MISSING_LABEL_WORDS = frozenset({"nan", "-nan", "+nan", "na", "n/a", "#n/a", "<na>", "null", "none"})


def load_task(
    source: str | os.PathLike[str],
    *,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    task_type: Literal["auto", "classification", "regression"] = "auto",
    name: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Task:
    """Load and validate a task.

    ``source`` is tried, in order, as: a local path (canonical folder, table file or folder of tables);
    a folder name inside ``data_dir`` (default ``$UPCYCLE_DATA_DIR``); a Hugging Face dataset id
    ``org/name[:config]``. Column options apply to tables and hub datasets; canonical folders describe
    themselves in ``dataset.json``.
    """
    columns = _Columns(text_column, text_pair_column, label_column)
    path = Path(source).expanduser()
    if path.exists():
        path = path.resolve()  # specs carry the source: absolute, so any working directory can reload it
    else:
        found = _find_in_data_dir(str(source), data_dir)
        if found is not None:
            path = found
        elif _names_hub_dataset(str(source)):
            try:
                return _load_hub(str(source), columns, task_type, name)
            except TaskError as error:
                if "/" in str(source):
                    raise
                raise TaskError(f"{error} A bare name is first looked up as a folder in the data directory "
                                f"({_data_dir_hint(data_dir)}); '{source}' is not there.") from None
        else:
            raise TaskError(
                f"Task '{source}' not found: it is no file or folder, no folder in the data directory "
                f"({_data_dir_hint(data_dir)}), and no Hugging Face dataset id (org/name)."
            )
    if path.is_dir() and (path / "dataset.json").exists():
        return _load_canonical(path, name)
    if path.is_dir():
        tables = _split_files(path)
        frames = {split: _read_table(file) for split, file in tables.items()}
        return _task_from_frames(frames, columns, task_type, name or path.name, str(path))
    if path.suffix.lower() in TABLE_SUFFIXES:
        return _task_from_frames({"train": _read_table(path)}, columns, task_type, name or path.stem, str(path))
    raise TaskError(f"{path}: unsupported file type '{path.suffix}'; use one of {', '.join(TABLE_SUFFIXES)}.")


@dataclass(frozen=True)
class _Columns:
    text: str
    text_pair: str | None
    label: str


def _data_dir_hint(data_dir: str | os.PathLike[str] | None) -> str:
    chosen = data_dir or os.environ.get("UPCYCLE_DATA_DIR")
    return str(chosen) if chosen else "set UPCYCLE_DATA_DIR to use one"


def _find_in_data_dir(name: str, data_dir: str | os.PathLike[str] | None) -> Path | None:
    root = data_dir or os.environ.get("UPCYCLE_DATA_DIR")
    if not root or "/" in name:
        return None
    candidate = Path(root).expanduser().resolve() / name
    return candidate if (candidate / "dataset.json").exists() else None


def _names_hub_dataset(source: str) -> bool:
    """A hub dataset id (``name``, ``org/name``, ``org/name:config``), not a data file that does not exist."""
    return not source.lower().endswith(TABLE_SUFFIXES) and looks_like_hub_id(source, bare_name=True)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a malformed line raises TaskError naming the file and line."""
    rows = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise TaskError(f"{path}:{number}: malformed JSON ({error.msg}).") from None
                if not isinstance(row, dict):
                    raise TaskError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}.")
                rows.append(row)
    except UnicodeDecodeError as error:
        raise TaskError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}).") from None
    except OSError as error:
        raise TaskError(f"{path}: cannot read ({error.strerror}).") from None
    return rows


def _load_canonical(folder: Path, name: str | None) -> Task:
    card_path = folder / "dataset.json"
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        kind = card["task"]
        inputs = card["inputs"]
        label_names = card.get("label_names")
    except (OSError, json.JSONDecodeError) as error:
        raise TaskError(f"{card_path}: unreadable card ({error}).") from None
    except KeyError as error:
        raise TaskError(f"{card_path}: the card lacks the field {error}.") from None
    if kind not in ("classification", "regression"):
        raise TaskError(f"{card_path}: 'task' must be classification or regression, not {kind!r}.")
    if kind == "classification" and not label_names:
        raise TaskError(f"{card_path}: a classification card needs 'label_names'.")
    columns = _Columns("text", "text_pair" if "text_pair" in inputs else None, "label")
    splits = {}
    for split in SPLITS:
        file = folder / f"{split}.jsonl"
        if not file.exists():
            continue
        rows = read_jsonl(file)
        splits[split] = _split_from_rows(rows, columns, kind, label_names, file)
    names = tuple(label_names) if kind == "classification" else None
    task = Task(name or card.get("name", folder.name), kind, names, splits, str(folder),
                (card["split_note"],) if card.get("split_note") else ())
    return _complete_and_validate(task)


def _split_from_rows(
    rows: list[dict[str, Any]], columns: _Columns, kind: str, label_names: list[str] | None, file: Path
) -> Split:
    if not rows:
        raise TaskError(f"{file}: the split is empty.")
    wanted = [columns.text, columns.label] + ([columns.text_pair] if columns.text_pair else [])
    for number, row in enumerate(rows, start=1):
        missing = [column for column in wanted if column not in row]
        if missing:
            raise TaskError(f"{file}: row {number} lacks {missing}; it has {sorted(row)}.")
        if _is_missing(row[columns.label]):
            raise _missing_label(file, number, row[columns.label])
    labels = [row[columns.label] for row in rows]
    if kind == "classification":
        count = len(label_names or [])
        for number, label in enumerate(labels, start=1):
            if not isinstance(label, int) or not 0 <= label < count:
                raise TaskError(f"{file}: row {number}: label {label!r} is not a class index in [0, {count}).")
    else:
        labels = [_float_label(label, file, number) for number, label in enumerate(labels, start=1)]
    pairs = tuple(str(row[columns.text_pair]) for row in rows) if columns.text_pair else None
    return Split(tuple(str(row[columns.text]) for row in rows), tuple(labels), pairs)


def _float_label(value: Any, where: Any, number: int) -> float:
    if _is_missing_label(value, numeric=True):
        raise _missing_label(where, number, value)
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise TaskError(f"{where}: row {number}: regression target {value!r} is not a number.") from None
    if math.isnan(result):  # a NaN that is no Python float, e.g. numpy.float32('nan')
        raise _missing_label(where, number, value)
    if not math.isfinite(result):
        raise TaskError(f"{where}: row {number}: regression target is {result}; drop or fix that row.")
    return result


def _split_files(folder: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in TABLE_SUFFIXES:
            continue
        for split, aliases in SPLIT_ALIASES.items():
            if path.stem.lower() in aliases:
                if split in files:
                    raise TaskError(f"{folder}: two files for the {split} split: {files[split].name}, {path.name}.")
                files[split] = path
    if "train" not in files:
        raise TaskError(
            f"{folder}: no train file; name the files by split, e.g. train.csv, validation.csv, test.csv."
        )
    return files


def _read_table(path: Path):
    """A pandas DataFrame from a CSV, TSV, JSONL or Parquet file, with errors that name the file."""
    import pandas as pd  # lazy: pandas stays off the CLI's --help path

    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            return pd.DataFrame(read_jsonl(path))
        if suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", keep_default_na=False, na_values=[""])
    except TaskError:
        raise
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise TaskError(f"{path}: cannot parse as {suffix[1:]} ({str(error).strip()[:200]}).") from None
    except Exception as error:  # pyarrow raises its own error types for corrupt parquet files
        raise TaskError(f"{path}: cannot read ({type(error).__name__}: {str(error)[:200]}).") from None


def _task_from_frames(frames, columns: _Columns, task_type: str, name: str, source: str) -> Task:
    """Build a task from one DataFrame per split, mapping string labels to a stable (sorted) order."""
    frames = {split: frames[split] for split in SPLITS if split in frames}
    for split, frame in frames.items():
        wanted = [columns.text, columns.label] + ([columns.text_pair] if columns.text_pair else [])
        missing = [column for column in wanted if column not in frame.columns]
        if missing:
            raise TaskError(
                f"{source} ({split}): no column {missing}; the columns are {list(map(str, frame.columns))}. "
                "Choose them with --text-column, --text-pair-column and --label-column."
            )
        if len(frame) == 0:
            raise TaskError(f"{source} ({split}): the split is empty.")
    _check_labels_present(frames, columns.label, task_type, source)  # before guessing the kind from them
    train_labels = frames["train"][columns.label]
    kind = _infer_kind(train_labels) if task_type == "auto" else task_type
    label_names = None
    if kind == "classification":
        values = [label for label in train_labels.tolist() if not _is_missing(label)]
        ordered = sorted(set(values), key=lambda v: (isinstance(v, str), v))
        label_names = tuple(str(v) for v in ordered)
        index = {str(v): i for i, v in enumerate(ordered)}
    splits = {}
    for split, frame in frames.items():
        raw = frame[columns.label].tolist()
        if kind == "classification":
            labels = []
            for number, label in enumerate(raw, start=1):
                if str(label) not in index:
                    raise TaskError(
                        f"{source} ({split}): label {label!r} (row {number}) never appears in train; "
                        f"train has {list(label_names)}."
                    )
                labels.append(index[str(label)])
        else:
            labels = [_float_label(label, f"{source} ({split})", n) for n, label in enumerate(raw, start=1)]
        texts = _text_column(frame, columns.text, source, split)
        pairs = _text_column(frame, columns.text_pair, source, split) if columns.text_pair else None
        splits[split] = Split(texts, tuple(labels), pairs)
    return _complete_and_validate(Task(name, kind, label_names, splits, source))


def _text_column(frame, column: str, source: str, split: str) -> tuple[str, ...]:
    values = frame[column].tolist()
    for number, value in enumerate(values, start=1):
        if _is_missing(value):
            raise TaskError(f"{source} ({split}): row {number} has no text in column '{column}'.")
    return tuple(str(v) for v in values)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_missing_label(value: Any, numeric: bool) -> bool:
    """None, NaN, an empty string; with ``numeric`` also a word of MISSING_LABEL_WORDS ('NaN', 'NA', ...)."""
    if isinstance(value, str):
        word = value.strip().lower()
        return not word or (numeric and word in MISSING_LABEL_WORDS)
    return _is_missing(value)


def _is_number(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, float, np.number)):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _missing_label(where: Any, number: int, value: Any) -> TaskError:
    shown = repr(value) if isinstance(value, str) and value.strip() else "empty, null or NaN"
    return TaskError(f"{where}: row {number}: the label is missing ({shown}); remove the row or fill it in.")


def _check_labels_present(frames, label: str, task_type: str, source: str) -> None:
    """Raise on the first row without a label, in split order. Tables are read with ``keep_default_na=False``
    (so a text 'NA' stays text), which leaves a 'NaN' label a string; unchecked, one such cell turns a numeric
    column into strings and regression into classification. Numeric: the task is regression, or every train
    label that is not a missing word is a number (then 'NaN', 'NA', ... are missing, not classes)."""
    train = frames["train"][label]
    present = [value for value, na in zip(train.tolist(), train.isna().tolist(), strict=True)
               if not na and not _is_missing_label(value, numeric=True)]
    numeric = task_type == "regression" or all(_is_number(value) for value in present)
    for split, frame in frames.items():
        column = frame[label]
        for number, (value, na) in enumerate(zip(column.tolist(), column.isna().tolist(), strict=True), start=1):
            if na or _is_missing_label(value, numeric):  # isna: also pandas' own NA of nullable dtypes
                raise _missing_label(f"{source} ({split})", number, value)


def _infer_kind(labels) -> TaskKind:
    """Strings, booleans and integral numbers are classes; numbers with a fractional part are targets."""
    import pandas as pd  # lazy: pandas stays off the CLI's --help path

    if pd.api.types.is_float_dtype(labels):
        finite = labels.dropna()
        if len(finite) and not np.all(np.equal(np.mod(finite, 1), 0)):
            return "regression"
    return "classification"


def _complete_and_validate(task: Task) -> Task:
    """Carve missing validation/test splits from train (stratified, fixed seed) and check the result."""
    splits = dict(task.splits)
    notes = list(task.notes)
    if "train" not in splits:
        raise TaskError(f"{task.source}: no train split.")
    for missing in ("test", "validation"):
        if missing in splits:
            continue
        train = splits["train"]
        count = max(1, round(len(train) * CARVE_FRACTION))
        if len(train) - count < 2:
            raise TaskError(f"{task.source}: too few train examples ({len(train)}) to carve a {missing} split.")
        stratify = task.kind == "classification"
        held_out = set(sample_indices(train.labels, count, CARVE_SEED, stratify))
        splits[missing] = train.take(sorted(held_out))
        splits["train"] = train.take([i for i in range(len(train)) if i not in held_out])
        notes.append(f"{missing} split carved from train ({count} examples, seed {CARVE_SEED})")
    task = replace(task, splits={name: splits[name] for name in SPLITS}, notes=tuple(notes))
    _validate(task)
    return task


def _validate(task: Task) -> None:
    for name, split in task.splits.items():
        if len(split) == 0:
            raise TaskError(f"{task.source}: the {name} split is empty.")
    if task.kind == "classification":
        seen = set(task.splits["train"].labels)
        assert task.label_names is not None
        if len(seen) < 2:
            raise TaskError(f"{task.source}: train has a single class ({task.label_names[next(iter(seen))]}).")
        for name in ("validation", "test"):
            unseen = set(task.splits[name].labels) - seen
            if unseen:
                labels = sorted(task.label_names[i] for i in unseen)
                raise TaskError(f"{task.source}: {name} has labels never seen in train: {labels}.")


def _load_hub(source: str, columns: _Columns, task_type: str, name: str | None) -> Task:
    """Load ``org/name[:config]`` with :func:`datasets.load_dataset` (needs network or a warm cache)."""
    repo, _, config = source.partition(":")
    try:
        import datasets  # lazy: only hub datasets need it

        loaded = datasets.load_dataset(repo, config or None)
    except Exception as error:  # datasets raises many types: connection, offline mode, missing repo
        hint = offline_hint("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
        raise TaskError(
            f"Could not load the Hugging Face dataset '{source}': {type(error).__name__}: {str(error)[:300]}."
            f"{hint} Download it where you have network, or export it to CSV/JSONL and pass the file."
        ) from None
    frames = {}
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            if alias in loaded:
                frames[split] = loaded[alias].to_pandas()
                break
    if "train" not in frames:
        raise TaskError(f"Hugging Face dataset '{source}' has no train split; it has {list(loaded)}.")
    features = loaded[next(iter(loaded))].features
    label_feature = features.get(columns.label)
    task = _task_from_frames(frames, columns, task_type, name or repo.split("/")[-1], source)
    names = getattr(label_feature, "names", None)
    if names and task.kind == "classification" and task.label_names == tuple(str(i) for i in range(len(names))):
        task = replace(task, label_names=tuple(names))
    return task


class TaskRef(BaseModel):
    """How to load a task again (in this process or on a Ray worker), and the fingerprint it must have."""

    model_config = ConfigDict(frozen=True)

    source: str
    name: str
    fingerprint: str
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    task_type: str = "auto"

    def load(self) -> Task:
        task = load_task(
            self.source, text_column=self.text_column, text_pair_column=self.text_pair_column,
            label_column=self.label_column, task_type=self.task_type, name=self.name,  # type: ignore[arg-type]
        )
        if task.fingerprint != self.fingerprint:
            raise TaskError(f"{self.source}: the data changed since this spec was made (fingerprint differs).")
        return task

    @classmethod
    def of(cls, task: Task, **load_options: Any) -> TaskRef:
        return cls(source=task.source, name=task.name, fingerprint=task.fingerprint, **load_options)
