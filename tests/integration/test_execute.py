"""The one executor: the same JSON job in this process and in fresh processes; failures name the job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from pydantic import BaseModel

from upcycle.errors import ConfigError, UpcycleError
from upcycle.execute import LocalExecutor, ProcessExecutor, RayExecutor, make_executor
from upcycle.training.devices import DEVICE_VARIABLE, available_cores


class Echo(BaseModel):
    text: str
    fail: bool = False


def shout(job_json: str) -> str:
    """A job: JSON in, JSON out (module level, so a spawned process can import it)."""
    job = Echo.model_validate_json(job_json)
    if job.fail:
        raise ValueError(f"cannot shout {job.text}")
    return json.dumps({"text": job.text.upper(), "pid": os.getpid(), "device": os.environ.get(DEVICE_VARIABLE),
                       "threads": os.environ.get("OMP_NUM_THREADS")})


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


def test_a_pool_reuses_its_workers_each_on_one_device_with_its_share_of_the_cores():
    jobs = [Echo(text=str(i)) for i in range(8)]
    pool = ProcessExecutor(2, fresh=False, devices=["cpu", "meta"], threads=3)
    answers = [json.loads(payload) for _, payload in pool.map(shout, jobs, describe)]
    assert sorted(a["text"] for a in answers) == [str(i) for i in range(8)]
    workers = {a["pid"]: a["device"] for a in answers}
    assert len(workers) <= 2 and os.getpid() not in workers  # two long-lived workers, not one process per job
    if len(workers) == 2:
        assert sorted(workers.values()) == ["cpu", "meta"]  # the devices are dealt out, one per worker
    assert {a["threads"] for a in answers} == {"3"}
    fresh = [json.loads(p) for _, p in ProcessExecutor(2, devices=["cpu"]).map(shout, jobs[:3], describe)]
    assert len({a["pid"] for a in fresh}) == 3 and {a["device"] for a in fresh} == {"cpu"}
    assert {a["threads"] for a in fresh} == {str(max(1, available_cores() // 2))}  # the default share


def test_a_failing_pool_job_is_named_and_stops_the_rest():
    jobs = [Echo(text="x", fail=True), *(Echo(text=str(i)) for i in range(6))]
    with pytest.raises(UpcycleError, match=r"^echo x failed: ValueError: cannot shout x$"):
        list(ProcessExecutor(1, fresh=False).map(shout, jobs, describe))


def test_make_executor_names(monkeypatch):
    monkeypatch.setenv(DEVICE_VARIABLE, "cpu")
    assert type(make_executor("local")) is LocalExecutor
    isolated = make_executor("local", isolate=True)
    assert type(isolated) is ProcessExecutor and isolated.parallel == 1  # one fresh process at a time
    pool = make_executor("pool")
    assert type(pool) is ProcessExecutor and not pool.fresh and pool.devices == ["cpu"]
    assert pool.parallel == available_cores() and pool.threads == 1  # one single-threaded job per core
    assert make_executor("pool", jobs=3).parallel == 3 and make_executor("pool", isolate=True).fresh
    ray = make_executor("ray", address="127.0.0.1:1")
    assert type(ray) is RayExecutor
    assert (ray.address, ray.cpus_per_job, ray.gpus_per_job, ray.max_retries) == ("127.0.0.1:1", 1, 0.0, 2)
    assert make_executor("ray").address is None  # a new local Ray instance
    with pytest.raises(ConfigError, match=r"^Unknown executor 'slurm': use local, pool, ray\.$"):
        make_executor("slurm")
    with pytest.raises(ConfigError, match=r"^--ray-address only applies to --executor ray\.$"):
        make_executor("local", address="127.0.0.1:1")
    with pytest.raises(ConfigError, match=r"^--jobs only applies to --executor pool\.$"):
        make_executor("local", jobs=2)
    with pytest.raises(ConfigError, match=r"^--gpus-per-job only applies to --executor ray"):
        make_executor("pool", gpus_per_job=0.5)
    with pytest.raises(ConfigError, match=r"^--jobs must be at least 1, got 0\.$"):
        make_executor("pool", jobs=0)
    with pytest.raises(ConfigError, match=r"^--gpus-per-job is a share of one GPU, from 0 to 1; got 2\.$"):
        make_executor("ray", gpus_per_job=2)


def test_ray_jobs_ask_for_a_share_of_a_gpu_and_run_where_ray_puts_them(monkeypatch):
    monkeypatch.setenv(DEVICE_VARIABLE, "auto")
    packed = make_executor("ray", gpus_per_job=0.125).options()
    assert packed["num_gpus"] == 0.125 and packed["runtime_env"]["env_vars"][DEVICE_VARIABLE] == "cuda"
    on_cpu = make_executor("ray").options()
    assert on_cpu["num_gpus"] == 0 and on_cpu["runtime_env"]["env_vars"] == {DEVICE_VARIABLE: "cpu",
                                                                            "OMP_NUM_THREADS": "1"}
    monkeypatch.setenv(DEVICE_VARIABLE, "cuda")
    with pytest.raises(ConfigError, match=r"runs on a GPU exactly when it asks for a share of one"):
        make_executor("ray")  # --device cuda without --gpus-per-job would silently train on the CPU
    monkeypatch.setenv(DEVICE_VARIABLE, "cpu")
    with pytest.raises(ConfigError, match=r"not by --device cpu"):
        make_executor("ray", gpus_per_job=0.5)


DRIVER = '''
import os, sys, time
from pydantic import BaseModel
from upcycle.execute import ProcessExecutor

class Nap(BaseModel):
    pid_file: str

def nap(job_json):
    job = Nap.model_validate_json(job_json)
    with open(job.pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)
    return "{}"

if __name__ == "__main__":
    list(ProcessExecutor(1, fresh=False).map(nap, [Nap(pid_file=sys.argv[1])], lambda job: "nap"))
'''


def test_workers_exit_when_their_driver_is_killed_alone(tmp_path):
    """``kill DRIVER`` (not the process group) used to leave the pool's workers training at full CPU."""
    script, pid_file = tmp_path / "driver.py", tmp_path / "worker.pid"
    script.write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(script), str(pid_file)])
    try:
        deadline = time.monotonic() + 120
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            assert driver.poll() is None, "the driver ended before its worker started"
            time.sleep(0.2)
        worker = int(pid_file.read_text())
        os.kill(worker, 0)  # the worker is running its job
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the worker outlived its killed driver by 15 s")
