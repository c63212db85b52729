"""The Trainer: exact resume, interrupt, NaN stop, DDP with gloo, distillation, label teacher, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from distill.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from distill.config import ConfigError, load_config
from distill.train import NonFiniteLoss, Trainer, train
from distill.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _cfg(root: Path, out: Path, **over) -> TrainConfig:
    data = {"kind": "culane", "root": str(root), "input_size": [40, 104], "batch_size": 4, "num_workers": 0,
            "options": {"rotate_p": 0.0}}
    base = {"out": str(out), "model": {"name": "enet"}, "data": data, "steps": 6, "val_every": 0,
            "ckpt_every": 2, "log_every": 1, "deterministic": True, "seed": 5, "optim": {"lr": 0.01}}
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    path = out.parent / f"{out.name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(base))
    return load_config(TrainConfig, path)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_interrupted_and_resumed_run_ends_with_the_same_weights(synth_root, tmp_path):
    straight = _cfg(synth_root, tmp_path / "a")
    train(straight, quiet=True)
    cut = _cfg(synth_root, tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        Trainer(cut, quiet=True).run(stop_at=3)       # what Ctrl-C does after step 3
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 3
    train(_cfg(synth_root, tmp_path / "b"), quiet=True)
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert b["step"] == a["step"] == 6
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    rows_a = [json.loads(l) for l in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    rows_b = [json.loads(l) for l in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    losses_a = [r["loss"] for r in rows_a if "loss" in r]
    assert len(losses_a) == 6
    assert losses_a == pytest.approx([r["loss"] for r in rows_b if "loss" in r], rel=1e-6)
    assert (tmp_path / "a" / "curves.png").stat().st_size > 1000
    assert (tmp_path / "a" / "config.yaml").is_file()
    # the checkpoint rebuilds the model on its own
    model, ckpt = model_from_checkpoint(tmp_path / "a" / "best.pt")
    assert ckpt["input_size"] == [40, 104] and ckpt["orig_size"] == [148, 410]
    assert model(torch.zeros(1, 3, 40, 104))[0].shape == (1, 5, 40, 104)


def test_validation_does_not_change_the_training_trajectory(synth_root, tmp_path):
    """Same seed, validation every 2 steps or never: the same weights (ENet has dropout, so any
    draw from the global RNG during validation would show)."""
    train(_cfg(synth_root, tmp_path / "quiet"), quiet=True)
    train(_cfg(synth_root, tmp_path / "val", val_every=2), quiet=True)
    a = load_checkpoint(tmp_path / "quiet" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "val" / "last.pt")["state_dict"]
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_saves_a_checkpoint_and_the_next_run_resumes(synth_root, tmp_path, sig):
    _cfg(synth_root, tmp_path / "run", steps=400, ckpt_every=1000, log_every=1)   # writes run.yaml
    cfg_path = tmp_path / "run.yaml"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # started with SIGINT ignored, as a background job (`cmd &`) is: the CLI must still stop on it
    proc = subprocess.Popen([sys.executable, "-m", "distill", "train", "--config", str(cfg_path)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    log = tmp_path / "run" / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and log.read_text().count("\n") >= 2):
        time.sleep(0.2)
    assert log.is_file(), "training never logged a step"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted at step" in err
    step = load_checkpoint(tmp_path / "run" / "last.pt")["step"]
    assert 2 <= step < 400
    resumed = Trainer(_cfg(synth_root, tmp_path / "run", steps=step + 1), quiet=True)
    resumed.maybe_resume()
    assert resumed.step == step


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(synth_root, tmp_path):
    cfg = _cfg(synth_root, tmp_path / "nan", steps=50, ckpt_every=1, optim={"lr": 1e12, "momentum": 0.0})
    with pytest.raises(NonFiniteLoss, match="non-finite loss at step"):
        train(cfg, quiet=True)
    ckpt = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_distillation_and_label_teacher_runs(synth_root, tmp_path):
    teacher = _cfg(synth_root, tmp_path / "t", steps=2, model={"name": "resnet34_deeplab", "kwargs": {"width": 0.25}})
    train(teacher, quiet=True)
    lt = _cfg(synth_root, tmp_path / "lt", steps=2, label_teacher=True)
    train(lt, quiet=True)
    assert load_checkpoint(tmp_path / "lt" / "last.pt")["model_kwargs"]["in_channels"] == 5
    cfg = _cfg(synth_root, tmp_path / "kd", steps=2, teacher={"checkpoint": str(tmp_path / "t" / "last.pt")},
               methods=[{"name": "kd", "weight": 1.0, "T": 2.0}, {"name": "at", "s_tap": "stage2", "t_tap": "stage2"},
                        {"name": "lgad", "label_teacher_checkpoint": str(tmp_path / "lt" / "last.pt")},
                        {"name": "skd_holistic", "variant": "hinge", "logits_scale": 1.0, "d_l4": False}])
    trainer = Trainer(cfg, quiet=True)
    trainer.run()
    rows = [json.loads(l) for l in (tmp_path / "kd" / "log.jsonl").read_text().splitlines()]
    keys = set().union(*rows)
    assert {"task/ce", "task/exist", "kd/kd", "kd/at", "kd/lgad", "kd/skd_holistic", "kd/skd_holistic_d"} <= keys
    assert any("val/f1" in r for r in rows)


def test_a_method_with_start_is_off_until_that_fraction_of_the_run(synth_root, tmp_path):
    train(_cfg(synth_root, tmp_path / "t", steps=1), quiet=True)
    cfg = _cfg(synth_root, tmp_path / "kd", steps=4, teacher={"checkpoint": str(tmp_path / "t" / "last.pt")},
               methods=[{"name": "cwd"},
                        {"name": "skd_holistic", "variant": "hinge", "d_l4": False, "start": 0.5}])
    train(cfg, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "kd" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "kd/cwd" in r]
    assert len(steps) == 4
    assert [("kd/skd_holistic" in r, "kd/skd_holistic_d" in r) for r in steps] == [(False, False)] * 2 + [(True, True)] * 2
    with pytest.raises(ValueError, match="start"):
        Trainer(_cfg(synth_root, tmp_path / "bad", teacher={"checkpoint": str(tmp_path / "t" / "last.pt")},
                     methods=[{"name": "kd", "start": 1.0}]), quiet=True)


def test_the_start_up_check_runs_a_method_that_has_not_started_yet(synth_root, tmp_path, monkeypatch):
    """A method switched on late in the run still fails at start-up, not hours in."""
    from distill.methods.kd import KD

    train(_cfg(synth_root, tmp_path / "t", steps=1), quiet=True)
    teacher = {"checkpoint": str(tmp_path / "t" / "last.pt")}
    calls: list[bool] = []
    real_forward = KD.forward

    def nan_terms(self, s_taps, t_taps, batch):   # every call, whether started or not
        calls.append(self.active)
        terms = real_forward(self, s_taps, t_taps, batch)
        return {k: v * float("nan") for k, v in terms.items()}

    monkeypatch.setattr(KD, "forward", nan_terms)
    trainer = Trainer(_cfg(synth_root, tmp_path / "kd", steps=4, teacher=teacher,
                           methods=[{"name": "cwd"}, {"name": "kd", "start": 0.75}]), quiet=True)
    with pytest.raises(RuntimeError, match=r"start-up check: non-finite loss terms \['kd/kd'\]"):
        trainer.run()
    assert calls == [True] and trainer.step == 0


def test_a_teacher_with_its_own_input_size_sees_the_same_augmented_frame_larger(synth_root, tmp_path):
    import numpy as np
    import torch.nn.functional as F

    from distill.data.dataset import build_dataset
    from distill.data.transforms import train_transforms

    # the data: each item carries the frame twice, same flip / rotation / jitter, two resizes
    ds = build_dataset("culane", synth_root, "train", (40, 104), train=True, seed=4, teacher_size=(80, 208))
    for index, epoch in ((0, 0), (5, 3), (11, 7)):
        item = ds.item(index, epoch)
        raw, key = ds.reader[index], [4, epoch, index]
        for name, size in (("image", (40, 104)), ("teacher_image", (80, 208))):
            expect = train_transforms(size)(raw, np.random.default_rng(key)).image
            assert np.array_equal(item[name].numpy(), expect), (name, index, epoch)
        small = F.interpolate(item["teacher_image"][None], size=(40, 104), mode="area")[0]
        assert (small - item["image"]).abs().mean() < 0.5 * (small.flip(-1) - item["image"]).abs().mean()

    # the Trainer: the teacher (trained at 80x208) reads teacher_image; its logits come back at the
    # student's size, its feature taps at its own (each method resizes what it reads)
    train(_cfg(synth_root, tmp_path / "t", steps=1, data={"input_size": [80, 208]}), quiet=True)
    teacher = {"checkpoint": str(tmp_path / "t" / "last.pt"), "input_size": [80, 208]}
    cfg = _cfg(synth_root, tmp_path / "kd", steps=2, teacher=teacher,
               methods=[{"name": "kd"}, {"name": "cwd"}, {"name": "fitnet", "s_tap": "stage3", "t_tap": "stage3"},
                        {"name": "skd_holistic", "variant": "hinge", "logits_scale": 1.0, "d_l4": False}])
    trainer = Trainer(cfg, quiet=True)
    seen = []
    forward_taps = trainer.teacher.forward_taps
    trainer.teacher.forward_taps = lambda x: seen.append(tuple(x.shape[-2:])) or forward_taps(x)
    batch = trainer.startup_batch()
    assert batch["image"].shape[-2:] == (40, 104) and batch["teacher_image"].shape[-2:] == (80, 208)
    with torch.no_grad():
        taps = trainer.teacher_taps(batch["image"], batch)
    assert taps["logits"].shape[-2:] == (40, 104) and taps["stage3"].shape[-2:] == (10, 26)
    trainer.run()
    assert seen and set(seen) == {(80, 208)}
    keys = set().union(*(json.loads(l) for l in (tmp_path / "kd" / "log.jsonl").read_text().splitlines()))
    assert {"kd/kd", "kd/cwd", "kd/fitnet", "kd/skd_holistic_d"} <= keys

    with pytest.raises(ValueError, match=r"teacher.input_size must be \[height, width\]"):
        Trainer(_cfg(synth_root, tmp_path / "bad", teacher={**teacher, "input_size": [80]},
                     methods=[{"name": "kd"}]), quiet=True)
    with pytest.raises(ValueError, match="a label teacher reads the label map"):
        Trainer(_cfg(synth_root, tmp_path / "lt", label_teacher=True, teacher=teacher), quiet=True)


def test_the_trainer_hands_its_batch_size_to_methods_that_scale_by_it(synth_root, tmp_path):
    trainer = _kd_trainer(synth_root, tmp_path, [{"name": "skd_pixel"}, {"name": "skd_pixel", "weight": 2.0},
                                                 {"name": "cirkd", "s_tap": "stage3", "t_tap": "stage3"}])
    pixel, explicit, cirkd = trainer.distiller.methods
    assert pixel.weight == 10.0 / 4 and explicit.weight == 2.0          # the test config's batch is 4
    assert (cirkd.teacher_pixel_queue.shape[1], cirkd.teacher_segment_queue.shape[1]) == (5000, 500)


def test_bad_inputs_fail_clearly(synth_root, tmp_path):
    with pytest.raises(KeyError, match="valid names"):
        Trainer(_cfg(synth_root, tmp_path / "x", model={"name": "erfnet_typo"}), quiet=True)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("steps: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(TrainConfig, bad_yaml)
    with pytest.raises(TypeError, match="kd"):
        Trainer(_cfg(synth_root, tmp_path / "y", teacher={"checkpoint": ""}, methods=[{"name": "kd", "temperature": 2}]),
                quiet=True)
    # a truncated checkpoint, and one of another architecture: clear errors, nothing overwritten
    train(_cfg(synth_root, tmp_path / "z", steps=2), quiet=True)
    last = tmp_path / "z" / "last.pt"
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    before = last.read_bytes()
    with pytest.raises(CheckpointError, match="holds a 'enet' model"):
        Trainer(_cfg(synth_root, tmp_path / "z", steps=4, model={"name": "erfnet"}), quiet=True).run()
    assert last.read_bytes() == before
    with pytest.raises(CheckpointError, match="not found"):
        Trainer(_cfg(synth_root, tmp_path / "w", teacher={"checkpoint": str(tmp_path / "missing.pt")},
                     methods=[{"name": "kd"}]), quiet=True)


def test_ddp_two_processes_match_a_single_process_with_the_same_global_batch(synth_root, tmp_path):
    common = {"model": {"name": "tiny_fcn_test"}, "steps": 4, "ckpt_every": 4,
              "loss": {"class_weights": [1.0] * 5}, "optim": {"lr": 0.05}}
    _cfg(synth_root, tmp_path / "single", **common, data={"batch_size": 4})     # writes single.yaml
    _cfg(synth_root, tmp_path / "ddp", **common, data={"batch_size": 2})        # writes ddp.yaml
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    worker = str(REPO / "tests" / "ddp_worker.py")
    subprocess.run([sys.executable, worker, str(tmp_path / "single.yaml")], cwd=REPO, env=env, check=True,
                   timeout=300, capture_output=True)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(29500 + os.getpid() % 1000), worker, str(tmp_path / "ddp.yaml")],
                         cwd=REPO, env=env, timeout=300, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    r0 = torch.load(tmp_path / "ddp" / "rank0.pt")
    r1 = torch.load(tmp_path / "ddp" / "rank1.pt")
    one = torch.load(tmp_path / "single" / "rank0.pt")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks diverged at {k}"
        torch.testing.assert_close(r0[k], one[k], rtol=1e-4, atol=1e-5, msg=f"DDP != single process at {k}")
    assert not (tmp_path / "ddp" / "rank1.log").exists()
    assert load_checkpoint(tmp_path / "ddp" / "last.pt")["step"] == 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_channels_last_training_runs_and_resumes(synth_root, tmp_path, amp):
    cfg = _cfg(synth_root, tmp_path / amp, steps=4, device="cuda", amp=amp, channels_last=True,
               teacher={"checkpoint": ""}, methods=[{"name": "sad", "warmup": 0.0}])
    trainer = Trainer(cfg, quiet=True)
    metrics = trainer.run()
    assert trainer.device.type == "cuda" and "f1" in metrics
    ckpt = load_checkpoint(tmp_path / amp / "last.pt")
    assert ckpt["step"] == 4 and ("scale" in ckpt["scaler"]) == (amp == "fp16")
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


# ----------------------------------------------------------------------------- start-up gradient shares

def _kd_trainer(synth_root, tmp_path, methods, name="kd", **over) -> Trainer:
    if not (tmp_path / "t" / "last.pt").is_file():
        train(_cfg(synth_root, tmp_path / "t", steps=1), quiet=True)
    over = {"steps": 2, **over}
    return Trainer(_cfg(synth_root, tmp_path / name, teacher={"checkpoint": str(tmp_path / "t" / "last.pt")},
                        methods=methods, **over), quiet=True)


def _startup_terms(trainer: Trainer, rng) -> tuple[dict, list]:
    """The dry step's forward again: same first batch, same RNG state, every method on."""
    from distill.inputs import model_input
    from distill.train import set_rng_state

    set_rng_state(rng)
    batch = trainer.startup_batch()
    x = model_input(batch, trainer.spec.num_classes, trainer.spec.ignore_index, False)
    for m in trainer.distiller.methods:
        m.set_progress(trainer.cfg.steps - 1, trainer.cfg.steps)
    with torch.no_grad():
        t_taps = trainer.teacher.forward_taps(x)
    trainer.distiller.train()
    task, per_method, _ = trainer.distiller.terms_by_source(x, batch, t_taps)
    return task, per_method


