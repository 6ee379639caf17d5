"""upcycle merge side by side with mergekit: same inputs, same YAML, one run; wall time, peak RSS, max |diff|.

Inputs: a Llama-style base and three "finetunes" (base + small seeded noise) with random weights, float32
safetensors. Each method's YAML is given unchanged to both CLIs (``upcycle merge`` and ``mergekit-yaml``),
each run in its own process, alternating tools, after the inputs were read once into the page cache. Peak
RSS is the child's ``ru_maxrss`` (``os.wait4``). Writes ``benchmarks/results/merge_vs_mergekit.json``.

    make merge-vs-mergekit          # sets up .venv-mergekit (mergekit 0.1.5) and runs this
    .venv/bin/python benchmarks/merge_vs_mergekit.py --mergekit .venv-mergekit/bin/mergekit-yaml
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from upcycle.checkpoints import resolve_checkpoint
from upcycle.report import write_atomic

SIZES = {  # Llama-style geometry; "full" is the 200-500M parameter range
    "full": dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=16,
                 num_attention_heads=16, num_key_value_heads=8),
    "small": dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2),
}
FINETUNES = 3
ROOT = Path(__file__).resolve().parents[1]


def portable(path: str) -> str:
    """A path as the committed results record it: relative to the repository root, else just its name (no
    machine's absolute paths in benchmarks/results)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else resolved.name


def portable_config(config: dict) -> dict:
    """A method's YAML with its model paths made :func:`portable` (the runs themselves read absolute ones)."""
    recorded = {**config, "models": [{**m, "model": portable(m["model"])} for m in config["models"]]}
    if "base_model" in config:
        recorded["base_model"] = portable(config["base_model"])
    return recorded


def method_configs(models: list[Path]) -> dict[str, dict]:
    base, tuned = str(models[0]), [str(m) for m in models[1:]]
    return {
        "linear": {"merge_method": "linear", "dtype": "float32",
                   "models": [{"model": m, "parameters": {"weight": w}} for m, w in zip(tuned, (0.5, 0.3, 0.2))]},
        "task_arithmetic": {"merge_method": "task_arithmetic", "base_model": base, "dtype": "float32",
                            "parameters": {"lambda": 0.8},
                            "models": [{"model": m, "parameters": {"weight": w}}
                                       for m, w in zip(tuned, (1.0, 0.5, 0.5))]},
        "ties": {"merge_method": "ties", "base_model": base, "dtype": "float32", "parameters": {"lambda": 1.0},
                 "models": [{"model": m, "parameters": {"weight": 1.0, "density": 0.5}} for m in tuned]},
    }


def make_models(folder: Path, size: str) -> tuple[list[Path], int]:
    """Base + finetunes as Hugging Face folders (config.json + model.safetensors); returns them and the
    parameter count. Finetune i is base + N(0, 0.002) noise, seeded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SIZES[size], max_position_embeddings=2048, tie_word_embeddings=False)
    with torch.device("meta"):
        shapes = {name: tuple(p.shape) for name, p in LlamaForCausalLM(config).named_parameters()}
    count = sum(torch.Size(s).numel() for s in shapes.values())
    folders = [folder / ("base" if i == 0 else f"finetune{i}") for i in range(FINETUNES + 1)]
    if all((f / "model.safetensors").exists() for f in folders):
        return folders, count
    generator = torch.Generator().manual_seed(0)
    base = {name: torch.randn(shape, generator=generator) * 0.02 for name, shape in shapes.items()}
    for i, target in enumerate(folders):
        target.mkdir(parents=True, exist_ok=True)
        config.architectures = ["LlamaForCausalLM"]
        config.save_pretrained(target)
        tensors = base if i == 0 else {name: value + torch.randn(value.shape, generator=generator) * 0.002
                                       for name, value in base.items()}
        save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
        del tensors
    return folders, count


def run(command: list[str], log: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process; raises with its log tail when it fails."""
    with log.open("w") as handle:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({child.returncode}): {log.read_text()[-2000:]}")
    return wall, usage.ru_maxrss * 1024


def weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
    return [folder / "model.safetensors"]


def compare(ours: Path, theirs: Path) -> dict[str, float]:
    """Largest |a - b| over every tensor and how many entries differ by more than 1e-6, read one tensor at a
    time; tensor names must match exactly."""
    def locate(folder: Path) -> dict[str, Path]:
        found = {}
        for file in weight_files(folder):
            with safe_open(file, "pt") as handle:
                found.update({name: file for name in handle.keys()})
        return found

    mine, other = locate(ours), locate(theirs)
    if set(mine) != set(other):
        raise RuntimeError(f"outputs differ in tensor names: {sorted(set(mine) ^ set(other))[:5]}")
    worst, differing, total = 0.0, 0, 0
    for name in sorted(mine):
        with safe_open(mine[name], "pt") as a, safe_open(other[name], "pt") as b:
            x, y = a.get_tensor(name), b.get_tensor(name)
            if x.shape != y.shape:
                raise RuntimeError(f"{name}: shapes {tuple(x.shape)} and {tuple(y.shape)}")
            gap = (x.double() - y.double()).abs()
            worst = max(worst, float(gap.max()))
            differing += int((gap > 1e-6).sum())
            total += gap.numel()
    return {"max_abs_diff": worst, "entries_over_1e-6": differing, "entries": total}


def warm(folders: list[Path]) -> None:
    for folder in folders:
        with (folder / "model.safetensors").open("rb") as handle:
            while handle.read(1 << 24):
                pass


def mergekit_on_minilm(mergekit: str, work: Path) -> dict[str, str]:
    """What mergekit does with MiniLM experts (BertForSequenceClassification) and their base (BertModel), in
    the cases a user meets: TIES on the base, the same with --allow-crimes, and a plain average of experts
    whose heads differ in shape. upcycle merges all three (heads dropped)."""
    experts = Path("runs/recycling_minilm/experts")
    if not (experts / "minilm-sst2").exists():
        return {"not run": f"no MiniLM experts under {experts}"}
    base = str(resolve_checkpoint("minilm").path)
    cases = {
        "ties on the base": ({"merge_method": "ties", "base_model": base, "models": [
            {"model": str(experts / f"minilm-{t}"), "parameters": {"weight": 1.0, "density": 0.5}}
            for t in ("sst2", "mrpc")]}, []),
        "ties on the base, --allow-crimes": (None, ["--allow-crimes"]),
        "linear, sst2 + dair_emotion experts (2 and 6 labels)": ({"merge_method": "linear", "models": [
            {"model": str(experts / f"minilm-{t}"), "parameters": {"weight": 1.0}}
            for t in ("sst2", "dair_emotion")]}, []),
    }
    outcomes, previous = {}, None
    for case, (config, flags) in cases.items():
        config = config or previous
        previous = config
        file = work / "minilm.yaml"
        file.write_text(yaml.safe_dump(config))
        out = work / "minilm-mergekit"
        shutil.rmtree(out, ignore_errors=True)
        done = subprocess.run([mergekit, str(file), str(out), "--no-copy-tokenizer", *flags],
                              capture_output=True, text=True)
        lines = [line for line in (done.stderr + done.stdout).splitlines() if "Error" in line]
        line = (lines or [""])[-1].replace(f"{ROOT}/", "").replace(f"{work}/", "")  # no absolute paths recorded
        outcomes[case] = "merged" if done.returncode == 0 else f"exit {done.returncode}: {line}"[:300]
    return outcomes


def version(executable: str, package: str) -> str:
    python = Path(executable).parent / "python"
    return subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version('{package}'))"],
                          capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mergekit", default=".venv-mergekit/bin/mergekit-yaml")
    parser.add_argument("--upcycle", default=".venv/bin/upcycle")
    parser.add_argument("--work", type=Path, default=Path("runs/merge_vs_mergekit"))
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="linear,task_arithmetic,ties")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/merge_vs_mergekit.json"))
    parser.add_argument("--inputs-only", action="store_true", help="Only write the input models and stop.")
    args = parser.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    work = args.work / args.size
    folders, parameters = make_models(work / "inputs", args.size)
    if args.inputs_only:
        print(f"{len(folders)} models of {parameters:,} parameters under {work / 'inputs'}")
        return
    configs = method_configs([f.resolve() for f in folders])
    results = {}
    for method in args.methods.split(","):
        config = work / f"{method}.yaml"
        config.write_text(yaml.safe_dump(configs[method], sort_keys=False))
        tools = {"upcycle": lambda out: [args.upcycle, "merge", str(config), str(out)],
                 "mergekit": lambda out: [args.mergekit, str(config), str(out), "--no-copy-tokenizer", "--quiet"]}
        measured = {tool: {"wall_s": [], "peak_rss_bytes": []} for tool in tools}
        outputs = {}
        for repeat in range(args.repeats):
            for tool, command in (tools.items() if repeat % 2 == 0 else reversed(tools.items())):
                out = work / f"out-{method}-{tool}"
                shutil.rmtree(out, ignore_errors=True)
                warm(folders)
                wall, rss = run(command(out), work / f"{method}-{tool}.log")
                measured[tool]["wall_s"].append(round(wall, 3))
                measured[tool]["peak_rss_bytes"].append(rss)
                outputs[tool] = out
                print(f"{method} {tool} run {repeat + 1}: {wall:.1f} s, peak RSS {rss / 2**20:.0f} MiB", flush=True)
        ratios = [m / u for m, u in zip(measured["mergekit"]["wall_s"], measured["upcycle"]["wall_s"])]
        results[method] = {
            "speedup": round(statistics.median(measured["mergekit"]["wall_s"])
                             / statistics.median(measured["upcycle"]["wall_s"]), 3),
            "speedup_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "rss_ratio": round(statistics.median(measured["upcycle"]["peak_rss_bytes"])
                               / statistics.median(measured["mergekit"]["peak_rss_bytes"]), 3),
            **compare(outputs["upcycle"], outputs["mergekit"]),
            **measured,
        }
        print(method, {k: v for k, v in results[method].items() if k not in measured}, flush=True)
        for out in outputs.values():
            shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as scratch:
        minilm = mergekit_on_minilm(args.mergekit, Path(scratch))
    record = {
        "anchor": "mergekit-yaml, same YAML and inputs, same machine, alternating runs",
        "speedup": "median mergekit wall / median upcycle wall (speedup_range: per-pair ratios)",
        "rss_ratio": "median upcycle peak RSS / median mergekit peak RSS",
        "inputs": {"models": 1 + FINETUNES, "parameters_each": parameters, "geometry": SIZES[args.size],
                   "dtype": "float32", "bytes_each": (folders[0] / "model.safetensors").stat().st_size},
        "repeats": args.repeats,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"mergekit": version(args.mergekit, "mergekit"), "upcycle": version(args.upcycle, "upcycle"),
                     "torch": torch.__version__},
        "configs": {method: portable_config(config) for method, config in configs.items()},
        "methods": results,
        "mergekit_on_minilm": minilm,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
