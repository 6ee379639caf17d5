"""Expert LMs end to end on tiny random Llamas: two experts built (LoRA, merged into ordinary checkpoints) and
registered, a target resembling one task routed to its expert and answered by it, the uniform merge of the top 2
equal to the hand-averaged weights (base + the mean of the LoRA deltas), an expert of another base refused for
merging but allowed alone, an empty expert zoo refused, and the CLI (exit 2 on each error)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import save_tiny_lm, write_cue_task
from safetensors.numpy import load_file
from typer.testing import CliRunner

from upcycle.checkpoints import resolve_checkpoint
from upcycle.cli import app
from upcycle.errors import ConfigError
from upcycle.scoring import build_experts, expert_scores, list_experts, merge_experts, route, score
from upcycle.store import Store

WORDS = {
    "negative": ["terrible", "awful", "boring", "dreadful"], "positive": ["excellent", "wonderful", "superb", "great"],
    "sports": ["football", "goal", "match", "tennis"], "cooking": ["recipe", "oven", "pasta", "garlic"],
    "red": ["cherry", "blood", "ruby", "tomato"], "blue": ["ocean", "sky", "sapphire", "denim"],
}
FILLER = ["the", "really", "quite", "today", "and"]
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def toy_task(root: Path, name: str, labels: list[str], sizes=(48, 8, 40), seed: int = 0) -> Path:
    return write_cue_task(root, name, labels, WORDS, FILLER, sizes, seed)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, tiny_llama):
    """Two LoRA experts of the tiny Llama (reviews, topics), one expert of another base (colors), a target like
    reviews, and the store holding them."""
    root = tmp_path_factory.mktemp("experts")
    tasks = {name: toy_task(root, name, labels, seed=seed) for seed, (name, labels) in enumerate(
        [("toy_reviews", ["negative", "positive"]), ("toy_topics", ["sports", "cooking"]),
         ("toy_colors", ["red", "blue"]), ("toy_critics", ["negative", "positive"])])}
    other_base = save_tiny_lm(root / "other-base", seed=1)
    with Store(root / "upcycle.db") as store:
        built = build_experts(str(tiny_llama), [tasks["toy_reviews"], tasks["toy_topics"]], root / "experts",
                              steps=3, batch_size=4, learning_rate=3e-2, examples_per_task=16, device="cpu",
                              store=store)
        build_experts(str(other_base), [tasks["toy_colors"]], root / "other", steps=2, batch_size=4,
                      examples_per_task=16, device="cpu", store=store)
        yield {"root": root, "tasks": tasks, "store": store, "built": built, "db": root / "upcycle.db",
               "base": Path(tiny_llama), "other_base": other_base}


def test_experts_are_built_registered_and_reused(zoo, tiny_llama):
    store, built = zoo["store"], zoo["built"]
    experts = {e.name: e for e in list_experts(store)}
    assert sorted(experts) == ["expert-toy_colors", "expert-toy_reviews", "expert-toy_topics"]
    reviews = experts["expert-toy_reviews"]
    assert reviews.task == "toy_reviews" and reviews.lora and reviews.steps == 3
    assert reviews.base_fingerprint == resolve_checkpoint(tiny_llama).fingerprint != \
        experts["expert-toy_colors"].base_fingerprint
    assert [r.zoo_name for r in built] == ["expert-toy_reviews", "expert-toy_topics"]
    assert all(not r.reused and len(r.loss_curve) == 3 for r in built)
    assert store.task_source(reviews.task_fingerprint) == str(zoo["tasks"]["toy_reviews"])
    again = build_experts(str(tiny_llama), str(zoo["tasks"]["toy_reviews"]), zoo["root"] / "experts", steps=3,
                          batch_size=4, learning_rate=3e-2, examples_per_task=16, device="cpu", store=store)
    assert again[0].reused and again[0].fingerprint == built[0].fingerprint
    with pytest.raises(ConfigError, match="listed twice"):
        build_experts(str(tiny_llama), [zoo["tasks"]["toy_reviews"]] * 2, zoo["root"] / "x", store=store)


def test_the_routed_expert_answers_the_unseen_task(zoo, monkeypatch, tmp_path):
    monkeypatch.setenv("UPCYCLE_CACHE", str(tmp_path))
    store, target = zoo["store"], zoo["tasks"]["toy_critics"]
    chosen = route(target, store=store, device="cpu")
    assert chosen.experts[0].name == "expert-toy_reviews" and chosen.votes[0] >= 24 and chosen.queries == 32
    (answer,) = score(target, "experts", method="direct", store=store, device="cpu")
    (direct,) = score(target, chosen.experts[0].path, method="direct", store=store, device="cpu")
    assert answer.answered_by == ("expert-toy_reviews",) and answer.route.votes == chosen.votes
    assert answer.model == "expert-toy_reviews" and direct.cached  # stored as the expert's own result
    np.testing.assert_array_equal(answer.option_scores, direct.option_scores)
    assert answer.accuracy == direct.accuracy and "answered_by" not in answer.record()
    # oracle and random experts are read off every expert's score
    scores = expert_scores(target, store=store, experts=["expert-toy_reviews", "expert-toy_topics"], device="cpu")
    assert scores["expert-toy_reviews"].accuracy == direct.accuracy and len(scores) == 2
    with pytest.raises(ConfigError, match="model='experts'"):
        score(target, chosen.experts[0].path, top_k=2)


def test_the_merged_top_2_is_the_hand_averaged_lora_experts(zoo, monkeypatch, tmp_path):
    monkeypatch.setenv("UPCYCLE_CACHE", str(tmp_path))
    store, target = zoo["store"], zoo["tasks"]["toy_critics"]
    (answer,) = score(target, "experts", top_k=2, experts=["expert-toy_reviews", "expert-toy_topics"],
                      method="direct", store=store, device="cpu")
    assert answer.answered_by == ("expert-toy_reviews", "expert-toy_topics")
    merged_folder = next((tmp_path / "merged-experts").iterdir())
    assert answer.model == merged_folder.name
    merged, base = load_file(merged_folder / "model.safetensors"), load_file(zoo["base"] / "model.safetensors")
    experts = [load_file(Path(e.path) / "model.safetensors") for e in answer.route.chosen]
    assert set(merged) == set(base) == set(experts[0])
    changed = 0
    for name, tensor in merged.items():
        deltas = [expert[name].astype(np.float64) - base[name] for expert in experts]
        np.testing.assert_allclose(tensor, base[name] + np.mean(deltas, axis=0), atol=2e-6, err_msg=name)
        if any(target_name in name for target_name in LORA_TARGETS):
            for delta in deltas:  # each expert's delta is its merged LoRA update B A: rank <= r = 8
                assert np.abs(delta).max() > 1e-4 and np.linalg.matrix_rank(delta, tol=1e-5) <= 8
            changed += 1
        else:  # LoRA leaves embeddings and norms alone: the merge keeps the base's
            np.testing.assert_array_equal(tensor, base[name])
    assert changed == 2 * len(LORA_TARGETS)  # two layers
    provenance = json.loads((merged_folder / "upcycle.json").read_text())
    assert (provenance["merge_method"] == "linear"
            and provenance["base_fingerprint"] == answer.route.chosen[0].base_fingerprint)
    assert sorted(i["fingerprint"] for i in provenance["inputs"]) == sorted(e.fingerprint for e in answer.route.chosen)
    again = merge_experts(answer.route.chosen)  # cached by the experts' fingerprints
    assert again.path == merged_folder and again.fingerprint == resolve_checkpoint(merged_folder).fingerprint


def test_another_base_is_refused_for_merging_but_answers_alone_and_an_empty_zoo_is_refused(zoo, monkeypatch,
                                                                                         tmp_path):
    monkeypatch.setenv("UPCYCLE_CACHE", str(tmp_path))
    store, target = zoo["store"], zoo["tasks"]["toy_critics"]
    with pytest.raises(ConfigError, match="different base models: .*expert-toy_colors"):
        score(target, "experts", top_k=3, method="direct", store=store, device="cpu")
    assert not (tmp_path / "merged-experts").exists()
    (alone,) = score(zoo["tasks"]["toy_colors"], "experts", experts=["expert-toy_colors", "expert-toy_reviews"],
                     method="direct", store=store, device="cpu")
    assert alone.answered_by == ("expert-toy_colors",)  # its own task: routed to it, said so
    assert any("not unseen" in note for note in alone.route.notes)
    with Store(tmp_path / "empty.db") as empty:
        with pytest.raises(ConfigError, match="holds no expert LMs"):
            score(target, "experts", store=empty)
    with pytest.raises(ConfigError, match="needs a store"):
        score(target, "experts")


def test_cli_build_list_route_and_score(zoo, tiny_llama, monkeypatch, tmp_path):
    monkeypatch.setenv("UPCYCLE_CACHE", str(tmp_path))
    runner, db, tasks = CliRunner(), str(zoo["db"]), zoo["tasks"]
    built = runner.invoke(app, ["experts", "build", "--model", str(tiny_llama), "--tasks", str(tasks["toy_reviews"]),
                                "--out", str(zoo["root"] / "experts"), "--steps", "3", "--batch-size", "4",
                                "--learning-rate", "0.03", "--examples-per-task", "16", "--device", "cpu",
                                "--db", db])
    assert built.exit_code == 0, built.output
    assert "expert-toy_reviews" in built.output and "reused" in built.output
    listed = runner.invoke(app, ["experts", "list", "--db", db])
    assert listed.exit_code == 0 and "expert-toy_colors" in listed.output and "LoRA, 3 steps" in listed.output
    routed = runner.invoke(app, ["experts", "route", str(tasks["toy_critics"]), "--top-k", "2", "--db", db,
                                 "--experts", "expert-toy_reviews,expert-toy_topics", "--device", "cpu"])
    assert routed.exit_code == 0, routed.output
    assert "chosen: expert-toy_reviews, expert-toy_topics are merged" in " ".join(routed.output.split())
    scored = runner.invoke(app, ["score", str(tasks["toy_critics"]), "--model", "experts", "--method", "direct",
                                 "--device", "cpu", "--db", db])
    assert scored.exit_code == 0, scored.output
    assert "chosen: expert-toy_reviews answers" in scored.output and "direct" in scored.output
    for arguments in (["score", str(tasks["toy_critics"]), "--model", "experts", "--top-k", "3"],
                      ["experts", "route", str(tasks["toy_critics"]), "--top-k", "9"],
                      ["experts", "route", str(tasks["toy_critics"]), "--experts", "nothing-here"]):
        failed = runner.invoke(app, [*arguments, "--db", db])
        assert failed.exit_code == 2 and "Traceback" not in failed.output, failed.output
    empty = runner.invoke(app, ["experts", "route", str(tasks["toy_critics"]), "--db", str(tmp_path / "e.db")])
    assert empty.exit_code == 2 and "holds no expert LMs" in empty.output
    assert "no expert LMs" in runner.invoke(app, ["experts", "list", "--db", str(tmp_path / "e.db")]).output
