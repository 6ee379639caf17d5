"""Target suites for the recycling benchmark, and the data-overlap groups that keep it honest.

A suite is a list of target tasks (names in the data directory, paths, or hub ids) plus groups of tasks
whose data overlap. A candidate finetuned on a task is never scored on that task or on any task that
shares data with it: sst2, sst5 and rotten_tomatoes are built from the same movie-review sentences, and
trec_coarse and trec_fine label the same questions.

Custom suites are YAML files::

    name: my-suite
    targets: [sst2, ./data/reviews.csv, cb]
    overlap_groups: [[sst2, reviews]]      # optional, added to the built-in groups
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ConfigError

OVERLAP_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"sst2", "sst5", "rotten_tomatoes"}),
    frozenset({"trec_coarse", "trec_fine"}),
)


def overlapping(task_name: str, groups: tuple[frozenset[str], ...] = OVERLAP_GROUPS) -> frozenset[str]:
    """The one overlap rule: ``task_name`` and every task that shares data with it under ``groups``."""
    related = {task_name}
    for group in groups:
        if task_name in group:
            related |= group
    return frozenset(related)


# Every shared task that the model-recycling study (Choshen et al., 2022) also used.
RECYCLING = (
    "cola", "mrpc", "stsb", "cb", "wnli", "rte", "ag_news", "isear", "trec_fine", "trec_coarse",
    "poem_sentiment", "imdb", "rotten_tomatoes", "sst5", "sst2", "financial_phrasebank",
    "tweet_eval_emoji", "tweet_eval_emotion", "tweet_eval_hate", "tweet_eval_irony", "tweet_eval_offensive",
    "esnli",
)


@dataclass(frozen=True)
class Suite:
    """Targets to bench on, and which tasks share data (by task name)."""

    name: str
    targets: tuple[str, ...]
    overlap_groups: tuple[frozenset[str], ...] = field(default=OVERLAP_GROUPS)

    def overlaps(self, source_task: str | None, target: str) -> bool:
        """True if a model trained on ``source_task`` has seen data of ``target`` (the same task included)."""
        return source_task is not None and source_task in overlapping(target, self.overlap_groups)


BUILTIN = {
    "recycling": Suite("recycling", RECYCLING),
    # small, diverse and fast: sentiment, topic, paraphrase (pairs), questions, similarity (regression)
    "quick": Suite("quick", ("rotten_tomatoes", "mrpc", "trec_coarse", "poem_sentiment", "stsb")),
}


def load_suite(reference: str) -> Suite:
    """A built-in suite by name, or a YAML file describing one."""
    if reference in BUILTIN:
        return BUILTIN[reference]
    path = Path(reference).expanduser()
    if not path.is_file():
        raise ConfigError(f"Unknown suite '{reference}': use {', '.join(BUILTIN)} or a YAML file.")
    try:
        document = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid YAML ({error}).") from None
    if not isinstance(document, dict) or not isinstance(document.get("targets"), list) or not document["targets"]:
        raise ConfigError(f"{path}: a suite needs a non-empty list under 'targets'.")
    targets = tuple(str(target) for target in document["targets"])
    if len(set(targets)) != len(targets):
        raise ConfigError(f"{path}: a target is listed twice.")
    groups = document.get("overlap_groups") or []
    if not isinstance(groups, list) or not all(isinstance(group, list) for group in groups):
        raise ConfigError(f"{path}: 'overlap_groups' must be a list of lists of task names.")
    extra = tuple(frozenset(str(name) for name in group) for group in groups)
    return Suite(str(document.get("name") or path.stem), targets, OVERLAP_GROUPS + extra)
