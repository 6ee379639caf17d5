"""The published model-recycling tables (IBM/model-recycling, ``results/``) as gains files, screened.

``<base>_table.csv`` has one row per hub checkpoint finetuned on 36 targets (one run each, score x100), and
``models_results_<base>_pretrain.csv`` (TAB-separated) 20 runs of the vanilla base per target (accuracy, or
Spearman for stsb, in [0, 1]). The base score of a target is the mean of its 20 runs (x100); a gain is the
candidate's score minus it.

The tables are real, large and dirty, so every row is untrusted input. :func:`screen_table` excludes, with the
first reason that applies, in this order:

1. ``impossible value``: a score that is not a number or lies outside [0, 100];
2. ``no target scores``: none of the 36 targets reported (most rows: only the MNLI linear probe);
3. ``base``: the base model itself (its own row, and any retest of it), which is the reference, not a candidate;
4. ``duplicate name``: the same ``model_name`` as an earlier row (the first is kept);
5. ``duplicate scores``: the same scores on every target as an earlier row (the first is kept);
6. ``score profile``: over the targets it reports (at least ``min_targets``), the row's scores correlate below
   ``min_correlation`` (Pearson) with the base's. Targets differ so much in difficulty (cb ~68, trec_coarse ~97,
   tweet_eval_hate ~53) that any real finetune follows the base's profile closely (r > 0.99 for most rows); a row
   that does not is the published column-shift corruption (scores filed under the wrong targets).

Rows reporting some but not all targets are kept and marked ``partial``; their gains count where present.
Everything here is a pure function of frames, except the two readers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..hub import looks_like_hub_id
from .gainsfile import FORMAT, VERSION, BaseInfo, CandidateGains, ExcludedRow, GainSet, GainsFile

# published column -> upcycle task name, all 36 targets, explicitly (the shared datasets' names where upcycle has
# the task; the published name otherwise, with tweet_ev_ spelled tweet_eval_ as upcycle spells the family)
PUBLISHED_TARGETS: dict[str, str] = {
    "20_newsgroup": "20_newsgroup", "ag_news": "ag_news", "amazon_reviews_multi": "amazon_reviews_multi",
    "anli": "anli", "boolq": "boolq", "cb": "cb", "cola": "cola", "copa": "copa", "dbpedia": "dbpedia",
    "esnli": "esnli", "financial_phrasebank": "financial_phrasebank", "imdb": "imdb", "isear": "isear",
    "mnli": "mnli", "mrpc": "mrpc", "multirc": "multirc", "poem_sentiment": "poem_sentiment", "qnli": "qnli",
    "qqp": "qqp", "rotten_tomatoes": "rotten_tomatoes", "rte": "rte", "sst2": "sst2", "sst_5bins": "sst5",
    "stsb": "stsb", "trec_coarse": "trec_coarse", "trec_fine": "trec_fine", "tweet_ev_emoji": "tweet_eval_emoji",
    "tweet_ev_emotion": "tweet_eval_emotion", "tweet_ev_hate": "tweet_eval_hate",
    "tweet_ev_irony": "tweet_eval_irony", "tweet_ev_offensive": "tweet_eval_offensive",
    "tweet_ev_sentiment": "tweet_eval_sentiment", "wic": "wic", "wnli": "wnli", "wsc": "wsc",
    "yahoo_answers": "yahoo_answers",
}
# the published bases: upcycle's architecture key of each (from its config.json: model_type, layers, hidden
# size, vocabulary), and its current hub id where the hub moved it under an organisation
PUBLISHED_BASES: dict[str, tuple[str, str]] = {
    "roberta-base": ("roberta-L12-H768-V50265", "FacebookAI/roberta-base"),
    "microsoft/deberta-v3-base": ("deberta-v2-L12-H768-V128100", "microsoft/deberta-v3-base"),
    "t5-base": ("t5-L12-H768-V32128", "google-t5/t5-base"),
    "google/t5-v1_1-base": ("t5-L12-H768-V32128", "google/t5-v1_1-base"),
}
PUBLISHED_SOURCE = "IBM model-recycling, commit 1c1d4228810ef0506de1a85144a3744b274c8bbc, results/{table}"
PUBLISHED_LICENSE = "Apache-2.0 (IBM/model-recycling)"
REASONS = ("impossible value", "no target scores", "base", "duplicate name", "duplicate scores", "score profile")


@dataclass(frozen=True)
class Screening:
    """What :func:`screen_table` kept and why it dropped the rest.

    ``scores``: the kept rows (index: row number, columns ``model_name`` and the targets), x100.
    ``excluded``: one :class:`ExcludedRow` per dropped row. ``full_rows``: candidate rows (not the base) with
    every target reported, before the duplicate and profile screens; ``full_low_profile``: how many of those
    correlate below the threshold with the base."""

    scores: pd.DataFrame
    targets: list[str]
    excluded: list[ExcludedRow]
    correlations: pd.Series
    full_rows: int
    full_low_profile: int
    min_correlation: float
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def partial(self) -> pd.Series:
        return self.scores[self.targets].isna().any(axis=1)


def profile_correlation(scores: pd.DataFrame, base: pd.Series, min_targets: int) -> pd.Series:
    """Pearson correlation of each row's scores with ``base`` over the targets the row reports; NaN where it
    reports fewer than ``min_targets`` (too few to judge) or is constant."""
    out = {}
    for row, values in scores.iterrows():
        known = values.notna()
        if known.sum() < min_targets:
            out[row] = math.nan
            continue
        own, ref = values[known].to_numpy(float), base[known.index[known]].to_numpy(float)
        out[row] = float(np.corrcoef(own, ref)[0, 1]) if own.std() > 0 and ref.std() > 0 else -math.inf
    return pd.Series(out, dtype=float)


def screen_table(
    table: pd.DataFrame, base_scores: pd.Series, *, base_name: str, min_targets: int = 10,
    min_correlation: float = 0.9,
) -> Screening:
    """Screen a published table (columns ``model_name`` and the targets of ``base_scores``, score x100; the index
    numbers the rows) against the base's mean scores. See the module docstring for the rules and their order."""
    targets = list(base_scores.index)
    missing = [t for t in targets if t not in table.columns]
    if missing:
        raise ConfigError(f"The table lacks target columns {', '.join(missing[:5])}.")
    raw = table[targets]
    numeric = raw.apply(pd.to_numeric, errors="coerce")
    excluded: dict[int, ExcludedRow] = {}
    names = table["model_name"]

    def drop(row: int, reason: str, detail: str = "") -> None:
        name = names.loc[row]
        excluded[row] = ExcludedRow(name=None if pd.isna(name) else str(name), row=int(row), reason=reason,
                                    detail=detail)

    for row in table.index:
        name = names.loc[row]
        not_numbers = [t for t in targets if pd.notna(raw.loc[row, t]) and pd.isna(numeric.loc[row, t])]
        outside = [t for t in targets if pd.notna(numeric.loc[row, t]) and not 0 <= numeric.loc[row, t] <= 100]
        if pd.isna(name) or not str(name).strip():
            drop(row, "impossible value", "no model_name")
        elif not_numbers or outside:
            bad = [f"{t}={raw.loc[row, t]!r}" for t in (not_numbers + outside)[:3]]
            drop(row, "impossible value", f"not a score in [0, 100]: {', '.join(bad)}")
        elif numeric.loc[row].isna().all():
            drop(row, "no target scores")
        elif str(name).strip().lower() == base_name.lower():
            drop(row, "base", "the base model itself: the reference every gain is measured against")
    alive = [row for row in table.index if row not in excluded]
    full = [row for row in alive if numeric.loc[row].notna().all()]
    correlations = profile_correlation(numeric.loc[alive], base_scores, min_targets)
    low = correlations.fillna(math.inf) < min_correlation
    full_low = int(low.reindex(full).sum())
    first_name: dict[str, int] = {}
    first_scores: dict[tuple, int] = {}
    for row in alive:
        name = str(names.loc[row]).strip()
        vector = tuple(None if pd.isna(v) else round(float(v), 9) for v in numeric.loc[row])
        if name in first_name:
            drop(row, "duplicate name", f"same model_name as row {first_name[name]}")
        elif vector in first_scores:
            other = first_scores[vector]
            drop(row, "duplicate scores", f"the same score on every target as row {other} ({names.loc[other]})")
        elif low.get(row, False):
            reported = int(numeric.loc[row].notna().sum())
            drop(row, "score profile", (f"scores correlate {correlations[row]:.3f} with the base's over {reported} "
                                        f"targets (< {min_correlation}): the published column-shift corruption"
                                        if math.isfinite(correlations[row]) else
                                        f"the same score on all {reported} targets it reports"))
        first_name.setdefault(name, row)
        first_scores.setdefault(vector, row)
    kept = [row for row in table.index if row not in excluded]
    kept_scores = pd.concat([names.loc[kept].astype(str).str.strip(), numeric.loc[kept]], axis=1)
    rows = [excluded[row] for row in sorted(excluded)]
    counts = {reason: sum(1 for e in rows if e.reason == reason) for reason in REASONS}
    return Screening(kept_scores, targets, rows, correlations, len(full), full_low, min_correlation, counts)


