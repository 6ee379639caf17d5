"""Prompt templates: how a task's examples become an instruction, an input and verbalized label options.

Zero-shot scoring with a generative LM compares label options, so a classification task needs three things
besides its examples: an instruction ``I`` (the same for every example), the input ``x`` rendered from the
example's columns, and one verbalizer per class. A :class:`Template` holds them; :meth:`Template.prompts`
turns a :class:`~upcycle.tasks.Split` into :class:`Prompt` values the scoring methods consume.

Templates come from YAML (a user's ``--template FILE`` or one shipped in ``upcycle/data/templates``)::

    name: sst2
    instruction: Is the sentiment of this movie review negative or positive?
    input: "{{ text }}"
    answer_choices: [negative, positive]

or are built from the task's label names (:func:`default_template`). ``input`` is Jinja over the example's
columns (``text`` and, for pair tasks, ``text_pair``), rendered in a sandbox with undefined names as errors:
a template is user input, and a typo must fail loudly rather than render an empty string. Every problem is
one :class:`~upcycle.errors.TemplateError` line naming the template, the cause and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import TemplateError, validation_problems
from .task import SPLITS, Split, Task

# When a YAML file omits `input`: the text, then the second text on its own line where the task has one. One
# source serves single-text and pair tasks alike, since a file is loaded before the task it will serve is known.
DEFAULT_INPUT = "{{ text }}{% if text_pair is defined %}\n{{ text_pair }}{% endif %}"
TEMPLATE_KEYS = "name, instruction, input, answer_choices"

# Sandboxed: a template file may come from anyone, and Jinja can otherwise reach Python attributes.
# StrictUndefined: `{{ question }}` on a task without that column is an error, not a silent empty string.
_JINJA = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


@dataclass(frozen=True)
class Prompt:
    """One example as the scorer sees it: instruction ``I``, input ``x``, the label options and the gold label."""

    instruction: str
    input: str
    options: tuple[str, ...]
    label: int | None


@dataclass(frozen=True)
class Template:
    """An instruction, a Jinja ``input`` over the example's columns and one verbalizer per class (label order).

    ``source`` is provenance only (a file path, ``builtin:sst2``, ``default``): two templates with the same
    instruction, input and verbalizers score identically, so :meth:`key` ignores it (and ``name``).
    """

    name: str
    instruction: str
    input: str
    answer_choices: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "answer_choices", tuple(self.answer_choices))  # a list would break hashing

    @property
    def where(self) -> str:
        """How error messages name this template: its name and, when known, where it came from."""
        return f"Template '{self.name}'" + (f" ({self.source})" if self.source else "")

    def key(self) -> str:
        """sha256 of the canonical JSON of what changes scores: instruction, input and answer_choices."""
        payload = {"answer_choices": list(self.answer_choices), "input": self.input, "instruction": self.instruction}
        canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def render_input(self, text: str, text_pair: str | None = None) -> str:
        """``x`` for one example: the Jinja ``input`` rendered over its columns, stripped (may be empty)."""
        context = {"text": text} if text_pair is None else {"text": text, "text_pair": text_pair}
        compiled = self._compiled()
        try:
            return compiled.render(context).strip()
        except Exception as error:  # user code: any failure (undefined name, sandbox refusal, type error) is theirs
            raise TemplateError(f"{self.where}: rendering input failed ({_describe(error)}); {_COLUMNS_HINT}") from None

    def prompts(self, split: Split) -> list[Prompt]:
        """One :class:`Prompt` per example of ``split``, in order, with its gold class index."""
        pairs = split.text_pairs
        return [
            Prompt(self.instruction, self.render_input(text, None if pairs is None else pairs[i]),
                   self.answer_choices, int(split.labels[i]))
            for i, text in enumerate(split.texts)
        ]

    def prompt_for_input(self, x: str) -> Prompt:
        """A prompt whose input is ``x`` as given (not rendered), with no gold label.

        Calibration scores content-free inputs such as ``"N/A"`` or ``""`` in place of a real example.
        """
        return Prompt(self.instruction, x, self.answer_choices, None)

    def _compiled(self) -> jinja2.Template:
        try:
            return _compile(self.input)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(
                f"{self.where}: Jinja syntax error in input at line {error.lineno}: {error.message}; fix the input "
                f"template ({_COLUMNS_HINT})."
            ) from None


_COLUMNS_HINT = 'write columns as {{ text }} and, for pair tasks, {{ text_pair }}, e.g. input: "{{ text }}"'


@lru_cache(maxsize=512)
def _compile(source: str) -> jinja2.Template:
    """Compile once per distinct input source: prompts() renders it for every example."""
    return _JINJA.from_string(source)


def _describe(error: Exception) -> str:
    text = str(error) if isinstance(error, jinja2.TemplateError) else f"{type(error).__name__}: {error}"
    return text.rstrip(".")  # it goes inside parentheses, mid-sentence


class _TemplateFile(BaseModel):
    """The YAML schema. Numbers are accepted as verbalizers (ratings ``1``..``5``) and read as strings."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    name: str | None = None
    instruction: str
    input: str | None = None
    answer_choices: list[str] = Field(min_length=1)


