"""``python -m distill eval``: score predictions against ground truth in the datasets' own formats.

  --metric culane   --anno-root A --pred-root P (--list test.txt | --split-dir list/test_split)
  --metric tusimple --gt test_label.json --pred pred.json
  --metric llamas   --anno-root A --pred-root P   (A: LLAMAS labels/<split>, or per-row .lines.txt)
  --metric miou     --gt-dir G --pred-dir P --num-classes C
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from distill.eval import culane, llamas, miou, tusimple
from runtime.cli import fraction, positive_int


def _need_dir(path: str, option: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(2, "folder not found" if not p.exists() else "not a folder", f"{option} {p}")
    return p


def _need_file(path: str, option: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(2, "file not found" if not p.exists() else "not a file", f"{option} {p}")
    return p


def _names(list_file: Path) -> list[str]:
    try:
        return culane.read_list(list_file)
    except UnicodeDecodeError:
        raise ValueError(f"{list_file}: not a text list file (one image path per line)") from None


def check_culane_predictions(pred_root: str, lists: list[Path]) -> None:
    """Refuse when not one prediction of the listed images exists: a wrong ``--pred-root`` would
    otherwise score as "no lanes anywhere" (F1 0) and exit 0."""
    root = _need_dir(pred_root, "--pred-root")
    expected = [root / culane._lines_name(n) for f in lists for n in _names(f)]
    if not expected:
        raise ValueError(f"{', '.join(map(str, lists)) or 'the split folder'}: lists no image to score")
    if not any(p.is_file() for p in expected):
        raise FileNotFoundError(f"--pred-root {root}: none of the {len(expected)} predictions the list names "
                                f"exist (first expected: {expected[0]}); is --pred-root right?")


def check_llamas_predictions(pred_root: str) -> None:
    root = _need_dir(pred_root, "--pred-root")
    if next(root.rglob("*.lines.txt"), None) is None:
        raise FileNotFoundError(f"--pred-root {root}: no .lines.txt prediction under it; is --pred-root right?")


def evaluate(metric: str, *, anno_root: str | None = None, pred_root: str | None = None,
             list_file: str | None = None, split_dir: str | None = None, gt: str | None = None,
             pred: str | None = None, gt_dir: str | None = None, pred_dir: str | None = None,
             num_classes: int | None = None, ignore_index: int = 255, class_names: list[str] | None = None,
             width: int = 30, iou_thresholds: tuple[float, ...] = (0.5,),
             img_size: tuple[int, int] | None = None, workers: int = 2,
             per_image: bool = False, skip_bad: bool = False) -> dict[str, Any]:
    """Run one metric; returns its result dict (see each evaluator). Missing inputs are errors."""
    def need(**kw):
        missing = [f"--{k.replace('_', '-')}" for k, v in kw.items() if v is None]
        if missing:
            raise ValueError(f"--metric {metric} needs {', '.join(missing)}")

    if metric == "culane":
        need(anno_root=anno_root, pred_root=pred_root)
        if (list_file is None) == (split_dir is None):
            raise ValueError("--metric culane needs exactly one of --list and --split-dir")
        _need_dir(anno_root, "--anno-root")
        if split_dir is not None:
            lists = sorted(_need_dir(split_dir, "--split-dir").glob("test*_*.txt"))
        else:
            lists = [_need_file(list_file, "--list")]
        check_culane_predictions(pred_root, lists)
        size = tuple(img_size) if img_size else (590, 1640)
        if split_dir is not None:
            return culane.evaluate_culane_splits(anno_root, pred_root, split_dir, width, iou_thresholds,
                                                 size, workers, per_image)
        return culane.evaluate_culane(anno_root, pred_root, list_file, width, iou_thresholds, size,
                                      workers, per_image)
    if metric == "tusimple":
        need(gt=gt, pred=pred)
        _need_file(gt, "--gt")
        _need_file(pred, "--pred")
        return tusimple.evaluate_tusimple(pred, gt, per_image)
    if metric == "llamas":
        need(anno_root=anno_root, pred_root=pred_root)
        _need_dir(anno_root, "--anno-root")
        check_llamas_predictions(pred_root)
        size = tuple(img_size) if img_size else llamas.IMG_SIZE
        return llamas.evaluate_llamas(anno_root, pred_root, width, iou_thresholds[0], size, per_image, skip_bad)
    if metric == "miou":
        need(gt_dir=gt_dir, pred_dir=pred_dir, num_classes=num_classes)
        _need_dir(gt_dir, "--gt-dir")
        _need_dir(pred_dir, "--pred-dir")
        return miou.evaluate_miou_dirs(gt_dir, pred_dir, num_classes, ignore_index, class_names, per_image)
    raise ValueError(f"unknown metric {metric!r}; choose from culane, tusimple, llamas, miou")


# the inputs the official LLAMAS script stops on, counted instead (distill.eval.llamas' docstring)
LLAMAS_COUNTS = ("skipped_images", "skipped_lanes", "missing_predictions", "point_predictions",
                 "gt_lanes_above_rows", "empty_marker_lanes", "empty_iou_pairs")


def format_result(metric: str, res: dict) -> str:
    if metric == "culane":
        return culane.format_table(res)
    if metric == "tusimple":
        return tusimple.format_table(res)
    if metric == "llamas":
        table = (f"{'images':>8}{'tp':>8}{'fp':>8}{'fn':>8}{'P':>8}{'R':>8}{'F1':>8}\n"
                 f"{res['images']:>8}{res['tp']:>8}{res['fp']:>8}{res['fn']:>8}{100 * res['precision']:>8.2f}"
                 f"{100 * res['recall']:>8.2f}{100 * res['f1']:>8.2f}")
        counted = [f"{k.replace('_', ' ')}: {res[k]}" for k in LLAMAS_COUNTS if res.get(k)]
        return table + ("\n" + "; ".join(counted) if counted else "")
    lines = [f"{'class':<16}{'IoU':>8}"]
    for name, v in res["iou"].items():
        lines.append(f"{name:<16}{'n/a' if v is None else f'{100 * v:.2f}':>8}")
    lines.append(f"{'mIoU':<16}{100 * res['miou']:>8.2f}   ({res['convention']})")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    thresholds = tuple(culane.MF1_THRESHOLDS) if args.mf1 else tuple(args.iou)
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "command", "debug") and v is not None}
    print("eval settings: " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())))
    res = evaluate(args.metric, anno_root=args.anno_root, pred_root=args.pred_root, list_file=args.list,
                   split_dir=args.split_dir, gt=args.gt, pred=args.pred, gt_dir=args.gt_dir,
                   pred_dir=args.pred_dir, num_classes=args.num_classes, ignore_index=args.ignore_index,
                   class_names=args.class_names, width=args.width, iou_thresholds=thresholds,
                   img_size=tuple(args.img_size) if args.img_size else None, workers=args.workers,
                   per_image=args.per_image, skip_bad=args.skip_bad)
    print(format_result(args.metric, res))
    if args.json:
        from runtime.sinks import write_json

        print(f"wrote {write_json(args.json, {'metric': args.metric, **res})}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="score lane / marking predictions (CULane, TuSimple, LLAMAS, mIoU)",
                              description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--metric", required=True, choices=("culane", "tusimple", "llamas", "miou"))
    p.add_argument("--anno-root", help="CULane .lines.txt root, or LLAMAS labels/<split> (label JSON or .lines.txt)")
    p.add_argument("--pred-root", help="CULane / LLAMAS prediction root (same relative paths)")
    p.add_argument("--list", help="CULane list file (e.g. list/test.txt)")
    p.add_argument("--split-dir", help="CULane folder with test0_normal.txt ... test8_night.txt")
    p.add_argument("--gt", help="TuSimple ground-truth JSON lines")
    p.add_argument("--pred", help="TuSimple prediction JSON lines")
    p.add_argument("--gt-dir", help="mIoU: ground-truth PNG class maps")
    p.add_argument("--pred-dir", help="mIoU: predicted PNG class maps (same relative paths)")
    p.add_argument("--num-classes", type=positive_int, help="mIoU: number of classes")
    p.add_argument("--ignore-index", type=int, default=255, help="mIoU: ignored ground-truth label")
    p.add_argument("--class-names", nargs="+", help="mIoU: class names for the table")
    p.add_argument("--width", type=positive_int, default=30, help="lane width in px (CULane / LLAMAS)")
    p.add_argument("--iou", type=fraction, nargs="+", default=[0.5], help="IoU threshold(s); TP when IoU > t")
    p.add_argument("--mf1", action="store_true", help="CULane: thresholds 0.5:0.05:0.95 and mF1")
    p.add_argument("--img-size", type=positive_int, nargs=2, metavar=("H", "W"),
                   help="canvas size (default 590 1640 for CULane, 717 1276 for LLAMAS)")
    p.add_argument("--workers", type=positive_int, default=2, help="CULane worker processes")
    p.add_argument("--per-image", action="store_true", help="add every image's counts to the JSON")
    p.add_argument("--skip-bad", action="store_true",
                   help="LLAMAS: skip (and count) label lanes the official spline creator rejects instead of stopping")
    p.add_argument("--json", help="write the result as JSON here")
    p.set_defaults(func=_run)
    return p
