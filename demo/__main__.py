"""`python -m demo`: the whole lanekd flow on the embedded default (synthetic scenes and video):
distill a student, export it, run it on a dashcam video, print FPS. `python -m demo video` only
makes the synthetic dashcam video."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from demo import video
    from demo.flow import DemoSettings

    d = DemoSettings()
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=d.out, help="output folder (a second run reuses it)")
    parser.add_argument("--scenes", type=int, default=d.scenes, help="synthetic scenes to generate")
    parser.add_argument("--video-seconds", type=float, default=d.video_seconds)
    parser.add_argument("--teacher-steps", type=int, default=d.teacher_steps)
    parser.add_argument("--student-steps", type=int, default=d.student_steps)
    parser.add_argument("--bench-frames", type=int, default=d.bench_frames)
    parser.add_argument("--threads", type=int, default=d.threads, help="inference threads (0 = library default)")
    parser.add_argument("--seed", type=int, default=d.seed)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    video.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command is not None:
        return int(args.func(args) or 0)
    from demo.flow import run_demo

    settings = DemoSettings(out=args.out, scenes=args.scenes, video_seconds=args.video_seconds,
                            teacher_steps=args.teacher_steps, student_steps=args.student_steps,
                            bench_frames=args.bench_frames, threads=args.threads, seed=args.seed)
    try:
        run_demo(settings)
    except KeyboardInterrupt:
        print("demo interrupted; run it again to resume where it stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