def load_template(path: str | os.PathLike[str]) -> Template:
    """Read a template YAML file and check what can be checked without a task (syntax, keys, verbalizers)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise TemplateError(f"{path}: cannot read the template ({error.strerror}); pass an existing YAML file.") \
            from None
    except UnicodeDecodeError:
        raise TemplateError(f"{path}: the template is not UTF-8 text; save it as a UTF-8 YAML file.") from None
    return _parse(text, where=str(path), default_name=path.stem, source=str(path))


def _parse(text: str, where: str, default_name: str, source: str) -> Template:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise TemplateError(f"{where}: not valid YAML ({_yaml_problem(error)}); fix the file's syntax.") from None
    if not isinstance(document, dict):
        raise TemplateError(f"{where}: a template is a YAML mapping with the keys {TEMPLATE_KEYS} "
                            "(instruction and answer_choices required).")
    choices = document.get("answer_choices")
    if isinstance(choices, list) and any(isinstance(choice, bool) for choice in choices):
        raise TemplateError(f"{where}: answer_choices has a boolean: YAML reads unquoted yes/no/on/off/true/false "
                            'as booleans; quote them, e.g. answer_choices: ["no", "yes"].')
    try:
        parsed = _TemplateFile.model_validate(document)
    except ValidationError as error:
        raise TemplateError(f"{where}: {validation_problems(error, 'template')}; the keys are {TEMPLATE_KEYS} "
                            "(instruction and answer_choices required).") from None
    # Surrounding whitespace carries no meaning: the scorer owns the separators between I, x and y.
    template = Template(
        name=parsed.name or default_name,
        instruction=parsed.instruction.strip(),
        input=DEFAULT_INPUT if parsed.input is None else parsed.input,
        answer_choices=tuple(choice.strip() for choice in parsed.answer_choices),
        source=source,
    )
    _check_self(template)
    return template


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        return f"{error.problem or error.context} at line {error.problem_mark.line + 1}"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _check_self(template: Template) -> None:
    """The checks that need no task: an instruction, usable verbalizers, Jinja that compiles."""
    where = template.where
    if not template.instruction.strip():
        raise TemplateError(f"{where}: the instruction is empty; write a sentence saying what to decide, e.g. "
                            "'Is the sentiment of this review negative or positive?'.")
    if not template.answer_choices:
        raise TemplateError(f"{where}: answer_choices is empty; give one verbalizer per class, in label order.")
    seen: dict[str, int] = {}
    for index, choice in enumerate(template.answer_choices):
        folded = choice.strip().casefold()
        if not folded:
            raise TemplateError(f"{where}: answer_choices[{index}] is empty; give every class a word or phrase.")
        if folded in seen:
            first = template.answer_choices[seen[folded]]
            raise TemplateError(
                f"{where}: duplicated verbalizer '{choice.strip()}' (answer_choices[{seen[folded]}] '{first.strip()}' "
                f"and answer_choices[{index}] are equal ignoring case and spaces); the scorer could not tell those "
                "classes apart: make every verbalizer distinct."
            )
        seen[folded] = index
    template._compiled()


def validate_template(template: Template, task: Task) -> None:
    """Raise :class:`TemplateError` unless ``template`` can score ``task`` zero-shot.

    Checks: a classification task; an instruction; one non-empty, distinct verbalizer per class; Jinja that
    compiles and renders the task's first example (so a column the task lacks is caught before any model
    runs). An input that renders empty for some example is allowed: the scorer still sees I and y.
    """
    where = template.where
    if task.kind != "classification" or task.label_names is None:
        raise TemplateError(_regression_message(task))
    _check_self(template)
    names = task.label_names
    if len(template.answer_choices) != len(names):
        raise TemplateError(
            f"{where}: {len(template.answer_choices)} answer_choices ({', '.join(template.answer_choices)}) but task "
            f"'{task.name}' has {len(names)} classes ({', '.join(names)}); give one verbalizer per class, in this "
            "label order."
        )
    example = _first_example(task)
    if example is None:
        return
    columns = ["text"] + (["text_pair"] if task.is_pair else [])
    try:
        _compile(template.input).render(example)
    except jinja2.UndefinedError as error:
        missing = re.search(r"'([^']+)' is undefined", str(error))
        what = f"{{{{ {missing.group(1)} }}}} but task '{task.name}' has no column '{missing.group(1)}'" if missing \
            else f"something task '{task.name}' does not have ({error})"
        available = " and ".join(f"{{{{ {column} }}}}" for column in columns)
        raise TemplateError(f"{where}: input uses {what}; its columns are {available}: use only those in input.") \
            from None
    except Exception as error:  # user code: report whatever it raised, as the one line
        raise TemplateError(f"{where}: input fails on the first example of task '{task.name}' ({_describe(error)}); "
                            f"fix the input template ({_COLUMNS_HINT}).") from None


def _first_example(task: Task) -> dict[str, str] | None:
    for split_name in SPLITS:
        split = task.splits.get(split_name)
        if split is not None and len(split):
            example = {"text": split.texts[0]}
            if split.text_pairs is not None:
                example["text_pair"] = split.text_pairs[0]
            return example
    return None


def _regression_message(task: Task) -> str:
    return (f"Task '{task.name}' is a regression task: zero-shot scoring compares verbalized classes, so it needs a "
            "classification task (one with label names).")


def default_template(task: Task) -> Template:
    """A template built from the task's label names, for tasks without a shipped or user template.

    Label names become verbalizers with ``_`` and ``-`` read as spaces (``not_equivalent`` -> ``not equivalent``),
    since an LM scores words, not identifiers. The instruction lists them, so the choice is stated in ``I``.
    """
    if task.kind != "classification" or task.label_names is None:
        raise TemplateError(_regression_message(task))
    choices = tuple(" ".join(re.sub(r"[_-]", " ", name).split()) for name in task.label_names)
    seen: dict[str, str] = {}
    for name, choice in zip(task.label_names, choices):
        folded = choice.casefold()
        if not folded or folded in seen:
            cause = (f"label '{name}' has no words" if not folded
                     else f"labels '{seen[folded]}' and '{name}' both read as '{choice}'")
            raise TemplateError(f"Task '{task.name}': cannot build a default template: {cause}; pass --template FILE "
                                "with one distinct verbalizer per class.")
        seen[folded] = name
    subject = "this pair of texts" if task.is_pair else "this text"
    return Template(
        name=task.name,
        instruction=f"Classify {subject}. Answer with one of: {', '.join(choices)}.",
        input="{{ text }}\n{{ text_pair }}" if task.is_pair else "{{ text }}",
        answer_choices=choices,
        source="default",
    )


def _shipped():
    return files("upcycle") / "data" / "templates"


def builtin_template_names() -> list[str]:
    """The task names with a template shipped in ``upcycle/data/templates``, sorted."""
    folder = _shipped()
    if not folder.is_dir():
        return []
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


@lru_cache(maxsize=None)
def builtin_template(task_name: str) -> Template | None:
    """The shipped template for ``task_name`` (``sst2``), or ``None`` when none is shipped."""
    if task_name not in builtin_template_names():  # also keeps a task name from reaching outside the folder
        return None
    text = (_shipped() / f"{task_name}.yaml").read_text(encoding="utf-8")
    return _parse(text, where=f"builtin template '{task_name}'", default_name=task_name, source=f"builtin:{task_name}")


def template_for(task: Task, path: str | os.PathLike[str] | None = None) -> Template:
    """The template to score ``task`` with, always validated for it.

    A file given by the user wins (and its problems are errors). Otherwise the shipped template named like the
    task is used when it fits (a user's task can share a shipped name yet have other classes); else one built
    from the label names.
    """
    if path is not None:
        template = load_template(path)
        validate_template(template, task)
        return template
    builtin = builtin_template(task.name)
    if builtin is not None:
        try:
            validate_template(builtin, task)
            return builtin
        except TemplateError:
            pass  # e.g. the class count differs: fall back to the label names
    template = default_template(task)
    validate_template(template, task)
    return template

