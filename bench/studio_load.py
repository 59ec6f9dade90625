"""The studio under load: 16 clients x 1,000 requests on the runs and samples endpoints while a training
runs, on loopback only. Prints figures; it never passes or fails.

    python bench/studio_load.py [--clients 16] [--requests 1000] [--max-seconds 300] [--recipe mnist-dcgan]

It starts a training (`genforge.api.start_training`, one CPU thread) in a temporary runs folder, reads its
images/s from metrics.jsonl for --settle seconds without load, starts `genforge studio` on 127.0.0.1 in
its own process, then runs the clients (keep-alive HTTP, each alternating GET /api/runs and GET of the
run's newest sample picture) until each has sent its requests or --max-seconds pass. Figures: errors
(non-200 answers and failed connections; must be 0), p50 / p99 latency, requests/s, and the training's
images/s before and during the load.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import cpu_name  # noqa: E402

from genforge import api  # noqa: E402
from genforge.errors import GenforgeError  # noqa: E402

HOST = "127.0.0.1"  # loopback only: the load never leaves this machine


def rows_of(run_dir: Path) -> list[dict]:
    """The run's metrics rows ([] until the child has written config.json)."""
    try:
        return api.open_run(run_dir).metrics()
    except GenforgeError:
        return []


def speeds(run_dir: Path, after_row: int = 0, before_row: int | None = None) -> list[float]:
    rows = rows_of(run_dir)[after_row:before_row]
    return [r["images_per_s"] for r in rows if isinstance(r.get("images_per_s"), (int, float))]


def wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"studio_load: timed out waiting for {what}")


def finish(training: api.TrainingProcess) -> None:
    """Stops the training: asks until its process holds the run (a stop before that finds no one), then waits."""
    for _ in range(120):
        if not training.alive() or api.stop_training(training.run_dir):
            break
        time.sleep(0.5)
    if training.wait(60) is None and training.popen is not None:
        training.popen.kill()


def start_studio(root: Path, port: int) -> subprocess.Popen:
    studio = subprocess.Popen([sys.executable, "-m", "genforge", "studio", "--runs", str(root), "--host", HOST,
                               "--port", str(port), "--max-trainings", "4"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def answers() -> bool:
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=2)
            connection.request("GET", "/api/runs")
            return connection.getresponse().status == 200
        except OSError:
            return False

    wait_for(answers, 60, "the studio to answer")
    return studio


def client(port: int, paths: list[str], count: int, deadline: float, latencies: list, errors: list) -> None:
    """One keep-alive client: ``count`` requests cycling through ``paths``, or fewer if the deadline passes."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    for i in range(count):
        if time.monotonic() > deadline:
            return
        start = time.perf_counter()
        try:
            connection.request("GET", paths[i % len(paths)])
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors.append(response.status)
        except (OSError, http.client.HTTPException) as e:
            errors.append(type(e).__name__)
            connection.close()
            connection = http.client.HTTPConnection(HOST, port, timeout=30)
        latencies.append(time.perf_counter() - start)


def run_load(port: int, paths: list[str], clients: int, requests: int, max_seconds: float) -> dict:
    latencies: list[float] = []
    errors: list = []
    deadline = time.monotonic() + max_seconds
    threads = [threading.Thread(target=client, args=(port, paths, requests, deadline, latencies, errors))
               for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")  # noqa: E731
    return {"requests": len(latencies), "planned": clients * requests, "errors": len(errors),
            "error_kinds": sorted({str(e) for e in errors}), "seconds": elapsed, "p50_ms": pick(0.50),
            "p99_ms": pick(0.99), "requests_per_s": len(latencies) / elapsed if elapsed else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1000, help="requests per client")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="the load stops after this, done or not")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds of training measured without load")
    parser.add_argument("--recipe", default="mnist-dcgan")
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="studio-load-")) / "runs"
    overrides = ["train.threads=1", "train.log_every=10", "train.sample_every=100", "train.checkpoint_every=100000"]
    training = api.start_training(args.recipe, overrides, run_dir=root / "load", steps=10_000_000)
    studio = None
    try:
        run_dir = training.run_dir
        wait_for(lambda: len(speeds(run_dir)) >= 3 and api.open_run(run_dir).timeline(), 180, "the training to log")
        quiet_from = len(rows_of(run_dir))
        time.sleep(args.settle)
        quiet = speeds(run_dir, quiet_from)
        studio = start_studio(root, args.port)
        sample = api.open_run(run_dir).timeline()[-1][1].relative_to(run_dir).as_posix()
        paths = ["/api/runs", "/api/run/file?" + urllib.parse.urlencode({"run": "load", "name": sample})]
        loaded_from = len(rows_of(run_dir))
        figures = run_load(args.port, paths, args.clients, args.requests, args.max_seconds)
        loaded = speeds(run_dir, loaded_from)
    finally:
        finish(training)
        if studio is not None:
            studio.terminate()
            studio.wait(30)
    figures.update(cpu=cpu_name(), recipe=args.recipe, clients=args.clients,
                   train_images_per_s_quiet=statistics.median(quiet) if quiet else None,
                   train_images_per_s_loaded=statistics.median(loaded) if loaded else None)
    print(json.dumps(figures, indent=1) if args.json else report(figures))
    return 0


def report(f: dict) -> str:
    fmt = lambda v: "-" if v is None else f"{v:,.0f}"  # noqa: E731
    return "\n".join([
        f"studio_load on {f['cpu']}: {f['clients']} clients, {f['requests']:,} of {f['planned']:,} requests "
        f"in {f['seconds']:.1f} s ({f['requests_per_s']:,.0f}/s) on GET /api/runs and a sample picture",
        f"errors: {f['errors']}" + (f" ({', '.join(f['error_kinds'])})" if f["errors"] else ""),
        f"latency: p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms",
        f"training ({f['recipe']}, 1 thread): {fmt(f['train_images_per_s_quiet'])} images/s without load, "
        f"{fmt(f['train_images_per_s_loaded'])} with it"])


if __name__ == "__main__":
    raise SystemExit(main())
