"""Retrieval of Experts: the ranking on toy embeddings where the right expert is known, the instance text, the
query draw (fewer than 32 instances: all of them, said so), which zoo entries are experts, and ``route`` on toy
tasks through the real MiniLM with the index cached in the store (expert weights are not needed to route)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_cue_task

from upcycle.errors import ConfigError, TaskError
from upcycle.scoring import experts as module
from upcycle.scoring.experts import (
    EXPERT_TEXT,
    Expert,
    check_text_format,
    list_experts,
    query_indices,
    rank_experts,
    roe_text,
    route,
)
from upcycle.selection.estimators import retrieval
from upcycle.store import ZooEntry
from upcycle.tasks import Prompt, load_task, template_for
from upcycle.training import features

WORDS = {
    "negative": ["terrible", "awful", "boring", "dreadful"], "positive": ["excellent", "wonderful", "superb", "great"],
    "sports": ["football", "goal", "match", "tennis"], "cooking": ["recipe", "oven", "pasta", "garlic"],
}
FILLER = {"reviews": ["the", "movie", "film", "plot", "acting"], "topics": ["today", "we", "talked", "about", "the"]}


def toy_task(root: Path, name: str, labels: list[str], filler: str, sizes=(60, 8, 40), seed: int = 0) -> Path:
    return write_cue_task(root, name, labels, WORDS, FILLER[filler], sizes, seed)


def fake_expert(store, task_folder: Path, name: str, base: str = "b" * 64, objective: str = "direct") -> None:
    """A zoo entry whose provenance is a one-task DIRECT flip-train run (routing never reads its weights)."""
    task = load_task(task_folder)
    store.put_task(fingerprint=task.fingerprint, name=task.name, source=task.source, kind=task.kind,
                   num_labels=task.num_labels, sizes=task.sizes())
    arguments = {"base_fingerprint": base, "objective": objective, "steps": 5, "seed": 0, "lora": {"r": 8},
                 "tasks": [{"name": task.name, "fingerprint": task.fingerprint,
                            "template": template_for(task).key()}]}
    fingerprint = (name.encode().hex() * 64)[:64]
    store.put_checkpoint(fingerprint=fingerprint, name=name, path=f"/nowhere/{name}", arch="llama", model_type="llama",
                         source_task=f"flip:{task.name}", base_fingerprint=base,
                         provenance={"kind": "flip-train", "flip_train": arguments})


def test_the_vote_is_the_selection_estimators_and_the_ranking_is_known_on_a_toy_index():
    assert retrieval.nearest_votes is features.nearest_votes is module.nearest_votes
    index = [np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0]]),  # expert 0 lives near x
             np.array([[0.0, 1.0, 0.0], [0.1, 0.9, 0.0]]),  # expert 1 near y
             np.array([[0.0, 0.0, 1.0]])]  # expert 2 near z
    queries = np.array([[0.1, 1.0, 0.0], [0.0, 0.8, 0.3], [0.95, 0.05, 0.0], [0.2, 1.0, 0.1]])
    order, votes, similarity = rank_experts(index, queries)
    assert order == [1, 0, 2] and votes.tolist() == [1.0, 3.0, 0.0]
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    assert similarity[2] == pytest.approx(unit[:, 2].mean())  # one instance: the mean cosine to it
    # equal votes: the expert the queries come closer to on average wins, whatever the order given
    tied = [np.array([[0.0, 1.0, 0.0]]),  # B: the y query's nearest, and 0 from the x query
            np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]]),  # A: the x query's nearest, and 0.8 from the y query
            np.array([[0.0, 0.0, 1.0]])]  # C: no vote, far from both
    order, votes, similarity = rank_experts(tied, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    assert votes.tolist() == [1.0, 1.0, 0.0] and similarity == pytest.approx([0.5, 0.9, 0.0]) and order == [1, 0, 2]
    assert rank_experts(tied, np.array([[0.0, 0.0, 1.0]]))[0] == [2, 0, 1]  # all else equal: the order given


def test_the_instance_text_and_the_query_draw():
    prompt = Prompt("Classify this text.", "a superb film", ("negative", "positive"), 1)
    assert roe_text(prompt) == "Answer Choices: negative, positive, Instance: a superb film"
    assert roe_text(prompt, "{instruction} {input}") == "Classify this text. a superb film"
    assert EXPERT_TEXT == "Answer Choices: {choices}, Instance: {input}"
    for bad in ("{choices} only", "{input} {label}", "{input"):
        with pytest.raises(ConfigError, match="text_format"):
            check_text_format(bad)
    assert query_indices(10, 32) == (list(range(10)), "the target has 10 instances, fewer than 32: all 10 vote")
    assert query_indices(32, 32) == (list(range(32)), None)
    drawn, note = query_indices(500, 32, seed=3)
    assert note is None and len(set(drawn)) == 32 and drawn == sorted(drawn) and drawn == query_indices(500, 32, 3)[0]


def test_which_zoo_entries_are_experts():
    entry = ZooEntry("f" * 64, "expert-sst2", "/x", "llama", "llama", "flip:sst2", "b" * 64, "")
    task = {"name": "sst2", "fingerprint": "t" * 64, "template": "k" * 64}
    arguments = {"base_fingerprint": "b" * 64, "objective": "direct", "steps": 50, "seed": 1, "lora": None,
                 "tasks": [task]}
    expert = Expert.of(entry, {"kind": "flip-train", "flip_train": arguments})
    assert expert == Expert("expert-sst2", "f" * 64, "/x", "sst2", "t" * 64, "k" * 64, "b" * 64, False, 50, 1)
    assert Expert.of(entry, {"kind": "flip-train", "flip_train": {**arguments, "objective": "flipped"}}) is None
    assert Expert.of(entry, {"kind": "flip-train", "flip_train": {**arguments, "tasks": [task, task]}}) is None
    assert Expert.of(entry, {"kind": "finetune"}) is None and Expert.of(entry, {}) is None


def test_route_votes_for_the_expert_whose_task_resembles_the_target_and_caches_the_index(tmp_path, store,
                                                                                       monkeypatch):
    reviews = toy_task(tmp_path, "toy_reviews", ["negative", "positive"], "reviews", seed=1)
    topics = toy_task(tmp_path, "toy_topics", ["sports", "cooking"], "topics", seed=2)
    target = toy_task(tmp_path, "toy_critics", ["negative", "positive"], "reviews", sizes=(20, 4, 50), seed=3)
    small = toy_task(tmp_path, "toy_small", ["sports", "cooking"], "topics", sizes=(20, 4, 10), seed=4)
    with pytest.raises(ConfigError, match="holds no expert LMs"):
        route(target, store=store)
    fake_expert(store, reviews, "expert-reviews")
    fake_expert(store, topics, "expert-topics")
    fake_expert(store, topics, "flipped-topics", objective="flipped")  # not an expert
    assert [e.name for e in list_experts(store)] == ["expert-reviews", "expert-topics"]

    chosen = route(target, store=store, device="cpu")
    assert [e.name for e in chosen.experts] == ["expert-reviews", "expert-topics"]
    assert chosen.queries == 32 and sum(chosen.votes) == 32 and chosen.votes[0] >= 28 and chosen.notes == ()
    assert chosen.index_sizes == (60, 60) and chosen.chosen == chosen.experts[:1]
    assert chosen.vote_counts() == {"expert-reviews": chosen.votes[0], "expert-topics": chosen.votes[1]}

    def no_embedding(*args, **kwargs):
        raise AssertionError("the index and the queries should come from the store")

    monkeypatch.setattr(module, "embed", no_embedding)
    again = route(target, store=store, device="cpu")
    assert again.votes == chosen.votes and again.similarity == chosen.similarity
    monkeypatch.undo()

    few = route(small, store=store, top_k=2, index_size=30, device="cpu")  # a new index size: embedded anew
    assert few.queries == 10 and few.experts[0].name == "expert-topics" and len(few.chosen) == 2
    assert few.notes == ("toy_small: the target has 10 instances, fewer than 32: all 10 vote",)
    assert few.index_sizes == (30, 30)
    with pytest.raises(ConfigError, match="only 2 experts"):
        route(target, store=store, top_k=3)
    with pytest.raises(ConfigError, match="not an expert LM"):
        route(target, store=store, experts=["flipped-topics"])
    fake_expert(store, topics, "expert-topics-again")
    with pytest.raises(ConfigError, match="Several experts were trained on one task"):
        route(target, store=store)
    moved = route(target, store=store, experts=["expert-reviews", "expert-topics-again"], device="cpu")
    assert moved.experts[0].name == "expert-reviews"  # cached by task: the same index for the same task

    (reviews / "train.jsonl").write_text((reviews / "train.jsonl").read_text().replace("film", "show"))
    with pytest.raises(TaskError, match="changed since it was trained"):
        route(target, store=store, experts=["expert-reviews"], index_size=7, device="cpu")
