"""The KD table's arithmetic on small fake logs: curves, the convergence rule, the equal-time column."""
from __future__ import annotations

import json

import pytest

from benchmarks.kd_curves import convergence, equal_time_step, f1_at_step, tail_trend, val_curve
from benchmarks.kd_table import annotate, convergence_line, summarise


def _curve(*f1: float) -> list[tuple[int, float]]:
    """Validation F1 every 100 steps of a 1000-step run."""
    return [(100 * (i + 1), f) for i, f in enumerate(f1)]


def test_val_curve_reads_validations_in_step_order_and_keeps_a_resumed_steps_last_entry(tmp_path):
    rows = [{"step": 0, "startup": {}}, {"step": 10, "loss": 1.0, "sec_per_step": 0.5},
            {"step": 10, "val/f1": 0.30, "val/miou": 0.2}, {"step": 20, "val/f1": 0.40, "val/miou": 0.3},
            {"step": 20, "val/f1": 0.45, "val/miou": 0.3},      # resumed: appended again at step 20
            {"step": 30, "loss": 0.8}, {"step": 30, "val/f1": 0.50, "val/miou": 0.4}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    assert val_curve(tmp_path) == [(10, 0.30), (20, 0.45), (30, 0.50)]


def test_convergence_rule_over_the_last_fifth():
    moved, ok = convergence(_curve(.1, .2, .3, .4, .5, .6, .7, .600, .606, .608), 1000)   # 60.0..60.8
    assert moved == pytest.approx(0.8) and ok is True
    moved, ok = convergence(_curve(.1, .2, .3, .4, .5, .6, .7, .600, .615, .610), 1000)   # 60.0..61.5
    assert moved == pytest.approx(1.5) and ok is False
    assert convergence([(500, 0.5), (1000, 0.6)], 1000) == (None, None)                  # one tail point
    assert convergence([(600, 0.5), (799, 0.5), (800, 0.52), (1000, 0.525)], 1000)[0] == pytest.approx(0.5)
    assert convergence([(27, 0.1), (28, 0.5), (34, 0.5)], 34) == (0.0, True)              # 0.8 * 34 = 27.2: from 28


def test_f1_at_step_takes_the_last_validation_at_or_before_the_step():
    curve = [(100, 0.3), (200, 0.5), (300, 0.4)]
    assert f1_at_step(curve, 99) is None
    assert f1_at_step(curve, 100) == 0.3
    assert f1_at_step(curve, 299) == 0.5           # not interpolated towards step 300's 0.4
    assert f1_at_step(curve, 5000) == 0.4


def test_equal_time_step():
    assert equal_time_step(1000, 2.0) == 500
    assert equal_time_step(1000, 1.33) == 751      # 751.88 floored
    assert equal_time_step(1000, 0.9) == 1000      # a cheaper step does not lengthen the run


def _row(method, seed, curve, f1=0.6, sps=1.0):
    return {"student": "enet", "method": method, "seed": seed, "f1": f1, "miou": 0.4, "sec_per_step": sps,
            "steps": 1000, "curve": curve}


def _results():
    base = [_row("baseline", 0, _curve(.3, .4, .5, .5, .5, .5, .5, .600, .606, .604)),       # tail moves 0.6
            _row("baseline", 1, _curve(.3, .4, .5, .5, .5, .5, .5, .610, .612, .618))]       # tail moves 0.8
    kd = [_row("kd", 0, _curve(.3, .4, .5, .5, .5, .5, .62, .63, .64, .65)),
          _row("kd", 1, _curve(.3, .4, .5, .5, .5, .5, .64, .65, .66, .67))]
    cirkd = [_row("cirkd+kd", 0, _curve(.3, .4, .5, .5, .55, .6, .7, .7, .7, .7)),
             _row("cirkd+kd", 1, _curve(.3, .4, .5, .5, .57, .6, .7, .7, .7, .7))]
    old = [_row("fitnet", 0, None)]                                  # from before --val-every: no curve
    return {"teacher": {"f1": 0.9, "miou": 0.7}, "teacher_model": "resnet", "rows": base + kd + cirkd + old,
            "step_ratio": {"enet": {"baseline": 1.0, "kd": 1.3, "cirkd+kd": 2.0}}}   # fitnet: logged 1.0 s


def test_summary_equal_time_column_and_convergence_line():
    lines = summarise(_results()).splitlines()
    assert lines[2].endswith("| seeds | F1 at baseline's time |") and lines[3] == "|" + "---|" * 9
    rows = {line.split(" | ")[1]: line for line in lines if line.startswith("| enet |")}
    assert rows["baseline"].endswith("| 1.00x | 2 | 61.1 |")     # step 1000: (60.4 + 61.8) / 2
    assert rows["kd"].endswith("| 1.30x | 2 | 63.0 |")           # 1000 / 1.3 = 769 -> step 700: 62, 64
    assert rows["cirkd+kd"].endswith("| 2.00x | 2 | 56.0 |")     # 1000 / 2 -> step 500: 55, 57
    assert rows["fitnet"].endswith("| 1.00x | 1 | n/a |")
    assert ("enet baseline converged: F1 moved at most 0.8 points over the last fifth (steps 800-1000), "
            "seeds 0,1.") in lines
    assert ("enet at the baseline's training time: best plain KD kd 63.0, best specialised cirkd+kd 56.0; "
            "plain KD is higher by 7.0 points.") in lines


def test_tail_trend_tells_a_rising_run_from_a_jittering_one():
    steps = [800, 850, 900, 950, 1000]
    rising = list(zip(steps, (.60, .61, .62, .63, .64)))            # +1 point per 50 steps: +4 over the tail
    jitter = list(zip(steps, (.60, .63, .60, .63, .60)))            # moves 3 points, no drift
    assert tail_trend(rising, 1000) == pytest.approx(4.0)
    assert tail_trend(jitter, 1000) == pytest.approx(0.0, abs=1e-9)
    assert convergence(jitter, 1000) == (pytest.approx(3.0), False)
    assert tail_trend(rising[-2:], 1000) is None                    # two points: no line worth fitting


def test_convergence_line_names_the_seed_that_did_not_converge():
    base = [_row("baseline", 0, _curve(.3, .4, .5, .5, .5, .5, .5, .600, .606, .604)),
            _row("baseline", 1, _curve(.3, .4, .5, .5, .5, .5, .5, .600, .615, .610)),
            _row("baseline", 2, [(500, 0.5), (1000, 0.6)])]
    assert convergence_line("enet", base) == (
        "enet baseline did not converge (seed 1: F1 moved 1.5 points, trend +1.0; seed 2: fewer than 2 validations) "
        "over the last fifth (steps 800-1000): this table does not meet the convergence rule (F1 moves less than "
        "1 point over the last fifth of the run).")
    assert convergence_line("enet", base[2:]).startswith("enet baseline convergence not known (seed 2: fewer than")


def test_annotate_records_equal_time_f1_and_tail_movement_per_row():
    results = _results()
    annotate(results)
    kd0, old = results["rows"][2], results["rows"][-1]
    assert kd0["f1_equal_time"] == 0.62 and kd0["tail_moved"] == pytest.approx(2.0) and kd0["converged"] is False
    assert old["f1_equal_time"] is None and old["converged"] is None
    json.dumps(results)                                              # still writes as the results JSON


def test_old_results_without_curves_keep_the_old_table():
    rows = [{k: v for k, v in _row(m, 0, None).items() if k not in ("curve", "steps")} for m in ("baseline", "kd")]
    text = summarise({"teacher": {"f1": 0.9, "miou": 0.7}, "rows": rows})
    assert "F1 at baseline's time" not in text and "converge" not in text
    assert "| enet | kd | 60.0 ± 0.0 | +0.0 | 40.0 ± 0.0 | +0.0 | 1.00x | 1 |" in text


def test_train_recipe_passes_val_every(monkeypatch, tmp_path):
    import benchmarks._runs as runs

    seen = []
    monkeypatch.setattr(runs, "train", lambda cfg, quiet: seen.append(cfg))
    runs.train_recipe("synthetic_enet.yaml", tmp_path, tmp_path, steps=250, val_every=25)
    runs.train_recipe("synthetic_enet.yaml", tmp_path, tmp_path, steps=250)
    assert [(c.steps, c.val_every, c.ckpt_every) for c in seen] == [(250, 25, 62), (250, 250, 62)]
