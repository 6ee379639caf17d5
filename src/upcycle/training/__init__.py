"""Training: batching, the finetune loop, frozen-feature encoding with the linear probe, the multitask baseline
and metrics. torch and transformers are imported inside the functions that need them."""

from .features import embed, linear_probe_score
from .loop import (
    compute_metrics,
    configure_threads,
    finetune_json,
    predict,
    resolve_eval_precision,
    run_finetune,
    saved_finetune_json,
)
from .multitask import train_multitask

__all__ = ["compute_metrics", "configure_threads", "embed", "finetune_json", "linear_probe_score", "predict",
           "resolve_eval_precision", "run_finetune", "saved_finetune_json", "train_multitask"]
