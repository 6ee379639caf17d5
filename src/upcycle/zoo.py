"""The zoo: what enters it and how. Recorded finetunes (:func:`finetune`, whose saved weights are registered
with their lineage), experts built in bulk (:func:`build_zoo`), checkpoints added by hand (:func:`zoo_add`),
and how a name, fingerprint prefix or path on the command line becomes a zoo entry."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoints import PROVENANCE_FILE, Checkpoint, require_finite_weights, resolve_checkpoint
from .errors import CheckpointError, ConfigError
from .protocols import Protocol
from .specs import FinetuneResult, FinetuneSpec, ProgressCallback, SavedFinetune
from .store import Store, ZooEntry
from .tasks import Task, load_task
from .training import run_finetune, saved_finetune_json

if TYPE_CHECKING:
    from .execute import Executor


def finetune(
    base: str | Checkpoint,
    task: str | Task,
    *,
    seed: int = 0,
    protocol: str | Protocol = "quick",
    overrides: dict[str, Any] | None = None,
    store: Store | None = None,
    force: bool = False,
    save: str | Path | None = None,
    allow_pickle: bool = False,
    progress: ProgressCallback | None = None,
    register_saved: bool = True,
    **task_options: Any,
) -> tuple[FinetuneResult, bool]:
    """Finetune ``base`` on ``task`` and record the result; return ``(result, was_cached)``.

    A spec already in ``store`` is returned without training unless ``force`` is set, or ``save`` asks for
    weights that the stored run did not keep. With ``save`` the new checkpoint is also registered in the
    zoo, with the base and task as its lineage (not with ``register_saved=False``: weights set aside, see
    :func:`promote_aside`); a ``save`` folder that exists and holds anything else (another model, a zoo entry,
    files) is refused rather than overwritten.
    """
    checkpoint = base if isinstance(base, Checkpoint) else resolve_checkpoint(base, allow_pickle=allow_pickle)
    loaded = task if isinstance(task, Task) else load_task(task, **task_options)
    spec = FinetuneSpec.create(checkpoint, loaded, seed=seed, protocol=protocol, overrides=overrides,
                               **task_options)
    cached = _stored_or_refused(store, checkpoint, loaded, spec, save=save, force=force)
    if cached is not None:
        return cached, True
    if progress is not None:  # name the run on every bar and line: which base, which task
        progress = _labelled(progress, f"{checkpoint.name} on {loaded.name}")
    result = run_finetune(spec, save_to=save, progress=progress, task=loaded)
    _record(store, checkpoint, loaded, spec, result, register_saved=register_saved)
    return result, False


def _stored_or_refused(store: Store | None, checkpoint: Checkpoint, task: Task, spec: FinetuneSpec, *,
                       save: str | Path | None, force: bool) -> FinetuneResult | None:
    """Before a finetune: register its base and task, return the stored result when it serves (not ``force``,
    and its saved weights are still at ``save`` if asked for), and refuse a ``save`` folder holding anything else."""
    if store is not None:
        register(store, checkpoint, only_if_new=True)
        store.put_task(fingerprint=task.fingerprint, name=task.name, source=task.source, kind=task.kind,
                       num_labels=task.num_labels, sizes=task.sizes())
        cached = None if force else store.get_result(spec.key())
        if cached is not None and (save is None or _saved_at(cached, save)):
            return cached
    if save is not None:
        _refuse_to_overwrite(Path(save), spec.key(), store)
    return None


def _record(store: Store | None, checkpoint: Checkpoint, task: Task, spec: FinetuneSpec, result: FinetuneResult,
            *, register_saved: bool = True) -> None:
    """After a finetune: store its result, and register the saved model in the zoo with its lineage."""
    if store is None:
        return
    store.put_result(spec, result)
    if result.checkpoint_path is not None and register_saved:
        register(store, resolve_checkpoint(result.checkpoint_path), source_task=task.name,
                 base_fingerprint=checkpoint.fingerprint)


# Weights set aside: `select --save DIR --verify-top K` finetunes K candidates and the base, and keeps the one that
# scores best. Each verification finetune saves its weights in a hidden sibling of DIR named by its spec, outside
# the zoo; the winner's folder becomes DIR, the others are deleted. A killed run leaves them for the rerun to use.
ASIDE = re.compile(r"\.(?P<folder>.+)\.(?P<key>[0-9a-f]{12})")


def aside_folder(folder: str | Path, key: str) -> Path:
    """Where the finetune of spec ``key`` keeps its weights until it is known whether they go to ``folder``."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.{key[:12]}"


