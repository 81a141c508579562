"""The course's main job, measured: `python -m molmo_lite run` (what `make run` does), its wall time per part and its
held-out metrics, written as JSON and as a table of docs/benchmarks.md.

    python -m benchmarks.course_run [--out runs/tiny] [--fresh] [--from-report runs/tiny/report.json] [--no-table]

--fresh points $MOLMO_LITE_CHECKPOINTS at an empty folder, as on a fresh clone (the course model's ViT is shipped in
data_samples/backbones/ and its LLM starts from random: nothing is pre-trained; the charts and tables are
rendered); --from-report publishes a report that a run already wrote (it holds its timings; add --fresh when that
run started from an empty checkpoint folder, which is then only recorded).
The installation of the environment is not part of the time (measure `make install` separately).
Writes benchmarks/results/course_run.json and the table between the <!-- course_run-benchmark --> markers of
docs/benchmarks.md (tests/test_readme.py checks they agree; the README quotes its headline).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine_info, publish

# The table's rows, in order: (task, metric) -> the course's target for it (issue 26).
TARGETS = {("pointing", "f1"): 0.80, ("counting", "exact"): 0.80, ("clocks", "hour"): 0.80,
           ("clocks", "within_3_min"): 0.50, ("charts", "accuracy"): 0.50, ("tables", "accuracy"): 0.50,
           ("captions", "object_recall"): 0.60}


def readme_table(result: dict) -> str:
    """The held-out metrics of `make run` beside the two controls: the same model with shuffled images, and the blind
    baseline (one constant answer); then the answer-loss ratio shuffled / true images."""
    n = result.get("n", {})
    shuffled, blind = result.get("shuffled", {}), result.get("blind", {})
    lines = ["| held-out task | metric | `make run` | shuffled images | blind baseline | course target | examples |",
             "|---|---|---|---|---|---|---|"]
    for (task, metric), target in TARGETS.items():
        if metric not in result["metrics"].get(task, {}):
            continue
        cells = [f"{d[task][metric]:.2f}" if metric in d.get(task, {}) else "-" for d in (shuffled, blind)]
        lines.append(f"| {task} | {metric} | {result['metrics'][task][metric]:.2f} | {cells[0]} | {cells[1]} | "
                     f">= {target:.2f} | {n.get(task, '-')} |")
    for task, loss in result.get("losses", {}).items():
        lines.append(f"| {task} | answer loss | {loss['true_image_loss']:.3f} | {loss['shuffled_image_loss']:.3f} "
                     f"(x{loss['ratio']:.2f}) | - | shuffled >= 2x | 64 |")
        if "number_ratio" in loss:  # the values only (coordinates, counts, times): the part the image can decide
            lines.append(f"| {task} | answer loss, values only | {loss['true_number_loss']:.3f} | "
                         f"{loss['shuffled_number_loss']:.3f} (x{loss['number_ratio']:.2f}) | - | - | 64 |")
    seconds = result["seconds"]
    parts = ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items() if k != "total")
    lines += ["", f"Wall time {seconds['total'] / 60:.1f} min ({parts}); {result['machine']['cores']}-core "
              f"{result['machine']['cpu']} CPU, torch {result['machine']['torch']}, fp32."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/tiny"))
    parser.add_argument("--fresh", action="store_true", help="empty checkpoint folder: pre-train the parts too")
    parser.add_argument("--from-report", type=Path, default=None, help="publish an existing report.json")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "course_run.json")
    parser.add_argument("--no-table", "--no-readme", dest="no_readme", action="store_true",
                        help="do not rewrite its table in docs/benchmarks.md")
    args = parser.parse_args()

    report_path = args.from_report
    wall = None
    if report_path is None:
        env = dict(os.environ)
        if args.fresh:
            env["MOLMO_LITE_CHECKPOINTS"] = tempfile.mkdtemp(prefix="molmo_lite_fresh_")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "molmo_lite", "run", "--out", str(args.out), "--no-progress"],
                       check=True, env=env)
        wall = time.perf_counter() - start
        report_path = args.out / "report.json"
    report = json.loads(Path(report_path).read_text())
    result = {"benchmark": "course_run", "headline": report["headline"], "metrics": report["metrics"],
              **{k: report[k] for k in ("shuffled", "blind", "blind_answers", "losses", "n") if k in report},
              "seconds": report["seconds"], "process_wall_seconds": wall, "configs": report["configs"],
              "fresh_checkpoints": bool(args.fresh) or None, "machine": machine_info()}
    print(readme_table(result))
    publish("course_run", result, readme_table(result), args.json, update_page=not args.no_readme)


if __name__ == "__main__":
    main()
