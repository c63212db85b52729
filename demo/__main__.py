"""`python -m demo`: the whole lanekd flow on the embedded default (synthetic scenes and video):
distill a student, export it, run it on a dashcam video, print FPS. `python -m demo video` only
makes the synthetic dashcam video. Errors end with one line and exit code 2; --debug (or
LANEKD_DEBUG=1) shows the traceback instead."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.cli import (EXIT_INTERRUPTED, add_debug_flag, bounded, debug_requested, guarded, non_negative_int,
                         positive_float, positive_int)

MIN_SCENES = 20


PROG = "python -m demo"


def _run_flow(args: argparse.Namespace) -> int:
    from demo.flow import DemoSettings, run_demo

    settings = DemoSettings(out=args.out, scenes=args.scenes, video_seconds=args.video_seconds,
                            teacher_steps=args.teacher_steps, student_steps=args.student_steps,
                            bench_frames=args.bench_frames, threads=args.threads, seed=args.seed,
                            teacher=args.teacher)
    try:
        run_demo(settings)
    except KeyboardInterrupt:
        print("demo interrupted; run it again to resume where it stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def main(argv: list[str] | None = None) -> int:
    from demo import video
    from demo.flow import TEACHER_MODES, DemoSettings

    raw = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(raw)
    d = DemoSettings()
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_debug_flag(parser)
    parser.add_argument("--out", type=Path, default=d.out, help="output folder (a second run reuses it)")
    parser.add_argument("--scenes", type=bounded(int, MIN_SCENES), default=d.scenes,
                        help=f"synthetic scenes to generate (at least {MIN_SCENES}: fewer leave the 10 %% "
                             f"validation split or a training batch empty)")
    parser.add_argument("--video-seconds", type=positive_float, default=d.video_seconds)
    parser.add_argument("--teacher-steps", type=positive_int, default=d.teacher_steps)
    parser.add_argument("--student-steps", type=positive_int, default=d.student_steps)
    parser.add_argument("--bench-frames", type=positive_int, default=d.bench_frames)
    parser.add_argument("--threads", type=non_negative_int, default=d.threads,
                        help="inference threads (0 = library default)")
    parser.add_argument("--seed", type=non_negative_int, default=d.seed)
    parser.add_argument("--teacher", choices=TEACHER_MODES, default=d.teacher,
                        help="kept: the teacher checkpoint kept in recipes/checkpoints/ (python -m demo.kept_teacher "
                             "made it); train: train it here; auto: kept where it fits these settings, else train")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    video.add_parser(sub)
    args = parser.parse_args([a for a in raw if a != "--debug"])
    fn = args.func if args.command is not None else _run_flow
    return guarded(PROG, lambda: fn(args), debug)


if __name__ == "__main__":
    sys.exit(main())
