"""``upcycle score`` end to end on a tiny random Llama and T5: real forward passes, a real store, real errors."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from upcycle.cli import app
from upcycle.errors import TemplateError
from upcycle.scoring import score
from upcycle.scoring.loglikelihood import load_language_model, loglikelihood_unbatched
from upcycle.scoring.methods import METHODS
from upcycle.store import Store
from upcycle.tasks import load_task, template_for

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False, env={"COLUMNS": "200"})


@pytest.mark.parametrize("kind", ["tiny_llama", "tiny_t5"])
def test_score_matches_the_unbatched_reference_and_a_rerun_comes_from_the_store(kind, request, shared_data, tmp_path):
    model = str(request.getfixturevalue(kind))
    with Store(tmp_path / "s.db") as store:
        first = score(shared_data / "sst2", model, method="all", max_examples=12, store=store, device="cpu")
        assert [r.method for r in first] == ["direct", "channel", "flipped"]
        assert all(r.n == 12 and r.num_options == 2 and not r.cached and r.tokens > 0 for r in first)
        again = score(shared_data / "sst2", model, method="flipped,direct", max_examples=12, store=store)
    assert [r.cached for r in again] == [True, True]
    for result in [*first, *again]:  # the caveats, fresh or stored: 12 examples is small; one class, if so
        assert result.notes[0].startswith("the test sample has 12 examples")
        share = np.bincount(result.predictions).max() / 12
        assert any("it predicts one class" in note for note in result.notes) == (share > 0.9)
    np.testing.assert_array_equal(again[1].option_scores, first[0].option_scores)
    assert again[0].accuracy == first[2].accuracy
    # the stored scores are the reference's: one full forward pass per (example, option), summed
    task = load_task(shared_data / "sst2").subsample(None, 12, 0)
    prompts = template_for(task).prompts(task.splits["test"])
    lm = load_language_model(model, device="cpu")
    for result in first:
        requests = [r for p in prompts for r in METHODS.get(result.method).requests(p)]
        reference = loglikelihood_unbatched(lm, [c for c, _ in requests], [y for _, y in requests])
        expected = np.array([lp.sum() for lp in reference]).reshape(12, 2)
        np.testing.assert_allclose(result.option_scores, expected, atol=1e-4)
        labels = np.array([p.label for p in prompts])
        assert result.accuracy == pytest.approx((expected.argmax(1) == labels).mean())


def test_cli_prints_each_method_and_refuses_bad_templates(tiny_llama, shared_data, tmp_path):
    db = tmp_path / "cli.db"
    first = invoke("score", shared_data / "cb", "--model", tiny_llama, "--max-examples", "9", "--method", "direct",
                   "--calibrate", "content-free", "--normalize", "token", "--db", db)
    assert first.exit_code == 0, first.output
    assert "P(y | I, x)" in first.output and "9 examples, 3 options" in first.output
    assert "note (direct): the test sample has 9 examples" in first.output  # a sample: not "the test split"
    second = invoke("score", shared_data / "cb", "--model", tiny_llama, "--max-examples", "9", "--method", "direct",
                    "--calibrate", "content-free", "--normalize", "token", "--db", db)
    assert "stored" in second.output and "nothing scored again" in second.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("instruction: Does the premise entail the hypothesis?\ninput: '{{ premise }}'\n"
                      "answer_choices: ['yes', 'no', 'maybe']\n")
    refused = invoke("score", shared_data / "cb", "--model", tiny_llama, "--template", broken, "--db", db)
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "premise" in refused.output
    pmi = invoke("score", shared_data / "cb", "--model", tiny_llama, "--method", "channel", "--calibrate", "pmi",
                 "--db", db)
    assert pmi.exit_code == 2 and "use --calibrate content-free or none" in pmi.output
    regression = invoke("score", shared_data / "stsb", "--model", tiny_llama, "--db", db)
    assert regression.exit_code == 2 and "regression" in regression.output


def test_a_template_with_the_wrong_number_of_options_names_both_counts(shared_data, tmp_path):
    template = tmp_path / "two.yaml"
    template.write_text("instruction: Which is it?\nanswer_choices: ['yes', 'no']\n")
    with pytest.raises(TemplateError, match="2.*3|3.*2"):
        template_for(load_task(shared_data / "cb"), template)
