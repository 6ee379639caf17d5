"""The one executor: the same JSON job in this process and in fresh processes; failures name the job."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import BaseModel

from upcycle.errors import ConfigError, UpcycleError
from upcycle.execute import LocalExecutor, ProcessExecutor, RayExecutor, make_executor


class Echo(BaseModel):
    text: str
    fail: bool = False


def shout(job_json: str) -> str:
    """A job: JSON in, JSON out (module level, so a spawned process can import it)."""
    job = Echo.model_validate_json(job_json)
    if job.fail:
        raise ValueError(f"cannot shout {job.text}")
    return json.dumps({"text": job.text.upper(), "pid": os.getpid()})


def describe(job: Echo) -> str:
    return f"echo {job.text}"


def test_in_process_and_in_fresh_processes_give_the_same_answers():
    jobs = [Echo(text="a"), Echo(text="b"), Echo(text="c")]
    here = {job.text: json.loads(payload) for job, payload in LocalExecutor().map(shout, jobs, describe)}
    apart = {job.text: json.loads(payload) for job, payload in ProcessExecutor(parallel=2).map(shout, jobs, describe)}
    assert {k: v["text"] for k, v in here.items()} == {k: v["text"] for k, v in apart.items()} == {
        "a": "A", "b": "B", "c": "C"}
    assert {v["pid"] for v in here.values()} == {os.getpid()}
    pids = {v["pid"] for v in apart.values()}
    assert os.getpid() not in pids and len(pids) == 3  # a fresh process per job


def test_a_failing_job_is_named():
    with pytest.raises(ValueError, match="cannot shout x"):  # in-process: the job's own error, unchanged
        list(LocalExecutor().map(shout, [Echo(text="x", fail=True)], describe))
    with pytest.raises(UpcycleError, match=r"^echo x failed: ValueError: cannot shout x$"):
        list(ProcessExecutor().map(shout, [Echo(text="ok"), Echo(text="x", fail=True)], describe))


def test_make_executor_names():
    assert type(make_executor("local")) is LocalExecutor
    isolated = make_executor("local", isolate=True)
    assert type(isolated) is ProcessExecutor and isolated.parallel == 1  # one fresh process at a time
    ray = make_executor("ray", address="127.0.0.1:1")
    assert type(ray) is RayExecutor
    assert (ray.address, ray.cpus_per_job, ray.max_retries) == ("127.0.0.1:1", 1, 2)
    assert make_executor("ray").address is None  # a new local Ray instance
    with pytest.raises(ConfigError, match=r"^Unknown executor 'slurm': use local or ray\.$"):
        make_executor("slurm")
    with pytest.raises(ConfigError, match=r"^--ray-address only applies to --executor ray\.$"):
        make_executor("local", address="127.0.0.1:1")
