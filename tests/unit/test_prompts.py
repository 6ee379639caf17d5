"""Prompt templates: rendering, keys, default verbalizers, one clear error per problem, the shipped templates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from upcycle.errors import TemplateError
from upcycle.tasks import (
    Prompt,
    Split,
    Task,
    Template,
    builtin_template,
    builtin_template_names,
    default_template,
    load_task,
    load_template,
    template_for,
    validate_template,
)

DATA_DIR = Path(os.environ.get("UPCYCLE_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "datasets")


def make_task(label_names=("negative", "positive"), pair=False, name="toy", kind="classification") -> Task:
    texts = ("a dull film", "a great film", "fine")
    labels = (0.5, 2.0, 1.0) if kind == "regression" else (0, 1, 1)
    pairs = ("it bored me", "I loved it", "ok") if pair else None
    split = Split(texts=texts, labels=labels, text_pairs=pairs)
    return Task(name=name, kind=kind, label_names=None if kind == "regression" else tuple(label_names),
                splits={"train": split, "validation": split, "test": split})


def write(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


SENTIMENT = Template("toy", "Is this review negative or positive?", "Review: {{ text }}", ("negative", "positive"))


# rendering and prompts


def test_render_single_and_pair_inputs_stripped():
    assert SENTIMENT.render_input("  a great film ") == "Review:   a great film"
    pair = Template("nli", "Does the premise imply the hypothesis?",
                    "Premise: {{ text }}\nHypothesis: {{ text_pair }}\n", ("yes", "no"))
    assert pair.render_input("A dog runs.", "An animal moves.") == "Premise: A dog runs.\nHypothesis: An animal moves."
    assert SENTIMENT.render_input("") == "Review:"  # an empty render is the user's business, not an error


def test_prompts_carry_instruction_input_options_and_gold_labels():
    task = make_task()
    prompts = SENTIMENT.prompts(task.splits["train"])
    assert prompts == [
        Prompt("Is this review negative or positive?", "Review: a dull film", ("negative", "positive"), 0),
        Prompt("Is this review negative or positive?", "Review: a great film", ("negative", "positive"), 1),
        Prompt("Is this review negative or positive?", "Review: fine", ("negative", "positive"), 1),
    ]
    assert all(type(p.label) is int for p in prompts)


def test_prompts_of_a_pair_task_render_both_texts():
    task = make_task(pair=True)
    template = Template("pair", "Same meaning?", "{{ text }} || {{ text_pair }}", ("no", "yes"))
    assert [p.input for p in template.prompts(task.splits["test"])] == [
        "a dull film || it bored me", "a great film || I loved it", "fine || ok"]


def test_prompt_for_content_free_input_is_not_rendered_and_has_no_label():
    assert SENTIMENT.prompt_for_input("N/A") == Prompt(SENTIMENT.instruction, "N/A", ("negative", "positive"), None)
    assert SENTIMENT.prompt_for_input("").input == ""


def test_yaml_without_input_renders_text_then_text_pair_when_present(tmp_path):
    template = load_template(write(tmp_path, "instruction: Decide.\nanswer_choices: [a, b]\n"))
    assert template.name == "mine" and template.source == str(tmp_path / "mine.yaml")
    assert template.render_input("first") == "first"
    assert template.render_input("first", "second") == "first\nsecond"
    validate_template(template, make_task())
    validate_template(template, make_task(pair=True))


def test_yaml_values_are_stripped_and_numbers_read_as_strings(tmp_path):
    template = load_template(write(tmp_path, "name: stars\ninstruction: '  How many stars?  '\n"
                                             "answer_choices: [1, 2, ' 3 ']\n"))
    assert (template.name, template.instruction, template.answer_choices) == ("stars", "How many stars?",
                                                                               ("1", "2", "3"))


# keys


def test_key_is_stable_and_follows_instruction_input_and_verbalizers_only():
    same = Template("other-name", SENTIMENT.instruction, SENTIMENT.input, ["negative", "positive"], source="x.yaml")
    assert SENTIMENT.key() == same.key() and len(SENTIMENT.key()) == 64
    assert SENTIMENT.key() == Template(**vars(SENTIMENT)).key()
    changed = [
        Template("toy", "Is this review good?", SENTIMENT.input, SENTIMENT.answer_choices),
        Template("toy", SENTIMENT.instruction, "{{ text }}", SENTIMENT.answer_choices),
        Template("toy", SENTIMENT.instruction, SENTIMENT.input, ("bad", "good")),
        Template("toy", SENTIMENT.instruction, SENTIMENT.input, ("positive", "negative")),
    ]
    assert len({SENTIMENT.key(), *(t.key() for t in changed)}) == 5


# default template


def test_default_template_reads_label_names_as_words():
    template = default_template(make_task(("not_equivalent", "equivalent"), pair=True, name="para"))
    assert template.answer_choices == ("not equivalent", "equivalent")
    assert template.instruction == "Classify this pair of texts. Answer with one of: not equivalent, equivalent."
    assert template.render_input("x", "y") == "x\ny" and template.source == "default" and template.name == "para"
    single = default_template(make_task(("not-hate", "hate", "Sci/Tech")))
    assert single.answer_choices == ("not hate", "hate", "Sci/Tech")
    assert single.instruction == "Classify this text. Answer with one of: not hate, hate, Sci/Tech."


def test_default_template_refuses_label_names_that_collide_or_vanish():
    with pytest.raises(TemplateError, match=r"'not_hate' and 'not-hate' both read as 'not hate'.*--template"):
        default_template(make_task(("not_hate", "not-hate")))
    with pytest.raises(TemplateError, match=r"label '__' has no words.*--template"):
        default_template(make_task(("__", "yes")))


# errors: one TemplateError line naming the file or template, the cause and the fix


def error_of(call) -> str:
    with pytest.raises(TemplateError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unreadable_and_invalid_yaml(tmp_path):
    missing = tmp_path / "absent.yaml"
    assert str(missing) in error_of(lambda: load_template(missing))
    bad = write(tmp_path, "instruction: [unclosed\nanswer_choices: [a, b]\n")
    message = error_of(lambda: load_template(bad))
    assert str(bad) in message and "not valid YAML" in message and "line" in message
    assert "YAML mapping" in error_of(lambda: load_template(write(tmp_path, "- a list\n")))


def test_unknown_and_missing_keys_are_named(tmp_path):
    path = write(tmp_path, "instruction: Decide.\nanswer_choice: [a, b]\n")
    message = error_of(lambda: load_template(path))
    assert str(path) in message and "answer_choices: Field required" in message
    assert "answer_choice: Extra inputs are not permitted" in message
    assert "instruction: Field required" in error_of(lambda: load_template(write(tmp_path, "answer_choices: [a]\n")))


def test_unquoted_yes_no_gets_the_quoting_fix(tmp_path):
    message = error_of(lambda: load_template(write(tmp_path, "instruction: Same?\nanswer_choices: [no, yes]\n")))
    assert "booleans" in message and 'answer_choices: ["no", "yes"]' in message


def test_jinja_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, 'instruction: Decide.\ninput: "Text:\\n{{ text }"\nanswer_choices: [a, b]\n')
    message = error_of(lambda: load_template(path))
    assert str(path) in message and "Jinja syntax error in input at line 2" in message
    broken = Template("broken", "Decide.", "{% if text %}{{ text }}", ("a", "b"))
    assert "Template 'broken'" in error_of(lambda: validate_template(broken, make_task()))


def test_a_variable_the_task_lacks_names_it_and_the_columns():
    pair_on_single = Template("t", "Decide.", "{{ text }} / {{ text_pair }}", ("negative", "positive"))
    message = error_of(lambda: validate_template(pair_on_single, make_task(name="sst")))
    assert "{{ text_pair }}" in message and "task 'sst' has no column 'text_pair'" in message
    assert "its columns are {{ text }}:" in message
    question = Template("t", "Decide.", "Q: {{ question }}", ("negative", "positive"))
    message = error_of(lambda: validate_template(question, make_task(pair=True)))
    assert "no column 'question'" in message and "{{ text }} and {{ text_pair }}" in message


def test_regression_task_is_refused():
    message = error_of(lambda: validate_template(SENTIMENT, make_task(name="sts", kind="regression")))
    assert "'sts' is a regression task" in message and "classification" in message
    assert "regression" in error_of(lambda: default_template(make_task(kind="regression")))
    assert "regression" in error_of(lambda: template_for(make_task(kind="regression")))


def test_class_count_mismatch_names_both_counts_and_the_label_names():
    three = Template("t", "Decide.", "{{ text }}", ("bad", "okay", "good"))
    message = error_of(lambda: validate_template(three, make_task(("neg", "pos"), name="imdb2")))
    assert "3 answer_choices (bad, okay, good)" in message and "'imdb2' has 2 classes (neg, pos)" in message


def test_empty_verbalizer_and_empty_instruction(tmp_path):
    empty_choice = Template("t", "Decide.", "{{ text }}", ("negative", "  "))
    assert "answer_choices[1] is empty" in error_of(lambda: validate_template(empty_choice, make_task()))
    empty_instruction = Template("t", " ", "{{ text }}", ("negative", "positive"))
    assert "instruction is empty" in error_of(lambda: validate_template(empty_instruction, make_task()))
    path = write(tmp_path, "instruction: ''\nanswer_choices: [a, b]\n")
    assert "instruction is empty" in error_of(lambda: load_template(path))


def test_duplicated_verbalizer_is_named(tmp_path):
    duplicated = Template("t", "Decide.", "{{ text }}", ("Yes", "no", " yes "))
    message = error_of(lambda: validate_template(duplicated, make_task(("a", "b", "c"))))
    assert "duplicated verbalizer 'yes'" in message and "answer_choices[0] 'Yes'" in message
    path = write(tmp_path, 'instruction: Decide.\nanswer_choices: ["Good", "GOOD"]\n')
    message = error_of(lambda: load_template(path))
    assert str(path) in message and "duplicated verbalizer 'GOOD'" in message


def test_render_failure_is_a_template_error():
    unknown = Template("t", "Decide.", "{{ other }}", ("a", "b"))
    assert "rendering input failed ('other' is undefined)" in error_of(lambda: unknown.render_input("x"))


# template_for


def test_template_for_prefers_a_user_file_then_a_fitting_builtin_then_the_default(tmp_path):
    path = write(tmp_path, 'instruction: Good film?\nanswer_choices: ["no", "yes"]\n')
    assert template_for(make_task(name="sst2"), path).answer_choices == ("no", "yes")
    assert template_for(make_task(name="sst2")).source == "builtin:sst2"
    five = make_task(("a", "b", "c", "d", "e"), name="sst2")  # a user's 'sst2' with 5 classes: builtin has 2
    fallback = template_for(five)
    assert fallback.source == "default" and fallback.answer_choices == ("a", "b", "c", "d", "e")
    assert template_for(make_task(name="never_shipped")).source == "default"
    with pytest.raises(TemplateError, match="3 answer_choices"):
        template_for(make_task(name="sst2"), write(tmp_path, "instruction: D.\nanswer_choices: [a, b, c]\n", "3.yaml"))


def test_builtin_template_is_none_for_unknown_names():
    assert builtin_template("no_such_task") is None
    assert builtin_template("../templates/sst2") is None


# shipped templates against the real tasks


def classification_tasks() -> list[str]:
    cards = sorted(DATA_DIR.glob("*/dataset.json"))
    return [card.parent.name for card in cards if json.loads(card.read_text())["task"] == "classification"]


needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"shared datasets not found at {DATA_DIR}")


@needs_data
def test_builtin_names_cover_every_classification_task():
    names = classification_tasks()
    assert len(names) == 22 and "stsb" not in names
    assert builtin_template_names() == names


@needs_data
@pytest.mark.parametrize("name", classification_tasks() if DATA_DIR.is_dir() else [])
def test_shipped_template_validates_against_its_task(name):
    task = load_task(str(DATA_DIR / name))
    template = builtin_template(name)
    assert template is not None and template.name == name and template.source == f"builtin:{name}"
    validate_template(template, task)
    assert template_for(task) == template
    prompts = template.prompts(task.splits["validation"].take(range(3)))
    assert [p.label for p in prompts] == list(task.splits["validation"].labels[:3])
    assert all(p.input and p.options == template.answer_choices for p in prompts)
    if task.is_pair:
        assert task.splits["validation"].text_pairs[0].strip() in prompts[0].input


# Where a wrong order would silently invert accuracy: label name -> verbalizer, per shipped template.
EXPECTED = {
    "imdb": {"neg": "negative", "pos": "positive"},
    "cola": {"unacceptable": "no", "acceptable": "yes"},
    "mrpc": {"not_equivalent": "no", "equivalent": "yes"},
    "rte": {"entailment": "yes", "not_entailment": "no"},
    "wnli": {"not_entailment": "no", "entailment": "yes"},
    "cb": {"entailment": "yes", "contradiction": "no", "neutral": "maybe"},
    "esnli": {"entailment": "yes", "neutral": "maybe", "contradiction": "no"},
    "sst5": {"very negative": "terrible", "negative": "bad", "neutral": "okay", "positive": "good",
             "very positive": "great"},
    "poem_sentiment": {"negative": "negative", "positive": "positive", "no_impact": "no impact", "mixed": "mixed"},
    "trec_coarse": {"ABBR": "abbreviation", "ENTY": "entity", "DESC": "description", "HUM": "person",
                    "LOC": "location", "NUM": "number"},
    "tweet_eval_hate": {"not-hate": "no", "hate": "yes"},
    "tweet_eval_irony": {"non_irony": "no", "irony": "yes"},
    "tweet_eval_offensive": {"not-offensive": "no", "offensive": "yes"},
}


@needs_data
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_verbalizers_follow_label_order(name):
    card = json.loads((DATA_DIR / name / "dataset.json").read_text())
    assert dict(zip(card["label_names"], builtin_template(name).answer_choices)) == EXPECTED[name]


@needs_data
def test_trec_fine_and_emoji_verbalizers():
    trec = builtin_template("trec_fine").answer_choices
    assert len(trec) == 50 and len({choice.casefold() for choice in trec}) == 50
    names = json.loads((DATA_DIR / "trec_fine" / "dataset.json").read_text())["label_names"]
    mapping = dict(zip(names, trec))
    assert (mapping["ENTY:animal"], mapping["NUM:date"], mapping["HUM:ind"], mapping["LOC:city"]) == (
        "animal", "date", "person", "city")
    emoji = json.loads((DATA_DIR / "tweet_eval_emoji" / "dataset.json").read_text())["label_names"]
    assert builtin_template("tweet_eval_emoji").answer_choices == tuple(emoji)
