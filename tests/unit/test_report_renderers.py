"""The leaderboard renderers against small golden strings: a hand-built board, every format byte for byte; and
what the selection report says its costs are."""

from __future__ import annotations

import json

import pandas as pd

from upcycle.checkpoints import CheckpointRef
from upcycle.protocols import get_protocol
from upcycle.ranking import Bench, Candidate, Leaderboard
from upcycle.ranking.leaderboard import EXCLUDED, LeaderboardRow
from upcycle.report.leaderboard import flat_rows, to_csv, to_json, to_markdown, to_table
from upcycle.report.selection import results_json, results_markdown
from upcycle.tasks import TaskRef


def _ref(name: str) -> CheckpointRef:
    return CheckpointRef(reference=f"/zoo/{name}", name=name, fingerprint=f"{name}-fp", model_type="bert")


def board() -> Leaderboard:
    targets = (TaskRef(source="/data/rte", name="rte", fingerprint="t1"),
               TaskRef(source="/data/sst2", name="sst2", fingerprint="t2"))
    bench = Bench(name="mini", arch="bert-2x32", base=Candidate(checkpoint=_ref("base")),
                  candidates=(Candidate(checkpoint=_ref("a"), source_task="sst2"),), targets=targets, seeds=(0, 1),
                  protocol=get_protocol("quick"))
    rows = [
        LeaderboardRow(rank=None, candidate="base (vanilla base)", source_task=None, fingerprint="base-fp",
                       avg_gain=0.0, ci_low=None, ci_high=None, wins=None, losses=None, worst_loss=None,
                       fully_tested=True, values={"rte": 55.12, "sst2": 80.0}),
        LeaderboardRow(rank=1, candidate="a", source_task="sst2", fingerprint="a-fp", avg_gain=1.5, ci_low=-0.25,
                       ci_high=3.0, wins=1, losses=0, worst_loss=0.0, fully_tested=False,
                       values={"rte": 1.5, "sst2": EXCLUDED}),
    ]
    return Leaderboard(bench, rows, ["rte", "sst2"], [], 7, 8)


def test_rows_keep_the_json_layout_of_0_1():
    base, candidate = board().rows
    assert base.is_base and not candidate.is_base
    assert list(candidate.to_dict()) == ["rank", "candidate", "source_task", "fingerprint", "avg_gain", "ci_low",
                                         "ci_high", "wins", "losses", "worst_loss", "fully_tested", "gains"]
    assert base.to_dict()["scores"] == {"rte": 55.12, "sst2": 80.0}
    assert flat_rows(board())[1]["gain:sst2"] == EXCLUDED and flat_rows(board())[0]["score:rte"] == 55.12


def test_markdown_golden():
    expected = (
        "## Leaderboard `mini` (bert-2x32)\n"
        "\n"
        "Protocol `quick` (1000 train / 1000 eval examples, 2 epochs, batch 32, lr 5e-05, train fp32), seeds [0, 1], "
        "7/8 finetunes stored. Gains are points (x100) over the vanilla base's mean over seeds; the base row shows its "
        "absolute scores. CI: 95% bootstrap over targets and seeds. `overlap`: left out because the candidate's "
        "source data overlaps the target.\n"
        "\n"
        "| # | candidate | source | avg gain | 95% CI | W/L | worst | full | rte | sst2 |\n"
        "|---:|---|---|---:|---|---:|---:|---|---:|---:|\n"
        "|  | base (vanilla base) |  | 0 |  |  |  | yes | 55.12 | 80.00 |\n"
        "| 1 | a | sst2 | +1.50 | [-0.25, +3.00] | 1/0 | +0.00 | no | +1.50 | overlap |\n"
    )
    assert to_markdown(board()) == expected