def read_base_runs(path: str | Path) -> pd.DataFrame:
    """The vanilla base's runs: ``models_results_<base>_pretrain.csv`` (TAB-separated: ``dataset name``,
    ``accuracy``, ``spearmanr``, ...) as columns ``target`` (published name) and ``score`` (x100)."""
    path = Path(path)
    try:
        runs = pd.read_csv(path, sep="\t")
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the base runs ({type(error).__name__}: {error}).") from None
    needed = {"dataset name", "accuracy", "spearmanr"}
    if not needed <= set(runs.columns):
        raise ConfigError(f"{path}: not a model-recycling pretrain file (TAB-separated, columns "
                          f"{', '.join(sorted(needed))}); found {', '.join(map(str, runs.columns[:8]))}.")
    score = pd.to_numeric(runs["accuracy"], errors="coerce").fillna(pd.to_numeric(runs["spearmanr"], errors="coerce"))
    frame = pd.DataFrame({"target": runs["dataset name"].astype(str), "score": score * 100})
    bad = frame[frame["score"].notna() & ~frame["score"].between(-100, 100)]
    if not bad.empty:
        raise ConfigError(f"{path}: {len(bad)} base runs score outside [-1, 1] (first: {bad['target'].iloc[0]}).")
    return frame  # runs without a score (NaN) stay: base_means ignores and counts them


