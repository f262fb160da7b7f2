"""Gather what `gpu.sh` produced into one JSON file and a summary table.

`gpu.sh` runs each benchmark as its own step, with `BENCH_RESULTS_DIR`
pointing at a folder of that step, and appends one line per step to
`steps.tsv`. After every step it calls this script, so that the JSON under
`$OUT` is complete up to the last finished step even if the run is cut off:

    python benchmarks/_gpu_report.py WORK OUT_JSON [--summary]

`WORK` holds `steps.tsv` (step, backend, status, seconds, time limit,
command), `meta/*.txt` (nvidia-smi, versions, each backend's device) and
`results/<step>-<backend>/*.json` (what the benchmark scripts wrote).
`OUT_JSON` gets `{"meta": {...}, "steps": [...], "results": {...}}`, the
results keyed `<step>-<backend>/<file stem>`. `--summary` also prints the
steps as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

STEP_FIELDS = ("step", "backend", "status", "seconds", "limit_seconds", "command")


def read_steps(work: Path) -> list[dict]:
    path = work / "steps.tsv"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        values = line.split("\t")
        step = dict(zip(STEP_FIELDS, values))
        for key in ("seconds", "limit_seconds"):
            if step.get(key):
                step[key] = float(step[key])
        steps.append(step)
    return steps


def read_results(work: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    for path in sorted((work / "results").glob("*/*.json")):
        key = f"{path.parent.name}/{path.stem}"
        try:
            results[key] = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            results[key] = {"unreadable": str(error)}
    return results


def gather(work: Path) -> dict:
    meta = {
        path.stem: path.read_text() for path in sorted((work / "meta").glob("*.txt"))
    }
    return {"meta": meta, "steps": read_steps(work), "results": read_results(work)}


def write_atomically(path: Path, payload: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    os.replace(partial, path)


def summary(steps: list[dict]) -> str:
    lines = [
        "| step | backend | status | seconds | limit |",
        "|------|---------|--------|---------|-------|",
    ]
    for step in steps:
        seconds = step.get("seconds")
        limit = step.get("limit_seconds")
        lines.append(
            f"| {step.get('step', '')} | {step.get('backend', '')} "
            f"| {step.get('status', '')} "
            f"| {'' if seconds in (None, '') else f'{seconds:.0f}'} "
            f"| {'' if limit in (None, '') else f'{limit:.0f}'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("out_json", type=Path)
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    payload = gather(args.work)
    write_atomically(args.out_json, payload)
    if args.summary:
        print(summary(payload["steps"]), flush=True)


if __name__ == "__main__":
    main()