def test_start_up_report_measures_prints_and_logs_gradient_shares(synth_root, tmp_path, capsys):
    from distill.train import rng_state

    methods = [{"name": "cwd"}, {"name": "cirkd_channel", "s_tap": "stage3", "t_tap": "stage3",
                                 "channel_memory_size": 600, "channel_contrast_size": 64}]
    trainer = _kd_trainer(synth_root, tmp_path, methods)
    trainer.quiet = False
    channel = trainer.distiller.methods[1]
    assert trainer.cfg.methods[1]["feature_size"] == [5, 13]          # measured: ENet stage3 of 40x104
    before = {k: v.clone() for k, v in trainer.distiller.state_dict().items()}
    rng = rng_state()
    shares = trainer.dry_run()
    # the dry step leaves weights, buffers (the channel queue, BN statistics) and the RNG as they were
    for k, v in trainer.distiller.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.get_rng_state(), rng["torch"]) and channel.channel_queue_ptr.item() == 0
    err = capsys.readouterr().err
    assert "start-up gradient shares" in err and "kd/cirkd_channel_mse" in err and "cirkd_channel" in err
    row = [json.loads(line) for line in (tmp_path / "kd" / "log.jsonl").read_text().splitlines()][-1]
    assert row["step"] == 0
    log = row["startup"]
    assert set(log["grad_norm"]) == {"kd/cwd", "kd/cirkd_channel_batch", "kd/cirkd_channel_memory",
                                     "kd/cirkd_channel_mse"}
    assert log["weights"] == {"cwd": 3.0, "cirkd_channel": 1.0} and log["auto"] == {}
    # independently: .backward() and the .grad of every student parameter, one term at a time
    task, per_method = _startup_terms(trainer, rng)
    params = [p for p in trainer.student.parameters() if p.requires_grad]

    def grad_norm(loss: torch.Tensor) -> float:
        trainer.distiller.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        return float(torch.sqrt(sum((p.grad ** 2).sum() for p in params if p.grad is not None)))

    task_norm = grad_norm(sum(task.values()))
    assert log["task_grad_norm"] == pytest.approx(task_norm, rel=1e-4)
    for terms in per_method:
        for key, value in terms.items():
            assert log["grad_norm"][key] == pytest.approx(grad_norm(value), rel=1e-4), key
            assert log["grad_share"][key] == pytest.approx(log["grad_norm"][key] / task_norm, rel=1e-4)
    assert log["method_grad_share"]["cirkd_channel"] == pytest.approx(grad_norm(sum(per_method[1].values())) / task_norm,
                                                                     rel=1e-4)
    assert shares.method_share("cwd") == pytest.approx(log["method_grad_share"]["cwd"])
    trainer.distiller.zero_grad(set_to_none=True)
    trainer.run()                                  # the run itself logs the report once, at step 0
    rows = [json.loads(line) for line in (tmp_path / "kd" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "startup" in r] == [0, 0]
    assert {"kd/cirkd_channel_batch", "kd/cirkd_channel_memory", "kd/cirkd_channel_mse"} <= set().union(*rows)


def test_weight_auto_scales_a_method_to_the_stated_share(synth_root, tmp_path):
    from distill.train import rng_state

    methods = [{"name": "skd_pixel", "weight": "auto", "share": 0.25}, {"name": "kd", "weight": "auto"}, {"name": "cwd"}]
    trainer = _kd_trainer(synth_root, tmp_path, methods)
    # weight: auto starts from the default: SKD's scaled one, lambda_pi = 10 per image (batch 4)
    assert trainer.distiller.methods[0].weight == 2.5 and trainer.auto_shares == {0: 0.25, 1: 0.5}
    rng = rng_state()
    trainer.dry_run()
    resolved = [m.weight for m in trainer.distiller.methods]
    assert resolved[0] != 2.5 and resolved[2] == 3.0
    # measured again after scaling, on the same batch: the shares are the stated ones
    task, per_method = _startup_terms(trainer, rng)
    after = trainer.measure_grad_shares(task, per_method)
    assert after.method_share("skd_pixel") == pytest.approx(0.25, rel=1e-4)
    assert after.method_share("kd") == pytest.approx(0.5, rel=1e-4)
    trainer.run()
    auto = [json.loads(line) for line in (tmp_path / "kd" / "log.jsonl").read_text().splitlines()][0]["startup"]["auto"]
    assert auto["skd_pixel"]["share"] == 0.25 and auto["skd_pixel"]["weight"] == pytest.approx(resolved[0])
    assert auto["skd_pixel"]["weight_before"] == 2.5
    saved = yaml.safe_load((tmp_path / "kd" / "config.yaml").read_text())["methods"]
    assert saved[0] == {"name": "skd_pixel", "weight": pytest.approx(resolved[0])} and saved[2] == {"name": "cwd"}
    ckpt = load_checkpoint(tmp_path / "kd" / "last.pt")
    assert ckpt["method_weights"][:2] == pytest.approx(resolved[:2])
    assert ckpt["config"]["methods"][1]["weight"] == pytest.approx(resolved[1])
    # a resumed run keeps the weight resolved at the start; it does not measure again
    def reports() -> int:
        return sum("startup" in json.loads(line) for line in (tmp_path / "kd" / "log.jsonl").read_text().splitlines())

    n = reports()                                  # the dry_run above and run()'s own, which did not rescale
    assert n == 2
    resumed = _kd_trainer(synth_root, tmp_path, methods, steps=3)
    resumed.run()
    assert [m.weight for m in resumed.distiller.methods] == pytest.approx(resolved)
    assert reports() == n and load_checkpoint(tmp_path / "kd" / "last.pt")["step"] == 3


def test_weight_auto_bad_entries_fail_clearly(synth_root, tmp_path):
    with pytest.raises(ValueError, match="only read with weight: auto"):
        _kd_trainer(synth_root, tmp_path, [{"name": "kd", "weight": 2.0, "share": 0.5}], name="a")
    with pytest.raises(ValueError, match="share must be a number > 0"):
        _kd_trainer(synth_root, tmp_path, [{"name": "kd", "weight": "auto", "share": 0}], name="b")
    trainer = _kd_trainer(synth_root, tmp_path, [{"name": "kd", "weight": "auto"}, {"name": "cwd", "weight": 0.0}],
                          name="c")
    trainer.auto_shares = {1: 0.5}                 # a method whose terms give no gradient cannot be scaled
    with pytest.raises(ValueError, match="weight: auto for cwd"):
        trainer.dry_run()


def test_validate_imports_without_train_and_label_input_has_one_home():
    code = "import sys, distill.validate; assert 'distill.train' not in sys.modules, 'validate imports train'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    from distill.inputs import label_input, model_input

    mask = torch.tensor([[[0, 2], [255, 1]]])
    planes = label_input(mask, 3)
    assert planes.shape == (1, 3, 2, 2) and planes[0, 0, 1, 0] == 1 and planes.sum(1).eq(1).all()
    batch = {"image": torch.zeros(1, 3, 2, 2), "mask": mask}
    assert model_input(batch, 3, 255, label_teacher=False) is batch["image"]
    assert torch.equal(model_input(batch, 3, 255, label_teacher=True), planes)
    with pytest.raises(ValueError, match="outside 0..2"):
        label_input(torch.tensor([[[3]]]), 3)