def base_means(runs: pd.DataFrame, targets: list[str], where: str = "base runs") -> tuple[pd.Series, int, int]:
    """The base's mean score per target (x100), in ``targets`` order, the fewest runs any target has, and how many
    runs had no score (ignored). Every target must have a scored run: the file's dataset names are matched to the
    table's columns one by one."""
    unscored = int(runs["score"].isna().sum())
    grouped = runs.dropna(subset=["score"]).groupby("target")["score"].agg(["mean", "count"])
    missing = [t for t in targets if t not in grouped.index]
    if missing:
        raise ConfigError(f"{where}: no base runs for {len(missing)} of the table's {len(targets)} targets "
                          f"({', '.join(missing[:5])}); is it the pretrain file of the same base?")
    return grouped.loc[targets, "mean"], int(grouped.loc[targets, "count"].min()), unscored


def read_published_table(path: str | Path) -> pd.DataFrame:
    """``<base>_table.csv``: ``model_name`` and the 36 target columns (``avg`` and ``mnli_lp`` dropped), rows
    numbered as in the file. The columns must be exactly :data:`PUBLISHED_TARGETS`."""
    path = Path(path)
    try:
        table = pd.read_csv(path, index_col=0, dtype={"model_name": str})
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the published table ({type(error).__name__}: {error}).") from None
    if "model_name" not in table.columns:
        raise ConfigError(f"{path}: no model_name column; a model-recycling <base>_table.csv is expected.")
    columns = [c for c in table.columns if c not in ("model_name", "avg", "mnli_lp")]
    unknown = sorted(set(columns) - set(PUBLISHED_TARGETS))
    absent = sorted(set(PUBLISHED_TARGETS) - set(columns))
    if unknown or absent:
        raise ConfigError(f"{path}: the target columns differ from the 36 published ones (unknown: "
                          f"{', '.join(unknown[:5]) or 'none'}; missing: {', '.join(absent[:5]) or 'none'}).")
    return table[["model_name", *PUBLISHED_TARGETS]]