def promote_aside(store: Store, key: str, folder: str | Path) -> ZooEntry | None:
    """Move the weights the finetune of spec ``key`` set aside for ``folder`` there, point its stored result at
    them and register them in the zoo with their lineage, as if saved there; None (nothing moved) when it set none
    aside or ``folder`` is taken."""
    folder, stored = Path(folder), store.get_result(key)
    aside = aside_folder(folder, key)
    if stored is None or not _saved_at(stored, aside) or not _is_free(folder):
        return None
    aside.replace(folder)  # the same parent folder: an atomic rename, also over an empty folder
    store.set_result_path(key, str(folder.resolve()))  # absolute, as a save writes it
    record = _saved_record(folder)
    return register(store, resolve_checkpoint(folder), source_task=record.get("task"),
                    base_fingerprint=record.get("base_fingerprint"))


def discard_aside(store: Store, folder: str | Path) -> list[Path]:
    """Delete the weights finetunes set aside for ``folder`` (and forget them in their stored results); the
    folders deleted. Only hidden siblings named by a spec whose ``upcycle.json`` names that spec are touched."""
    folder, deleted = Path(folder), []
    for path in sorted(folder.parent.glob(f".{folder.name}.*")):
        match = ASIDE.fullmatch(path.name)
        key = _saved_spec(path) if match and match["folder"] == folder.name else None
        if key is None or not key.startswith(match["key"]):
            continue
        stored = store.get_result(key)
        if stored is not None and _saved_at(stored, path):
            store.set_result_path(key, None)
        shutil.rmtree(path)
        deleted.append(path)
    return deleted


def _labelled(progress: ProgressCallback, label: str) -> ProgressCallback:
    return lambda phase, done, total: progress(f"{label}: {phase}", done, total)


def _saved_at(result: FinetuneResult, target: str | Path) -> bool:
    """Whether ``target`` still holds the weights of ``result`` (its provenance names the result's spec)."""
    path = result.checkpoint_path
    return (path is not None and Path(path).resolve() == Path(target).resolve()
            and _saved_spec(Path(path)) == result.key)


def _saved_spec(folder: Path) -> str | None:
    """The spec key recorded in a saved finetune's ``upcycle.json``; None when there is none."""
    return _saved_record(folder).get("spec_key")