def test_csv_golden():
    assert to_csv(board()) == (
        "rank,candidate,source_task,fingerprint,avg_gain,ci_low,ci_high,wins,losses,worst_loss,fully_tested,"
        "score:rte,score:sst2,gain:rte,gain:sst2\n"
        ",base (vanilla base),,base-fp,0.0,,,,,,True,55.12,80.0,,\n"
        "1.0,a,sst2,a-fp,1.5,-0.25,3.0,1.0,0.0,0.0,False,,,1.5,overlap\n"
    )


def test_json_golden():
    document = json.loads(to_json(board()))
    assert document["cells"] == {"done": 7, "total": 8} and document["targets"] == ["rte", "sst2"]
    assert document["rows"][1] == {
        "rank": 1, "candidate": "a", "source_task": "sst2", "fingerprint": "a-fp", "avg_gain": 1.5, "ci_low": -0.25,
        "ci_high": 3.0, "wins": 1, "losses": 0, "worst_loss": 0.0, "fully_tested": False,
        "gains": {"rte": 1.5, "sst2": "overlap"},
    }
    assert document["rows"][0]["scores"] == {"rte": 55.12, "sst2": 80.0} and document["rows"][0]["rank"] is None


def test_terminal_table_cells():
    table = to_table(board())
    columns = {column.header: list(column.cells) for column in table.columns}
    assert columns["candidate"] == ["base (vanilla base)", "a"]
    assert columns["rte"] == ["55.1", "[green]+1.5[/]"] and columns["sst2"] == ["80.0", "-"]
    assert columns["95% CI"] == ["", "[-0.25, +3.00]"]


def selection_results(device: str | None):
    """A one-estimator, one-target evaluation frame and its summary; ``device`` None: a frame from before costs
    were device-aware (no device column)."""
    row = {"target": "rte", "candidates": 2, "brute_force_seconds": 100.0, "estimator": "logme", "used": "logme",
           "cpu_seconds": 2.0, "amortized_seconds": 0.0, "regret_at_1": 1.0, "regret_at_3": 0.0, "regret_at_5": 0.0,
           "ndcg": 0.9, "spearman": 1.0, "kendall": 1.0, "cost_fraction": 0.02}
    frame = pd.DataFrame([row if device is None else row | {"device": device}])
    entry = {key: row[key] for key in ("regret_at_1", "regret_at_3", "regret_at_5", "ndcg", "spearman", "kendall",
                                       "cost_fraction")}
    entry |= {"regret_at_1_ci": [1.0, 1.0], "regret_at_3_ci": [0.0, 0.0], "cpu_seconds_per_target": 2.0,
              "amortized_seconds": 0.0, "fallbacks": 0, "device": device}
    return frame, {"logme": entry}


def test_the_selection_report_says_on_which_device_its_costs_were_measured():
    bench = board().bench
    cost_line = ("Cost = estimator CPU seconds / brute-force CPU seconds "
                 "(finetuning every candidate once on the target).")
    header = ("| estimator | Regret@1 | Regret@3 | Regret@5 | NDCG | Spearman | Kendall | cost | CPU s / target "
              "| fallbacks |")
    for device in (None, "cpu"):  # on the CPU, the text the committed report was written with
        frame, summary = selection_results(device)
        markdown = results_markdown(frame, summary, "logme", bench)
        assert cost_line in markdown and header in markdown.splitlines()
        assert json.loads(results_json(frame, summary, "logme"))["device"] == device
    frame, summary = selection_results("cuda:0 (NVIDIA H200)")
    markdown = results_markdown(frame, summary, "logme", bench)
    assert ("Cost = estimator wall seconds on cuda:0 (NVIDIA H200) / brute-force seconds (finetuning every "
            "candidate once on the target).") in markdown and "CPU" not in markdown
    assert ("| estimator | Regret@1 | Regret@3 | Regret@5 | NDCG | Spearman | Kendall | cost | s / target | fallbacks |"
            in markdown.splitlines())
    document = json.loads(results_json(frame, summary, "logme"))
    assert document["device"] == "cuda:0 (NVIDIA H200)"
    assert document["estimators"]["logme"]["cpu_seconds_per_target"] == 2.0  # the committed key, kept
