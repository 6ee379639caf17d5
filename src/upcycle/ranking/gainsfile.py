"""Portable gains: a leaderboard as a versioned JSON file that travels without the store that measured it.

A gains file holds, per base model (one *set* per architecture key and base), each candidate's gain over that
base per target, in points (candidate score minus the base's mean score, x100), with the candidate's
identifiers (fingerprint when known, name, hub id when known), how many runs each number averages, where the
numbers come from, their license, and the rows that were screened out with the reason. ``upcycle leaderboard
export`` writes one from a stored bench; ``upcycle leaderboard import`` reads one (or converts a published
model-recycling table, :mod:`upcycle.ranking.published`) into the store, where the ``prior`` estimator finds it.

Layout (``format`` and ``version`` are checked first, so a file from a newer upcycle is refused in one line)::

    {"format": "upcycle-gains", "version": 1, "source": "...", "license": "...", "description": "...",
     "sets": [{"arch": "bert-L6-H384-V30522",
               "base": {"name": "minilm", "hub_id": "...", "fingerprint": "...", "runs": 2, "scores": {...}},
               "targets": ["cb", ...],
               "candidates": [{"name": "minilm-sst2", "fingerprint": "...", "hub_id": null, "source_task": "sst2",
                               "runs": 2, "partial": false, "gains": {"cb": 11.61, ...}}, ...],
               "excluded": [{"name": "...", "row": 324, "reason": "duplicate scores", "detail": "..."}]}]}

Target names are upcycle task names (``tweet_eval_irony``, ``sst5``), so the overlap rule that keeps a target's
own results out of the prior applies to imported gains unchanged.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError, validation_problems
from ..hub import looks_like_hub_id
from ..store import Store, ZooEntry
from ..tasks import OVERLAP_GROUPS, overlapping
from .bench import Bench, grid_frame
from .gains import gain_matrix

FORMAT = "upcycle-gains"
VERSION = 1
FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
# the hub ids of the aliases upcycle ships (an alias resolves to a local folder, which names no hub id)
ALIAS_HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2",
                 "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
_HUB_CACHE = re.compile(r"models--([^/\\]+?)--([^/\\]+)[/\\]snapshots[/\\]")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _finite(values: dict[str, float], what: str) -> dict[str, float]:
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad:
        raise ValueError(f"{what} must be finite numbers; not at {', '.join(bad[:3])}")
    return values


def _fingerprint(value: str | None) -> str | None:
    if value is not None and not FINGERPRINT.match(value):
        raise ValueError("a fingerprint is 64 lowercase hex characters (sha256)")
    return value


class BaseInfo(_Strict):
    """The vanilla base every gain of a set is measured against, and its own mean score per target (x100)."""

    name: str = Field(min_length=1)
    hub_id: str | None = None
    fingerprint: str | None = None
    runs: int = Field(ge=1, description="runs (seeds) each base score averages")
    scores: dict[str, float] = {}

    @field_validator("fingerprint")
    @classmethod
    def _check_fingerprint(cls, value: str | None) -> str | None:
        return _fingerprint(value)

    @field_validator("scores")
    @classmethod
    def _check_scores(cls, value: dict[str, float]) -> dict[str, float]:
        return _finite(value, "base scores")


class CandidateGains(_Strict):
    """One candidate: who it is, and its gain in points per target it was measured on."""

    name: str = Field(min_length=1)
    fingerprint: str | None = None
    hub_id: str | None = None
    source_task: str | None = None
    runs: int = Field(ge=1, description="runs (seeds) each gain averages")
    partial: bool = False
    gains: dict[str, float]

    @field_validator("fingerprint")
    @classmethod
    def _check_fingerprint(cls, value: str | None) -> str | None:
        return _fingerprint(value)

    @field_validator("gains")
    @classmethod
    def _check_gains(cls, value: dict[str, float]) -> dict[str, float]:
        return _finite(value, "gains")


class ExcludedRow(_Strict):
    """A row of the source left out, and why (``reason`` is a short category, ``detail`` the evidence)."""

    name: str | None = None
    row: int | None = None
    reason: str = Field(min_length=1)
    detail: str = ""


class GainSet(_Strict):
    """The candidates of one base (one architecture key), their gains and the screened-out rows."""

    arch: str = Field(min_length=1)
    base: BaseInfo
    targets: list[str] = Field(min_length=1)
    candidates: list[CandidateGains]
    excluded: list[ExcludedRow] = []

    @model_validator(mode="after")
    def _consistent(self) -> GainSet:
        known = set(self.targets)
        for candidate in self.candidates:
            unknown = set(candidate.gains) - known
            if unknown:
                raise ValueError(f"candidate '{candidate.name}' has gains on targets not listed in 'targets': "
                                 f"{', '.join(sorted(unknown)[:3])}")
        names = [c.name for c in self.candidates]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"candidate names must be unique in a set; repeated: {', '.join(twice[:3])}")
        return self

    @property
    def key(self) -> str:
        """What identifies the set within a source: its base (by hub id, else name) and architecture."""
        return f"{self.base.hub_id or self.base.name} ({self.arch})"

    def frame(self) -> pd.DataFrame:
        """Gains in points, candidate names (rows) x targets (columns, in ``targets`` order); NaN where absent."""
        return pd.DataFrame({c.name: c.gains for c in self.candidates}, columns=[c.name for c in self.candidates],
                            index=self.targets, dtype=float).T


class GainsFile(_Strict):
    """A whole gains file: where the numbers come from, under which license, and one set per base."""

    format: Literal["upcycle-gains"]
    version: Literal[1]
    source: str = Field(min_length=1, description="who measured these numbers, how (names the protocol)")
    license: str = Field(min_length=1)
    description: str = ""
    sets: list[GainSet] = Field(min_length=1)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=1) + "\n"


def parse_gains(text: str, where: str = "gains file") -> GainsFile:
    """Validate a gains document; any problem is one :class:`ConfigError` line naming ``where`` and the field."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"{where}: not JSON ({error}); a gains file is written by `upcycle leaderboard export`.") \
            from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ConfigError(f"{where}: not an upcycle gains file ('format' must be '{FORMAT}'); to import a published "
                          "model-recycling table give the CSV with --base-runs.")
    if document.get("version") != VERSION:
        raise ConfigError(f"{where}: gains file version {document.get('version')!r}; this upcycle reads version "
                          f"{VERSION}. Upgrade upcycle, or export the file again.")
    try:
        return GainsFile.model_validate(document)
    except ValidationError as error:
        problems = validation_problems(error, where="file").split("; ")
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ConfigError(f"{where}: invalid gains file: {'; '.join(problems[:3])}{more}.") from None