def _saved_record(folder: Path) -> dict[str, Any]:
    """A saved finetune's ``upcycle.json`` (its spec key, task fingerprint, seed, protocol...); {} when none."""
    try:
        record = json.loads((folder / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _is_free(folder: Path) -> bool:
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def _refuse_to_overwrite(folder: Path, key: str, store: Store | None) -> None:
    """A ``--save`` folder may be new, empty, or a finetune of this very spec (then it is made again, the same)."""
    if _is_free(folder) or _saved_spec(folder) == key:
        return
    _refuse_occupied(folder, store)


def refuse_unfit_save_folder(folder: Path, task_fingerprint: str, protocol: Protocol, store: Store | None,
                             seed: int = 0) -> None:
    """Before any work: refuse a ``--save`` folder that cannot be a finetune on this task under ``protocol`` with
    ``seed``, whichever checkpoint it starts from (``select`` learns that only after verifying; the whole spec is
    checked again then, by :func:`finetune`)."""
    if _is_free(folder):
        return
    record = _saved_record(folder)
    fields = record.get("protocol")
    saved_protocol = {k: v for k, v in fields.items() if k != "name"} if isinstance(fields, dict) else None
    if (record.get("task_fingerprint") != task_fingerprint or record.get("seed") != seed
            or saved_protocol != protocol.model_dump(mode="json", exclude={"name"})):
        _refuse_occupied(folder, store)


def _refuse_occupied(folder: Path, store: Store | None) -> None:
    owner = None if store is None else next(
        (e for e in store.checkpoints() if Path(e.path).resolve() == folder.resolve()), None)
    held = f" and holds the zoo checkpoint {owner.name}" if owner is not None else ""
    raise CheckpointError(f"{folder}: already exists{held}; --save writes a new folder: choose another, or remove "
                          "this one first"
                          f"{' (upcycle zoo remove ' + owner.name + ' --delete-files)' if owner else ''}.")


def register(
    store: Store,
    checkpoint: Checkpoint,
    *,
    name: str | None = None,
    source_task: str | None = None,
    base_fingerprint: str | None = None,
    only_if_new: bool = False,
    rename: bool = False,
) -> ZooEntry:
    """Add a checkpoint to the zoo. Lineage not given is read from its ``upcycle.json``, when it has one.

    Names are unique. A checkpoint already registered keeps its name (its path and lineage are updated) unless
    ``rename``; an explicit ``name`` that another checkpoint holds is refused, and a default name (the folder's)
    that another checkpoint holds gets the fingerprint's first 8 characters appended. Weights holding NaN or inf
    are refused before they enter.
    """
    fingerprint = checkpoint.fingerprint
    existing = store.get_checkpoint(fingerprint)
    if only_if_new and existing is not None:
        return existing
    if existing is None:
        require_finite_weights(checkpoint)  # a corrupt checkpoint never enters the zoo
    if existing is not None and not (rename and name):
        chosen = existing.name
    else:
        chosen = unique_name(store, name or checkpoint.name, fingerprint, explicit=name is not None)
    provenance = checkpoint.provenance or {}
    return store.put_checkpoint(
        fingerprint=fingerprint, name=chosen, path=str(checkpoint.path), arch=str(checkpoint.arch),
        model_type=checkpoint.arch.model_type, source_task=source_task or provenance.get("task"),
        base_fingerprint=base_fingerprint or provenance.get("base_fingerprint"), provenance=provenance or None,
    )


def unique_name(store: Store, name: str, fingerprint: str, *, explicit: bool) -> str:
    """``name`` if no other checkpoint holds it; else ConfigError when the user chose it, or ``name-<fp[:8]>``."""
    owner = store.checkpoint_named(name)
    if owner is None or owner.fingerprint == fingerprint:
        return name
    if explicit:
        raise ConfigError(f"The zoo already has a checkpoint named '{name}' ({owner.fingerprint[:12]}, "
                          f"{owner.path}); choose another name, or rename that one with `upcycle zoo rename`.")
    return unique_name(store, f"{name}-{fingerprint[:8]}", fingerprint, explicit=True)


def zoo_add(
    store: Store, path: str, *, name: str | None = None, source_task: str | None = None, base: str | None = None,
    allow_pickle: bool = False, rename: bool = False,
) -> ZooEntry:
    """Register the checkpoint at ``path`` (``base``, if given, is resolved to record its fingerprint). A checkpoint
    already in the zoo keeps its name unless ``rename`` (see :func:`register`)."""
    checkpoint = resolve_checkpoint(path, allow_pickle=allow_pickle)
    base_fingerprint = None
    if base is not None:
        base_checkpoint = resolve_checkpoint(base)
        register(store, base_checkpoint, only_if_new=True)
        base_fingerprint = base_checkpoint.fingerprint
    return register(store, checkpoint, name=name, source_task=source_task, base_fingerprint=base_fingerprint,
                    rename=rename)


def zoo_rename(store: Store, reference: str, new_name: str) -> ZooEntry:
    """Give the zoo entry ``reference`` (name or fingerprint prefix) the unique name ``new_name``."""
    entry = find_entry(store, reference)
    unique_name(store, new_name, entry.fingerprint, explicit=True)
    return store.rename_checkpoint(entry.fingerprint, new_name)


def zoo_remove(store: Store, reference: str, *, delete_files: bool = False) -> ZooEntry:
    """Take the zoo entry ``reference`` (name or fingerprint prefix) out of the zoo; its stored results stay.
    Its folder is deleted only with ``delete_files`` (never a package's bundled model, never a non-model folder)."""
    entry = find_entry(store, reference)
    folder = Path(entry.path)
    if delete_files:
        bundled = {resolve_checkpoint(alias).path.resolve() for alias in ("minilm",)}
        if folder.resolve() in bundled or not (folder / "config.json").is_file():
            raise ConfigError(f"{folder}: not a model folder upcycle may delete (a bundled model, or no "
                              "config.json); remove it by hand if you mean to.")
    store.remove_checkpoint(entry.fingerprint)
    if delete_files:
        shutil.rmtree(folder)
    return entry


def build_zoo(
    store: Store,
    *,
    base: str | Checkpoint = "minilm",
    sources: list[str],
    out: str | Path,
    seed: int = 0,
    protocol: str | Protocol = "quick",
    overrides: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    executor: Executor | None = None,
) -> Iterator[tuple[ZooEntry, FinetuneResult, bool]]:
    """Finetune ``base`` on each source task, save it as ``OUT/<base>-<task>`` and register it as an expert.

    Yields ``(zoo entry, result, was_cached)`` per source; an expert already built is not trained again. With an
    ``executor`` (a pool, Ray) the experts to build train as its jobs, several at once, and arrive in any order;
    this process stays the only writer to the store and the zoo (``progress`` then only sees this process).
    """
    checkpoint = base if isinstance(base, Checkpoint) else resolve_checkpoint(base)
    tasks = [load_task(source) for source in sources]  # every source is checked before any training
    jobs: dict[str, tuple[SavedFinetune, Task]] = {}
    for task in tasks:
        folder = Path(out).resolve() / f"{checkpoint.name}-{task.name}"
        if executor is None:
            result, cached = finetune(checkpoint, task, seed=seed, protocol=protocol, overrides=overrides,
                                      store=store, save=folder, progress=progress)
            yield _expert(store, folder), result, cached
            continue
        spec = FinetuneSpec.create(checkpoint, task, seed=seed, protocol=protocol, overrides=overrides)
        stored = _stored_or_refused(store, checkpoint, task, spec, save=folder, force=False)
        if stored is not None:
            yield _expert(store, folder), stored, True
        else:
            jobs[spec.key()] = (SavedFinetune(spec=spec, save_to=str(folder)), task)
    if not jobs:
        return
    todo = [job for job, _ in jobs.values()]
    for job, payload in executor.map(saved_finetune_json, todo, lambda j: f"{j.spec.base.name} on {j.spec.task.name}"):
        result = FinetuneResult.model_validate_json(payload)
        _record(store, checkpoint, jobs[job.spec.key()][1], job.spec, result)
        yield _expert(store, Path(job.save_to)), result, False


def _expert(store: Store, folder: Path) -> ZooEntry:
    entry = store.get_checkpoint(resolve_checkpoint(folder).fingerprint)
    assert entry is not None, "a saved finetune is registered"
    return entry


def find_entry(store: Store, reference: str) -> ZooEntry:
    """The zoo entry named ``reference``, or whose fingerprint starts with it (8+ characters); ConfigError else."""
    entry = _lookup(store, reference)
    if entry is None:
        raise ConfigError(f"No zoo checkpoint is named '{reference}' or has a fingerprint starting with it "
                          "(see `upcycle zoo list`).")
    return entry


def resolve_candidate(store: Store, reference: str, *, allow_pickle: bool = False) -> ZooEntry:
    """A zoo name or fingerprint prefix, else a checkpoint reference (registered on the way)."""
    entry = _lookup(store, reference)
    if entry is not None:
        return entry
    return register(store, resolve_checkpoint(reference, allow_pickle=allow_pickle), only_if_new=True)


def _lookup(store: Store, reference: str) -> ZooEntry | None:
    entries = store.checkpoints()
    by_name = [entry for entry in entries if entry.name == reference]
    if len(by_name) > 1:  # only in a store written before names were unique
        raise ConfigError(f"Several zoo checkpoints are named '{reference}'; use a fingerprint prefix or path.")
    if by_name:
        return by_name[0]
    if len(reference) >= 8:
        by_print = [entry for entry in entries if entry.fingerprint.startswith(reference)]
        if len(by_print) == 1:
            return by_print[0]
    return None


def default_candidates(store: Store) -> list[ZooEntry]:
    """Every zoo checkpoint but the vanilla bases: a checkpoint others were finetuned from that was not itself
    finetuned on a task (an expert finetuned further stays a candidate)."""
    entries = store.checkpoints()
    bases = {entry.base_fingerprint for entry in entries}
    return [entry for entry in entries if entry.fingerprint not in bases or entry.source_task is not None]
