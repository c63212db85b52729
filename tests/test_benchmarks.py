"""The benchmark tables' arithmetic: mean ± std over seeds, gains, step-time ratios, log parsing."""
from __future__ import annotations

import json

import pytest

from benchmarks._runs import sec_per_step, write_outputs
from benchmarks.kd_table import METHODS, RUNS, cost, shards, summarise


def _row(method, seed, f1, miou, sps):
    return {"student": "enet", "method": method, "seed": seed, "f1": f1, "miou": miou, "sec_per_step": sps}


def test_kd_table_summary_mean_std_gain_and_step_ratio():
    rows = [_row("baseline", 0, 0.50, 0.40, 1.0), _row("baseline", 1, 0.60, 0.44, 1.0),
            _row("kd", 0, 0.70, 0.50, 1.5), _row("kd", 1, 0.80, 0.54, 2.5)]
    text = summarise({"teacher": {"f1": 0.9, "miou": 0.7}, "teacher_model": "enet", "rows": rows})
    assert "Teacher (enet): F1 90.0, mIoU 70.0" in text
    base, kd = [line for line in text.splitlines() if line.startswith("| enet |")]
    assert base == "| enet | baseline | 55.0 ± 7.1 | +0.0 | 42.0 ± 2.8 | +0.0 | 1.00x | 2 |"
    assert kd == "| enet | kd | 75.0 ± 7.1 | +20.0 | 52.0 ± 2.8 | +10.0 | 2.00x | 2 |"


def test_every_table_method_names_registered_methods():
    from distill.methods.base import METHODS as REGISTRY
    import distill.methods  # noqa: F401

    for name, parts in RUNS.items():
        for part in parts:
            assert part["name"] in REGISTRY, (name, part["name"])
    assert all(p["start"] == 0.4 for p in RUNS["intra_kd+kd@start0.4"]) and "start" not in str(METHODS)
    assert RUNS["lgad@start0.4"][0]["label_teacher_checkpoint"] == "{label_teacher}"


def test_sec_per_step_skips_the_start_up_window(tmp_path):
    rows = [{"step": 10, "sec_per_step": 9.0}, {"step": 20, "sec_per_step": 1.0}, {"step": 20, "val/f1": 0.5},
            {"step": 30, "sec_per_step": 3.0}, {"step": 40, "sec_per_step": 2.0}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert sec_per_step(tmp_path) == pytest.approx(2.0)
    write_outputs(tmp_path / "t", "table", {"a": 1}, "| x |")
    assert json.loads((tmp_path / "t/table.json").read_text()) == {"a": 1}
    assert (tmp_path / "t/table.md").read_text() == "| x |\n"


def test_jobs_share_the_methods_out_by_cost():
    groups = shards(list(METHODS), 2)
    assert sorted(m for g in groups for m in g) == sorted(METHODS)          # each method once
    from benchmarks.kd_table import COST
    loads = [sum(COST[m] for m in g) for g in groups]
    assert max(loads) - min(loads) <= max(COST.values())
    assert shards(["kd"], 4) == [["kd"]]
    assert cost("kd@start0.4") == pytest.approx(0.4 + 0.6 * COST["kd"]) and cost("skd-x") == COST["skd"]
    assert cost("skd-holistic") == COST["skd-holistic"] < COST["skd"]
    assert all(cost(m) == COST[m] for m in RUNS if m in COST)     # a measured variant is not a guess


def test_step_ratios_time_every_method_side_by_side(synth_root, tmp_path):
    """The KD table's step-time column: real Trainer steps, baseline 1.0, a method with work more."""
    import torch

    from benchmarks._runs import train_recipe
    from benchmarks.kd_table import step_ratios

    torch.set_num_threads(1)
    small = ["data.crop_top=0", "data.input_size=[128, 256]", "data.batch_size=2"]  # D needs 64 px
    teacher = train_recipe("synthetic_teacher.yaml", tmp_path / "t", synth_root, [*small, "data.num_workers=0"], steps=1)
    files = {p: p.read_bytes() for p in (tmp_path / "t").iterdir() if p.is_file()}
    assert train_recipe("synthetic_teacher.yaml", tmp_path / "t", synth_root, small, steps=1) == teacher
    assert {p: p.read_bytes() for p in (tmp_path / "t").iterdir() if p.is_file()} == files  # finished: untouched
    with pytest.raises(ValueError, match="scheduled for 1 steps, not 5"):
        train_recipe("synthetic_teacher.yaml", tmp_path / "t", synth_root, small, steps=5)
    ratios = step_ratios("synthetic_enet.yaml", ["baseline", "skd"], teacher, None, synth_root, tmp_path / "timing",
                         rounds=2, overrides=small)
    assert ratios["baseline"] == 1.0
    assert ratios["skd"] > 1.0          # a teacher forward and a discriminator step on top of the same step


def test_the_gap_setup_gives_the_teacher_its_own_input_size_and_skd_its_logit_sizes(tmp_path):
    import dataclasses

    from benchmarks.kd_table import SETUPS, run_overrides, student_overrides

    gap = SETUPS["gap"]
    skd = run_overrides("skd", tmp_path / "t.pt", None, gap)
    assert skd[1] == f"teacher={{checkpoint: {tmp_path / 't.pt'}, input_size: [96, 256]}}"
    scales = {m["name"]: m.get("logits_scale") for m in json.loads(skd[0].removeprefix("methods="))}
    assert scales == {"skd_pixel": 0.5, "skd_pair": None, "skd_holistic": 1.0}
    assert run_overrides("sad", tmp_path / "t.pt", None, gap) == [f"methods={json.dumps(METHODS['sad'])}"]
    assert student_overrides(dataclasses.replace(gap, long_val=False), tmp_path) == ["data.input_size=[48,128]"]
    small = SETUPS["gap32"]        # a ninth of the teacher's pixels, the teacher still at its own size
    assert student_overrides(dataclasses.replace(small, long_val=False), tmp_path) == ["data.input_size=[32,88]"]
    assert run_overrides("kd", tmp_path / "t.pt", None, small)[1].endswith("input_size: [96, 256]}")
    same = SETUPS["same-size"]     # the first table: the teacher reads the student's input, no setting
    assert run_overrides("skd", tmp_path / "t.pt", None, same)[1] == f"teacher={{checkpoint: {tmp_path / 't.pt'}}}"
    assert student_overrides(same, tmp_path) == []


def test_grid_oracle_scores_the_label_map_as_a_prediction(synth_root):
    from benchmarks.grid_oracle import oracle

    fine = oracle(synth_root, "test", (72, 200), 0)
    assert fine["miou"] == 1.0 and fine["f1"] > 0.9     # the labels themselves: (nearly) every lane found
    coarse = oracle(synth_root, "test", (8, 24), 0)      # a grid too coarse to place lanes
    assert coarse["f1"] < fine["f1"]
