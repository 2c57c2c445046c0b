"""Data at WMT scale: memory and time of preparing a large translation corpus (vocabulary + token
store), and the memory of each process of a two-process run on it, against the code before the
token store (a git worktree of an older commit, run with this venv through PYTHONPATH).

The corpus is the shipped Bible en-es pairs repeated with a per-copy marker (``<k> `` before both
sides) so that no two lines are equal and the hash split spreads every copy; it is written under
``--work`` (default /tmp/seqkd-data-scale), never into the repository.

Measured, each in a child process of its own (peak resident memory from ``wait4``'s ``ru_maxrss``;
for the two-process runs, the peak ``VmHWM`` and the peak private ``RssAnon`` of each worker,
polled from /proc every 0.2 s):

- preparation: ``engine.task()`` (vocabulary + token store; the old code: reading the pairs and the
  vocabulary), and for the old code also encoding the three splits into its in-memory examples,
  which every process of a run does before its first batch;
- opening: the same with the vocabulary and store already built (what every later run pays);
- a two-process run (``seqkd run --nproc 2``) of 50 steps of a tiny model with a prepared vocabulary.

    OMP_NUM_THREADS=1 python -m benchmarks.data_scale --old-tree /tmp/seqkd-old
    python -m benchmarks.data_scale --render
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import REPO, publish
from seqkd.fileio import atomic_write_text

RESULTS = REPO / "benchmarks" / "results" / "data_scale.json"
MARK = "data_scale"
PAGES = (REPO / "docs" / "benchmarks.md",)  # the table stands on this page only
CORPUS = REPO / "data" / "bible-en-es" / "bible-en-es.tsv.gz"

PREPARE = """
import json, sys, time
from pathlib import Path
from seqkd.engine import Engine
from seqkd.recipe import load_recipe
start = time.perf_counter()
engine = Engine(load_recipe(Path(sys.argv[1])))
task = engine.task()
if sys.argv[2] == "encode":  # the old code encodes every split in each process
    for split in ("train", "valid", "test"):
        task.num_examples(split)
print(json.dumps({"seconds": time.perf_counter() - start, "train_examples": task.num_examples("train")}))
"""


def make_corpus(n: int, folder: Path) -> Path:
    path = folder / f"bible-x{n}.tsv"
    if path.exists():
        return path
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for i in range(n):
            key, source, target = lines[i % len(lines)]
            k = i // len(lines)
            out.write(f"{key}#{k}\t{k} {source}\t{k} {target}\n")
    tmp.rename(path)
    return path


def write_recipe(folder: Path, corpus: Path, name: str) -> Path:
    recipe = {
        "description": f"data-scale benchmark ({name})",
        "task": {"name": "translation", "source_lang": "en", "target_lang": "es", "data": {"corpus": str(corpus)},
                 "vocab_size": 8000, "max_seq_len": 64},
        "models": {"tiny": {"encoder_layers": 1, "decoder_layers": 1, "encoder_dim": 64, "encoder_ffn_dim": 128, "encoder_heads": 4}},
        "training": {"max_steps": 50, "max_tokens": 2048, "lr": 1e-3, "warmup_steps": 10, "log_every": 10,
                     "validate_every": 1000, "checkpoint_every": 1000},
        "evaluation": {"beam_size": 1, "max_sentences": 8, "split": "valid"},
        "output": {"dir": str(folder / name / "run")},
        "stages": [{"name": "tiny", "method": "supervised", "model": "tiny"}],
    }
    path = folder / name / "recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def env_for(tree: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tree)}


def prepare(recipe: Path, tree: Path, encode: bool) -> dict[str, Any]:
    """Time and peak RSS of preparing the recipe's task in a child process."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PREPARE, str(recipe), "encode" if encode else "prepare"], cwd=tree, env=env_for(tree),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    start = time.perf_counter()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"preparing {recipe} failed:\n{err[-3000:]}")
    reported = json.loads(out.strip().splitlines()[-1])
    return {"seconds": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024), "train_examples": reported["train_examples"]}


