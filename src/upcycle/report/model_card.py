"""The Hugging Face ``model-index`` block of a checkpoint: its value as a starting point, from the store."""

from __future__ import annotations

import pandas as pd
import yaml

from ..store import Store


def model_index(store: Store, fingerprint: str, name: str) -> str:
    """A Hugging Face ``model-index`` YAML block: the checkpoint's mean test score per (task, protocol).

    These are scores *after finetuning from* this checkpoint (its value as a starting point), averaged
    over the stored seeds; the metric name says so.
    """
    frame = pd.DataFrame(store.results_for(fingerprint))
    results = []
    if not frame.empty:
        for (task, protocol, metric), rows in frame.groupby(["task", "protocol", "metric"]):
            results.append({
                "task": {"type": "text-classification" if metric == "accuracy" else "text-regression"},
                "dataset": {"name": task, "type": task, "split": "test"},
                "metrics": [{
                    "type": metric, "value": round(float(rows["score"].mean()), 4),
                    "name": f"{metric} after finetuning from this checkpoint ({protocol} protocol, "
                            f"mean of {len(rows)} seed{'s' if len(rows) > 1 else ''})",
                }],
            })
    return yaml.safe_dump({"model-index": [{"name": name, "results": results}]}, sort_keys=False)