def read_gains(path: str | Path) -> GainsFile:
    """Read and validate a gains file (one error line when it is missing or malformed)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the gains file ({type(error).__name__}: {error}).") from None
    return parse_gains(text, str(path))


def hub_id_of(name: str, path: str | None = None) -> str | None:
    """The hub id a checkpoint came from, when that is recorded: its Hugging Face cache folder
    (``models--org--name/snapshots/...``, whatever the zoo calls it), else its name when that reads as a hub id."""
    found = _HUB_CACHE.search(path or "")
    if found:
        return f"{found[1]}/{found[2]}"
    if name.lower() in ALIAS_HUB_IDS:
        return ALIAS_HUB_IDS[name.lower()]
    return name if looks_like_hub_id(name) else None


def entry_hub_id(entry: ZooEntry) -> str | None:
    return hub_id_of(entry.name, entry.path)


def gain_set_from_grid(
    grid: pd.DataFrame, *, arch: str, base: BaseInfo, targets: list[str], runs: int,
    hub_ids: dict[str, str | None] | None = None, overlap_groups: tuple[frozenset[str], ...] = OVERLAP_GROUPS,
) -> GainSet:
    """A set from a tidy grid frame (``bench.GRID_COLUMNS``): gains as :func:`gain_matrix` computes them, the
    base's mean scores x100. ``base.scores`` is filled from the grid; a candidate missing a target that it is
    eligible for (one whose data its source task does not share, under ``overlap_groups``) is ``partial``. Pure."""
    base_rows = grid[grid["is_base"]]
    scores = (base_rows.groupby("target")["score"].mean() * 100).to_dict()
    gains = gain_matrix(grid)
    candidates = []
    for fingerprint, rows in grid[~grid["is_base"]].groupby("fingerprint", sort=False):
        name = str(rows["candidate"].iloc[0])
        source = rows["source_task"].iloc[0]
        source = None if pd.isna(source) else str(source)
        own = gains.loc[fingerprint].dropna() if fingerprint in gains.index else pd.Series(dtype=float)
        missing = [t for t in targets if t not in own.index and source not in overlapping(t, overlap_groups)]
        candidates.append(CandidateGains(
            name=name, fingerprint=str(fingerprint), hub_id=(hub_ids or {}).get(name), source_task=source,
            runs=runs, partial=bool(missing), gains={t: round(float(v), 4) for t, v in own.items()}))
    candidates.sort(key=lambda c: -sum(c.gains.values()) / max(len(c.gains), 1))
    filled = base.model_copy(update={"scores": {t: round(float(v), 4) for t, v in scores.items()}})
    return GainSet(arch=arch, base=filled, targets=targets, candidates=candidates)


def export_bench(store: Store, bench: Bench, *, source: str | None = None, license: str = "unspecified",
                 description: str = "") -> GainsFile:
    """A stored bench as a gains file: one set (the bench's architecture and base)."""
    grid = grid_frame(bench, store)
    if grid.empty or not grid["is_base"].any() or grid["is_base"].all():
        raise ConfigError(f"Bench '{bench.name}' has no stored results of both the base and a candidate yet; run "
                          "`upcycle bench` first.")
    reference = bench.base.checkpoint
    base = BaseInfo(name=reference.name, hub_id=hub_id_of(reference.name, reference.reference),
                    fingerprint=reference.fingerprint, runs=len(bench.seeds))
    hub_ids = {c.checkpoint.name: hub_id_of(c.checkpoint.name, c.checkpoint.reference) for c in bench.candidates}
    gain_set = gain_set_from_grid(grid, arch=bench.arch, base=base, targets=[t.name for t in bench.targets],
                                  runs=len(bench.seeds), hub_ids=hub_ids, overlap_groups=bench.suite.overlap_groups)
    protocol = bench.protocol
    return GainsFile(
        format=FORMAT, version=VERSION, license=license, description=description,
        source=source or f"upcycle bench '{bench.name}', protocol {protocol.name}, seeds {list(bench.seeds)}",
        sets=[gain_set])


@dataclass(frozen=True)
class ImportSummary:
    """What ``upcycle leaderboard import`` stored: per set, candidates and targets; rows excluded by reason."""

    source: str
    sets: list[tuple[str, int, int]]  # (set key, candidates, targets)
    excluded: dict[str, int]
    replaced: int


def import_gains(store: Store, document: GainsFile) -> ImportSummary:
    """Store every set of ``document`` as imported gains, replacing a previous import of the same source."""
    keys = [s.key for s in document.sets]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ConfigError(f"The gains file has two sets for the same base: {', '.join(twice)}.")
    rows = [(s.key, s.arch, s.model_dump_json()) for s in document.sets]
    replaced = store.put_imported_gains(document.source, document.license, rows)
    excluded: dict[str, int] = {}
    for gain_set in document.sets:
        for row in gain_set.excluded:
            excluded[row.reason] = excluded.get(row.reason, 0) + 1
    return ImportSummary(document.source, [(s.key, len(s.candidates), len(s.targets)) for s in document.sets],
                         excluded, replaced)


# ---------------------------------------------------------------- where the prior finds gains, and who is who

SHIPPED = ("minilm_recycling_gains.json",)  # package data: the committed grid's leaderboard


@dataclass(frozen=True)
class GainSource:
    """One set of gains the prior may use, and where it came from (for the estimator's notes)."""

    label: str
    gain_set: GainSet


@lru_cache(maxsize=None)
def shipped_gains() -> tuple[GainsFile, ...]:
    """The gains files shipped in the package (``upcycle/data``), validated once per process."""
    folder = resources.files("upcycle") / "data"
    return tuple(parse_gains((folder / name).read_text(), f"upcycle/data/{name}") for name in SHIPPED)


def gain_sources(store: Store, arches: set[str]) -> list[GainSource]:
    """Gains of candidates of ``arches`` the store does not measure itself, in the order they are trusted: sets
    imported into the store (the latest import first), then the ones shipped with upcycle."""
    found = [GainSource(f"imported gains of {row['source']} [{row['base']}]",
                        GainSet.model_validate_json(row["gain_set"]))
             for row in store.imported_gains(arches)]
    for name, document in zip(SHIPPED, shipped_gains()):
        found += [GainSource(f"gains shipped with upcycle ({name})", s) for s in document.sets if s.arch in arches]
    return found


def match_candidate(entry: ZooEntry, gain_set: GainSet) -> tuple[CandidateGains, str] | None:
    """The candidate of ``gain_set`` that ``entry`` is, and how that was decided; None when none is.

    1. The same fingerprint: the very weights that were measured (whatever their names).
    2. Otherwise only within the set's architecture, and never the set's own base:
       a. the same hub id (recorded in the zoo entry's hub cache path, or its name when it reads ``org/name``):
          a hub id names one published checkpoint; refused if both bases are known by fingerprint and differ;
       b. the same name, and the entry's recorded base fingerprint is the set's base fingerprint: a local name
          (``minilm-sst2``) means nothing across bases, so a name alone never matches without that lineage.
    """
    for candidate in gain_set.candidates:
        if candidate.fingerprint is not None and candidate.fingerprint == entry.fingerprint:
            return candidate, "fingerprint"
    base = gain_set.base.fingerprint
    if entry.arch != gain_set.arch or (base is not None and entry.fingerprint == base):
        return None
    hub_id = entry_hub_id(entry)
    same_base = base is not None and entry.base_fingerprint == base
    other_base = base is not None and entry.base_fingerprint is not None and entry.base_fingerprint != base
    if hub_id is not None and not other_base:
        for candidate in gain_set.candidates:
            if candidate.hub_id is not None and candidate.hub_id.casefold() == hub_id.casefold():
                return candidate, "hub id"
    if same_base:
        for candidate in gain_set.candidates:
            if candidate.name == entry.name:
                return candidate, f"name, same base {base[:8]}"
    return None