def _status(pid: int) -> dict[str, int]:
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "RssAnon", "VmRSS"):
                fields[name] = int(value.split()[0]) // 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return fields


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def two_processes(recipe: Path, tree: Path) -> dict[str, Any]:
    """``seqkd run --nproc 2``: wall time and, per worker, peak RSS and peak private (anonymous) RSS."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqkd", "run", str(recipe), "--nproc", "2"], cwd=tree, env=env_for(tree),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    start = time.perf_counter()
    peaks: dict[int, dict[str, int]] = {}
    while proc.poll() is None:
        pending, tree_pids = [proc.pid], []
        while pending:
            pid = pending.pop()
            kids = _children(pid)
            if not kids:
                tree_pids.append(pid)  # a leaf: a worker (the launchers have children)
            pending += kids
        for pid in tree_pids:
            if pid == proc.pid:
                continue
            now = _status(pid)
            if now:
                peak = peaks.setdefault(pid, {"VmHWM": 0, "RssAnon": 0})
                peak["VmHWM"] = max(peak["VmHWM"], now.get("VmHWM", 0))
                peak["RssAnon"] = max(peak["RssAnon"], now.get("RssAnon", 0))
        time.sleep(0.2)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"the two-process run of {recipe} failed:\n{err[-3000:]}")
    workers = sorted(peaks.values(), key=lambda p: -p["VmHWM"])[:2]
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mb_per_process": [p["VmHWM"] for p in workers],
        "peak_private_rss_mb_per_process": [p["RssAnon"] for p in workers],
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"date": str(date.today()), "machine": f"{os.cpu_count()} CPU cores, OMP_NUM_THREADS=1",
                               "old_commit": args.old_commit, "rows": []}
    if args.add and RESULTS.exists():  # measure some rows now, keep the others
        results["rows"] = json.loads(RESULTS.read_text(encoding="utf-8"))["rows"]
    plan = [("new", REPO, n) for n in args.new_pairs] + [("old", args.old_tree, n) for n in args.old_pairs]
    plan += [("new", REPO, n) for n in args.large_pairs]
    for code, tree, n in plan:
        corpus = make_corpus(n, args.work)
        recipe = write_recipe(args.work, corpus, f"{code}-{n}")
        print(f"{code} code, {n:,} pairs: preparing", flush=True)
        row: dict[str, Any] = {"code": code, "pairs": n}
        row["prepare"] = prepare(recipe, tree, encode=code == "old")
        if code == "new":  # the old code has nothing to open: a run's processes redo the encoding
            row["open"] = prepare(recipe, tree, encode=False)
        if n <= args.train_max_pairs:
            print(f"{code} code, {n:,} pairs: two processes, 50 steps", flush=True)
            row["two_processes"] = two_processes(recipe, tree)
        store = sorted((args.work / f"{code}-{n}" / "run" / "_shared").glob("tokens-*"))
        if store:
            row["store_mb"] = round(sum(f.stat().st_size for f in store[0].iterdir()) / 2**20)
        print(json.dumps(row), flush=True)
        results["rows"] = [r for r in results["rows"] if (r["code"], r["pairs"]) != (code, n)] + [row]
        results["rows"].sort(key=lambda r: (r["pairs"], r["code"]))
        atomic_write_text(RESULTS, json.dumps(results, indent=1) + "\n")  # what is measured so far
    return results


def opened(row: dict[str, Any], key: str, form: str) -> str:
    return form.format(row["open"][key]) if "open" in row else "—"


def render(results: dict[str, Any]) -> str:
    lines = [
        "| code | pairs | prepare: wall | prepare: peak RSS | open again: wall | open again: peak RSS | store on disk "
        "| 2 processes × 50 steps: wall | peak RSS per process | private (anonymous) RSS per process |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        two = r.get("two_processes")
        per = lambda key: " / ".join(f"{v:,} MB" for v in two[key]) if two else "not run"  # noqa: E731
        lines.append(
            f"| {r['code']} | {r['pairs']:,} | {r['prepare']['seconds']:.0f} s | {r['prepare']['peak_rss_mb']:,} MB "
            f"| {opened(r, 'seconds', '{:.0f} s')} | {opened(r, 'peak_rss_mb', '{:,} MB')} | {str(r['store_mb']) + ' MB' if 'store_mb' in r else '—'} "
            f"| {str(round(two['seconds'])) + ' s' if two else '—'} | {per('peak_rss_mb_per_process')} | {per('peak_private_rss_mb_per_process')} |"
        )
    lines += [
        "",
        f"*{results['machine']}; {results['date']}. `old` is commit {results['old_commit']} (every process reads and encodes "
        "the corpus into Python lists; its preparation includes that encoding), `new` the token store. Results file: "
        f"`{RESULTS.relative_to(REPO)}`.*",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--render", action="store_true", help="only re-render the table from the results file")
    parser.add_argument("--add", action="store_true", help="keep the results file's other rows (a row measured again is replaced)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/seqkd-data-scale"))
    parser.add_argument("--old-tree", type=Path, default=Path("/tmp/seqkd-old"), help="a git worktree of the code before the token store")
    parser.add_argument("--old-commit", default="6d738e7")
    parser.add_argument("--new-pairs", type=int, nargs="*", default=[500_000])
    parser.add_argument("--old-pairs", type=int, nargs="*", default=[500_000])
    parser.add_argument("--large-pairs", type=int, nargs="*", default=[4_500_000], help="new code only, measured last")
    parser.add_argument("--train-max-pairs", type=int, default=4_500_000, help="run the two-process measurement up to this size")
    args = parser.parse_args()
    publish(RESULTS, render, MARK, None if args.render else measure(args), pages=PAGES)


if __name__ == "__main__":
    main()