def base_from_filename(path: str | Path) -> str:
    """``microsoft_deberta-v3-base_table.csv`` -> ``microsoft/deberta-v3-base``; ``roberta-base_table.csv`` ->
    ``roberta-base`` (the first underscore separates the organisation, as in the published file names)."""
    stem = Path(path).name.removesuffix(".csv").removesuffix("_table")
    return stem.replace("_", "/", 1) if "_" in stem else stem


def published_gains(
    table: pd.DataFrame, runs: pd.DataFrame, *, base_name: str, arch: str, base_hub_id: str | None = None,
    source: str, min_targets: int = 10, min_correlation: float = 0.9, where: str = "base runs",
) -> tuple[GainsFile, Screening]:
    """Screen ``table`` and turn the kept rows into a gains file of one set (targets renamed to upcycle names)."""
    targets = list(PUBLISHED_TARGETS)
    base, base_runs, unscored = base_means(runs, targets, where)
    screening = screen_table(table, base, base_name=base_name, min_targets=min_targets,
                             min_correlation=min_correlation)
    rename = PUBLISHED_TARGETS
    candidates = []
    partial = screening.partial
    for row, values in screening.scores.iterrows():
        gains = {rename[t]: round(float(values[t] - base[t]), 4) for t in targets if pd.notna(values[t])}
        name = values["model_name"]
        candidates.append(CandidateGains(name=name, hub_id=name if looks_like_hub_id(name) else None, runs=1,
                                         partial=bool(partial[row]), gains=gains))
    gain_set = GainSet(
        arch=arch, targets=[rename[t] for t in targets], candidates=candidates, excluded=screening.excluded,
        base=BaseInfo(name=base_name, hub_id=base_hub_id, runs=base_runs,
                      scores={rename[t]: round(float(base[t]), 4) for t in targets}))
    kept_full = int((~partial).sum())
    description = (
        f"{len(table)} rows screened: {len(candidates)} kept ({kept_full} with all {len(targets)} targets, "
        f"{len(candidates) - kept_full} partial); excluded: "
        + ", ".join(f"{n} {reason}" for reason, n in screening.counts.items() if n)
        + f". Of the {screening.full_rows} candidate rows with all {len(targets)} scores, "
        f"{screening.full_low_profile} correlate below {min_correlation} with the base's profile. "
        f"Base score per target: mean of its pretrain runs (at least {base_runs} per target"
        + (f"; {unscored} runs without a score ignored" if unscored else "")
        + ", x100); one run per candidate cell. "
        "Published target names renamed to upcycle's (tweet_ev_* -> tweet_eval_*, sst_5bins -> sst5).")
    document = GainsFile(format=FORMAT, version=VERSION, source=source, license=PUBLISHED_LICENSE,
                         description=description, sets=[gain_set])
    return document, screening


def import_published(
    table_path: str | Path, runs_path: str | Path, *, base_name: str | None = None, arch: str | None = None,
    min_correlation: float = 0.9, min_targets: int = 10,
) -> tuple[GainsFile, Screening]:
    """Read a published ``<base>_table.csv`` and its ``models_results_<base>_pretrain.csv`` and convert them.

    ``base_name`` defaults to the one the file name gives; ``arch`` to the known key of a published base (needed
    for any other base: gains only apply to candidates of the same architecture)."""
    base_name = base_name or base_from_filename(table_path)
    known_arch, hub_id = PUBLISHED_BASES.get(base_name, (None, None))
    arch = arch or known_arch
    hub_id = hub_id or (base_name if looks_like_hub_id(base_name) else None)
    if arch is None:
        raise ConfigError(f"No known architecture key for the base '{base_name}' (known: "
                          f"{', '.join(PUBLISHED_BASES)}); pass --arch (as `upcycle zoo list` shows it) or --base.")
    table = read_published_table(table_path)
    runs = read_base_runs(runs_path)
    source = PUBLISHED_SOURCE.format(table=Path(table_path).name)
    return published_gains(table, runs, base_name=base_name, arch=arch, base_hub_id=hub_id, source=source,
                           min_correlation=min_correlation, min_targets=min_targets, where=str(runs_path))
