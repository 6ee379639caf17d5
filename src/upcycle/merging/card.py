"""What a merged checkpoint says about itself: ``upcycle.json`` provenance and a Hugging Face model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, StrictUndefined

from ..checkpoints.resolve import ALIASES
from ..hub import looks_like_hub_id
from .plan import MergePlan

CARD = Environment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True).from_string('''---
{{ front_matter }}---

# {{ name }}

Merged with upcycle {{ version }} (`{{ method }}`) from
{{ inputs | length }} model(s){% if base %} on the base `{{ base.model }}`{% endif %}. No training was involved.

| model | fingerprint | weight | density |
|---|---|---|---|
{% for row in inputs %}
| `{{ row.model }}` | `{{ row.fingerprint[:16] }}` | {{ row.weight }} | {{ row.density }} |
{% endfor %}
{% if base %}

Base: `{{ base.model }}`, fingerprint `{{ base.fingerprint[:16] }}`.
{% endif %}

Task heads: {{ heads }}. Output dtype: {{ dtype }}. Seed: {{ seed }}.
{% if notes %}

Notes:
{% for note in notes %}
- {{ note }}
{% endfor %}
{% endif %}

## Reproduce

`merge_config.yaml` in this folder is the exact configuration: `upcycle merge merge_config.yaml OUT`.

```yaml
{{ config_yaml }}```
''')


def provenance(plan: MergePlan, fingerprints: dict[str, str], version: str) -> dict[str, Any]:
    """The ``upcycle.json`` of a merge: inputs with their fingerprints, method, parameters, seed, version.

    ``base_fingerprint`` is the model the output descends from (the base_model, else the inputs' recorded
    common base), which is how the zoo tells bases from finetuned checkpoints.
    """
    recorded = {m.recorded_base for m in plan.inputs if m.recorded_base}
    base_fp = fingerprints[plan.base.reference] if plan.base else (recorded.pop() if len(recorded) == 1 else None)
    return {
        "kind": "merge",
        "merge_method": plan.config.merge_method,
        "config": plan.config.model_dump(mode="json", exclude_defaults=False),
        "inputs": [{"model": m.reference, "fingerprint": fingerprints[m.reference]} for m in plan.inputs],
        "base_model": ({"model": plan.base.reference, "fingerprint": fingerprints[plan.base.reference]}
                       if plan.base else None),
        "base_fingerprint": base_fp,
        "base_name": plan.base.reference if plan.base else None,
        "heads": plan.heads,
        "dtype": plan.config.dtype,
        "seed": plan.config.seed,
        "notes": plan.notes,
        "upcycle_version": version,
    }


def model_card(plan: MergePlan, record: dict[str, Any], name: str) -> str:
    """README.md for the output folder (YAML front matter for the hub, then a readable summary)."""
    config = plan.config
    entries = {m.model: m.parameters for m in config.merged_entries}
    front = {"library_name": "transformers", "tags": ["upcycle", "merge", config.merge_method]}
    hub_base = hub_id(plan.base.reference) if plan.base else None
    if hub_base:  # the hub links the card to its base; an alias or a local folder would be a broken link
        front["base_model"] = hub_base
    inputs = [{"model": row["model"], "fingerprint": row["fingerprint"],
               "weight": entries[row["model"]].get("weight", 1.0), "density": entries[row["model"]].get("density", 1.0)}
              for row in record["inputs"]]
    return CARD.render(
        front_matter=yaml.safe_dump(front, sort_keys=True), name=name, version=record["upcycle_version"],
        method=config.merge_method, inputs=inputs, base=record["base_model"], heads=plan.heads,
        dtype=config.dtype, seed=config.seed, notes=plan.notes, config_yaml=config_yaml(plan),
    )


def hub_id(reference: str) -> str | None:
    """``reference`` as a Hugging Face hub id (``org/name``), or None for an alias or a local folder."""
    if reference.lower() in ALIASES or Path(reference).expanduser().exists() or not looks_like_hub_id(reference):
        return None
    return reference.split(":", 1)[0]


def config_yaml(plan: MergePlan) -> str:
    return yaml.safe_dump(plan.config.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
