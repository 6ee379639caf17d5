"""Kill -9 scenario on a real two-node Ray cluster; run by tests/test_ray_executor.py inside private network
and PID namespaces, where Ray can only bind loopback and ``ray stop`` only sees this cluster.

1. start a head and a worker node (token auth, as Ray requires for joining nodes);
2. run ``upcycle bench --executor ray`` and kill -9 the driver once a result is stored;
3. rerun it, kill -9 a Ray worker process while it runs a finetune (Ray retries the task), let it finish;
4. print JSON with what the store holds, for the test to check.

Usage: python ray_scenario.py DB SUITE BASE PORT -- [extra bench arguments]
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


def ray_cli(*args: str) -> None:
    done = subprocess.run([RAY, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ray {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def stored_keys(db: Path) -> list[str]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        try:
            return [row[0] for row in connection.execute("SELECT key FROM finetune_results")]
        except sqlite3.OperationalError:  # schema not created yet
            return []


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def finetune_workers() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "ray::finetune_json"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def main() -> None:
    db, suite, base, port = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    extra = sys.argv[sys.argv.index("--") + 1:]
    address = f"127.0.0.1:{port}"
    common = ["--include-dashboard=false", "--disable-usage-stats", "--num-cpus=1"]
    ray_cli("start", "--head", f"--port={port}", *common)
    report: dict = {}
    try:
        ray_cli("start", f"--address={address}", "--num-cpus=1", "--disable-usage-stats")
        nodes = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='{address}'); "
                                "print(sum(n['Alive'] for n in ray.nodes()))"], capture_output=True, text=True)
        report["alive_nodes"] = int(nodes.stdout.strip().splitlines()[-1])
        bench = [sys.executable, "-m", "upcycle", "bench", "--db", str(db), "--suite", suite, "--base", base,
                 "--executor", "ray", "--ray-address", address, *extra]

        # 1. kill -9 the driver as soon as it has stored one result
        already = len(stored_keys(db))
        driver = subprocess.Popen(bench, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: len(stored_keys(db)) > already or driver.poll() is not None, 300, "a first result")
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        report["after_driver_kill"] = stored_keys(db)

        # 2. rerun; kill -9 a worker process in the middle of a finetune; Ray retries it
        driver = subprocess.Popen(bench, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        victims = wait_for(lambda: finetune_workers() or driver.poll() is not None, 300, "a busy worker")
        report["killed_worker"] = isinstance(victims, list)
        if isinstance(victims, list):
            os.kill(victims[0], signal.SIGKILL)
        out, err = driver.communicate(timeout=300)
        report.update(returncode=driver.returncode, stdout=out[-3000:], stderr=err[-3000:])
        report["final"] = stored_keys(db)
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
