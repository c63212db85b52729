"""The demo's student step: baseline and distilled student one after the other (in one process,
torch's default threads) against side by side (``demo.flow.train_side_by_side``: two processes,
one torch thread each), wall-clock seconds for the same budget.

    python -m benchmarks.demo_students [--steps 250] [--rounds 1] [--teacher recipes/checkpoints/...pt]

Uses the demo's data (``--work``/data, made if missing) and the demo's recipes and overrides, in
fresh run folders each time; rounds alternate which way goes first. The load average before and
after each timing is recorded: on a shared machine the ratio is only as good as the quiet it had.
Writes benchmarks/out/demo_students.json and prints a table.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from runtime.sinks import write_json

OUT = Path(__file__).resolve().parent / "out" / "demo_students.json"


def time_students(s, root: Path, teacher: Path, side_by_side: bool, work: Path) -> dict:
    """Train both students from scratch in ``work`` one way; seconds and load averages."""
    from demo.flow import train_recipe, train_side_by_side

    shutil.rmtree(work, ignore_errors=True)
    jobs = [(s.student_recipe, work / "baseline", []),
            (s.distill_recipe, work / "distilled", [f"teacher.checkpoint={teacher}"])]
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    if side_by_side:
        train_side_by_side(s, jobs, root)
    else:
        for recipe, out, extra in jobs:
            train_recipe(s, recipe, out, s.student_steps, root, extra)
    return {"mode": "side by side" if side_by_side else "one after the other",
            "seconds": time.perf_counter() - t0, "load_before": load0, "load_after": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    from demo.flow import KEPT_TEACHER, DemoSettings, make_data
    from runtime.bench import system_info

    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo_students", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=DemoSettings.student_steps)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--teacher", type=Path, default=KEPT_TEACHER)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_students"))
    parser.add_argument("--json", type=Path, default=OUT)
    args = parser.parse_args(argv)
    s = DemoSettings(out=args.work, student_steps=args.steps)
    root, _ = make_data(s)
    rows = []
    for r in range(args.rounds):
        for side in ((False, True) if r % 2 == 0 else (True, False)):
            rows.append({"round": r, **time_students(s, root, args.teacher, side, args.work / "runs")})
            print(f"  round {r}: {rows[-1]['mode']}: {rows[-1]['seconds']:.1f} s "
                  f"(load {rows[-1]['load_before']:.1f} -> {rows[-1]['load_after']:.1f})", flush=True)
    sysinfo = system_info()
    write_json(args.json, {"steps": args.steps, "cpu": sysinfo["cpu"], "cores": sysinfo["cores"], "rows": rows})
    print(f"\n{args.steps} steps each, {sysinfo['cpu']} ({sysinfo['cores']} cores)\n")
    print("| round | mode | seconds | load before | load after |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['round']} | {row['mode']} | {row['seconds']:.1f} | {row['load_before']:.1f} "
              f"| {row['load_after']:.1f} |")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
