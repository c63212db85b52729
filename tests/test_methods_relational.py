"""Relational / adversarial KD methods: skd_holistic (+ _sagan), intra_kd, cirkd, cirkd_channel, lgad."""
from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from distill.data.sample import DataSpec
from distill.inputs import label_input
from distill.methods import cirkd as C
from distill.methods import cirkd_channel as CC
from distill.methods import intra_kd as I
from distill.methods import lgad as L
from distill.methods import skd_holistic as H
from distill.methods._sagan import SAGANDiscriminator, SNConv2d, l2_normalize
from distill.methods.base import build_method
from distill.models.base import TapInfo
from tests.helpers import load_golden

torch.set_num_threads(1)
SPEC = DataSpec.lanes(4)  # 5 classes


def _ref(name: str):
    return load_golden(name)


# ----------------------------------------------------------------------------- CIRKD golden
def test_cirkd_minibatch_golden_loss_and_grad():
    d, meta = _ref("cirkd_minibatch")
    assert meta["hyperparameters"]["tau"] == 0.1
    fs = torch.tensor(d["feat_s"], requires_grad=True)
    ft = torch.tensor(d["feat_t"])
    loss = C.minibatch_pair_loss(fs, ft, tau=0.1)
    loss.backward()
    np.testing.assert_allclose(loss.item(), d["loss"], rtol=1e-5)
    np.testing.assert_allclose(fs.grad.numpy(), d["grad_s"], rtol=1e-4, atol=1e-4 * np.abs(d["grad_s"]).max())
    np.testing.assert_allclose(C.minibatch_pair_loss(fs, ft, pooling="avg2").item(), d["loss_pool2"], rtol=1e-5)


def test_cirkd_minibatch_golden_head_variant():
    d, _ = _ref("cirkd_minibatch")
    hs, ht = torch.tensor(d["head_feat_s"]).float(), torch.tensor(d["head_feat_t"]).float()
    np.testing.assert_allclose(C.minibatch_pair_loss(hs, ht, pooling="head").item(), d["head_loss"], rtol=1e-5)


def test_cirkd_module_minibatch_matches_golden():
    d, _ = _ref("cirkd_minibatch")
    fs = torch.tensor(d["feat_s"], requires_grad=True)
    m = build_method("cirkd", {"decoder": TapInfo(8, 8)}, {"decoder": TapInfo(16, 8)}, SPEC,
                     pixel_memory_weight=0.0, region_memory_weight=0.0)
    out = m({"decoder": fs}, {"decoder": torch.tensor(d["feat_t"])}, {"mask": torch.zeros(3, 48, 80, dtype=torch.long)})
    assert set(out) == {"kd/cirkd_minibatch"}
    out["kd/cirkd_minibatch"].backward()
    np.testing.assert_allclose(out["kd/cirkd_minibatch"].item(), d["loss"], rtol=1e-5)
    np.testing.assert_allclose(fs.grad.numpy(), d["grad_s"], rtol=1e-4, atol=1e-4 * np.abs(d["grad_s"]).max())


# ----------------------------------------------------------------------------- CIRKDv2 channel golden
# the golden file's state names -> ours (which are the authors' own names)
CHANNEL_STATE = {"head0_weight": "project_head.0.weight", "bn_weight": "project_head.1.weight",
                 "bn_bias": "project_head.1.bias", "bn_running_mean": "project_head.1.running_mean",
                 "bn_running_var": "project_head.1.running_var", "head3_weight": "project_head.3.weight",
                 "queue": "teacher_channel_queue", "ptr": "channel_queue_ptr"}


def _channel_method(case: dict, **kw):
    return build_method("cirkd_channel", {"decoder": TapInfo(case["Cs"], 8)}, {"decoder": TapInfo(case["Ct"], 8)},
                        SPEC, feature_size=(case["H"], case["W"]), channel_memory_size=case["memory"],
                        channel_contrast_size=case["contrast"],
                        generator=torch.Generator().manual_seed(case["call_seed"]), **kw)


@pytest.mark.parametrize("case", ["a", "b"])
def test_cirkd_channel_matches_authors_code(case):
    """Three calls of the authors' StudentSegChannelContrast: terms, gradients, queue, pointer."""
    d, meta = _ref("cirkd_channel_official")
    c = meta["hyperparameters"]["cases"][case]
    torch.manual_seed(c["init_seed"])
    m = _channel_method(c)                             # the authors' weights: 1, 0.1, 100
    assert (m.minibatch_weight, m.memory_weight, m.mse_weight, m.channel_update_freq) == (1.0, 0.1, 100.0, 256)
    sd = m.state_dict()
    for short, key in CHANNEL_STATE.items():          # same seed, same init order -> the authors' initial state
        assert torch.equal(sd[key], torch.from_numpy(d[f"{case}_init_{short}"])), key
    m.load_state_dict({key: torch.from_numpy(d[f"{case}_init_{short}"]) for short, key in CHANNEL_STATE.items()}
                      | {"project_head.1.num_batches_tracked": torch.tensor(0)})   # their names load as they are
    m.train()
    weights = {"batch": 1.0, "memory": 0.1, "mse": 100.0}
    for call in (1, 2, 3):
        fs = torch.tensor(d[f"{case}_feat_s_{call}"], requires_grad=True)
        out = m({"decoder": fs}, {"decoder": torch.tensor(d[f"{case}_feat_t_{call}"])}, {})
        assert set(out) == {f"kd/cirkd_channel_{t}" for t in weights}
        for term, w in weights.items():
            np.testing.assert_allclose(out[f"kd/cirkd_channel_{term}"].item(), w * d[f"{case}_{term}_{call}"], rtol=1e-5)
        if call == 1:
            for term, w in weights.items():
                (g,) = torch.autograd.grad(out[f"kd/cirkd_channel_{term}"], fs, retain_graph=True)
                ref = w * d[f"{case}_grad_s_{term}_1"]
                np.testing.assert_allclose(g.numpy(), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
            head = [m.project_head[0].weight, m.project_head[3].weight]
            grads = torch.autograd.grad(sum(out.values()), [fs, *head])
            for g, key in zip(grads, ("grad_s_total_1", "grad_head0_total_1", "grad_head3_total_1")):
                ref = d[f"{case}_{key}"]
                np.testing.assert_allclose(g.numpy(), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
        np.testing.assert_allclose(m.teacher_channel_queue.numpy(), d[f"{case}_queue_{call}"], rtol=1e-6, atol=1e-7)
        assert m.channel_queue_ptr.tolist() == d[f"{case}_ptr_{call}"].tolist()
    np.testing.assert_allclose(m.project_head[1].running_mean.numpy(), d[f"{case}_bn_running_mean_3"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.project_head[1].running_var.numpy(), d[f"{case}_bn_running_var_3"], rtol=1e-5, atol=1e-7)


def test_cirkd_channel_golden_exercises_the_wrap_and_the_update_cap():
    d, meta = _ref("cirkd_channel_official")
    assert [int(d[f"a_ptr_{k}"][0]) for k in (1, 2, 3)] == [16, 32, 0]      # 32 + 16 >= 40: the last 16 slots
    assert [int(d[f"b_ptr_{k}"][0]) for k in (1, 2, 3)] == [256, 512, 0]    # 288 rows capped at K = 256
    assert np.array_equal(d["a_queue_3"][:24], d["a_queue_2"][:24]) and not np.array_equal(d["a_queue_3"][24:],
                                                                                           d["a_queue_2"][24:])
    assert set(d) == set(meta["arrays"])


def test_cirkd_channel_pieces_on_hand_checked_values():
    x = torch.arange(2 * 3 * 6 * 5, dtype=torch.float32).reshape(2, 3, 6, 5)
    pooled = CC.pool(x)
    assert pooled.shape == (2, 3, 2, 2) and CC.pooled_size((6, 5)) == 4
    assert pooled[0, 0, 1, 1].item() == pytest.approx(x[0, 0, 4:, 4:].mean().item())   # the partial window
    vec = CC.channel_vectors(torch.randn(2, 3, 4, 4))
    torch.testing.assert_close(vec.norm(dim=-1), torch.ones(2, 3))
    queue, ptr = torch.zeros(10, 4), torch.zeros(1, dtype=torch.long)
    rows = F.normalize(torch.randn(6, 4), dim=1)
    CC.enqueue_channels(rows, queue, ptr, update_freq=4, generator=torch.Generator().manual_seed(0))
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(queue[:4], F.normalize(rows[perm[:4]], dim=1))
    assert ptr.item() == 4 and queue[4:].abs().sum() == 0
    CC.enqueue_channels(rows, queue, ptr, update_freq=4)
    CC.enqueue_channels(rows, queue, ptr, update_freq=4)       # 8 + 4 >= 10: the last 4 slots, ptr 0
    assert ptr.item() == 0
    with pytest.raises(ValueError, match="do not fit"):
        CC.enqueue_channels(rows, torch.zeros(3, 4), torch.zeros(1, dtype=torch.long), update_freq=4)


def test_cirkd_channel_module_options_and_errors():
    info_s, info_t = {"decoder": TapInfo(6, 8)}, {"decoder": TapInfo(10, 8)}
    m = build_method("cirkd_channel", info_s, info_t, SPEC, feature_size=(16, 24))
    assert tuple(m.teacher_channel_queue.shape) == (10000, 4 * 6) and m.channel_contrast_size == 2048
    torch.testing.assert_close(m.teacher_channel_queue.norm(dim=1), torch.ones(10000))
    s = torch.randn(2, 6, 16, 24, requires_grad=True)
    t = torch.randn(2, 10, 8, 12)                                   # resized to the student's size
    out = m({"decoder": s}, {"decoder": t}, {})
    sum(out.values()).backward()
    assert s.grad.abs().sum() > 0 and all(p.grad.abs().sum() > 0 for p in m.parameters())
    assert m.channel_queue_ptr.item() == 20
    with pytest.raises(ValueError, match="feature_size"):
        m({"decoder": torch.randn(2, 6, 8, 8)}, {"decoder": t}, {})
    no_memory = build_method("cirkd_channel", info_s, info_t, SPEC, memory_weight=0.0, mse_weight=0.0)
    assert "teacher_channel_queue" not in no_memory.state_dict()
    assert set(no_memory({"decoder": s}, {"decoder": t}, {})) == {"kd/cirkd_channel_batch"}
    with pytest.raises(ValueError, match="feature_size"):
        build_method("cirkd_channel", info_s, info_t, SPEC)
    with pytest.raises(ValueError, match="teacher"):
        build_method("cirkd_channel", info_s, None, SPEC, feature_size=(16, 24))
    with pytest.raises(ValueError, match="tap"):
        build_method("cirkd_channel", info_s, info_t, SPEC, feature_size=(16, 24), s_tap="nope")
    with pytest.raises(ValueError, match="tau"):
        build_method("cirkd_channel", info_s, info_t, SPEC, feature_size=(16, 24), tau=0.0)


# ----------------------------------------------------------------------------- CIRKD memory
def _banks(c=3, pixel=40, region=10, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (C.l2_normalized_randn(c, pixel, dim, generator=g), torch.zeros(c, dtype=torch.long),
            C.l2_normalized_randn(c, region, dim, generator=g), torch.zeros(c, dtype=torch.long))


def test_cirkd_pixel_queue_wraps_to_last_slots():
    pq, pp, sq, sp = _banks(c=2, pixel=32)
    feat = F.normalize(torch.randn(1, 4, 4, 4), dim=1)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)  # 16 class-0 pixels -> K = 16
    C.enqueue_teacher(feat, labels, pq, pp, sq, sp, ignore_index=255)
    assert pp.tolist() == [16, 0] and sp.tolist() == [1, 0]
    before = pq.clone()
    C.enqueue_teacher(feat, labels, pq, pp, sq, sp, ignore_index=255)   # 16 + 16 >= 32: last 16, ptr 0
    assert pp.tolist() == [0, 0] and sp.tolist() == [2, 0]
    assert torch.equal(pq[0, :16], before[0, :16]) and torch.equal(pq[1], before[1])
    pq2, pp2, sq2, sp2 = _banks(c=2, pixel=40)
    pp2[0] = 30                                                          # 30 + 16 >= 40: last 16 slots
    C.enqueue_teacher(feat, labels, pq2, pp2, sq2, sp2, ignore_index=255)
    assert pp2[0] == 0


def test_cirkd_reference_quirk_takes_raster_positions():
    pq, pp, sq, sp = _banks(c=3, pixel=40, dim=4)
    feat = F.normalize(torch.randn(1, 4, 4, 4), dim=1)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 2:, :] = 2                       # class 2 = 8 pixels in rows 2..3 (raster 8..15)
    for sampling in ("reference", "class"):
        q, p = pq.clone(), pp.clone()
        C.enqueue_teacher(feat, labels, q, p, sq.clone(), sp.clone(), sampling=sampling,
                          generator=torch.Generator().manual_seed(5))
        g = torch.Generator().manual_seed(5)
        torch.randperm(8, generator=g)          # class 0's draw comes first
        perm = torch.randperm(8, generator=g)
        flat = feat[0].reshape(4, -1)
        cols = perm if sampling == "reference" else torch.arange(8, 16)[perm]
        torch.testing.assert_close(q[2, :8], F.normalize(flat[:, cols].t(), dim=1))
    # region entry: normalised mean of the class's (true) pixels
    q_s, p_s = sq.clone(), sp.clone()
    C.enqueue_teacher(feat, labels, pq.clone(), pp.clone(), q_s, p_s)
    torch.testing.assert_close(q_s[2, 0], F.normalize(feat[0].reshape(4, -1)[:, 8:].mean(1), dim=0))
    assert p_s.tolist() == [1, 0, 1]


def _memory_reference(s_emb, t_emb, labels, banks, kp, kr, seed, tau=0.1):
    """Independent re-statement of §9.2 with explicit loops and the §13 randperm order."""
    pq, pp, sq, sp = (b.clone() for b in banks)
    g = torch.Generator().manual_seed(seed)
    t_n, s_n = F.normalize(t_emb, dim=1), F.normalize(s_emb, dim=1)
    b, d = t_n.shape[:2]
    for i in range(b):
        f, lab = t_n[i].reshape(d, -1), labels[i].reshape(-1)
        for c in sorted(set(lab.tolist()) - {255}):
            pix = [j for j in range(lab.numel()) if lab[j] == c]
            sq[c, int(sp[c])] = F.normalize(f[:, pix].mean(1), dim=0)
            sp[c] = (sp[c] + 1) % sq.shape[1]
            perm = torch.randperm(len(pix), generator=g)
            k = min(len(pix), 16)
            v = F.normalize(f[:, perm[:k]].t(), dim=1)
            if int(pp[c]) + k >= pq.shape[1]:
                pq[c, pq.shape[1] - k:] = v
                pp[c] = 0
            else:
                pq[c, int(pp[c]):int(pp[c]) + k] = v
                pp[c] += k
    valid = labels.reshape(-1) != 255
    sa = s_n.permute(0, 2, 3, 1).reshape(-1, d)[valid]
    ta = t_n.permute(0, 2, 3, 1).reshape(-1, d)[valid]
    out = []
    for q, k in ((pq, kp), (sq, kr)):
        idx = torch.randperm(q.shape[1], generator=g)[:k]
        bank = torch.cat([q[c, idx] for c in range(q.shape[0])])
        p_t = torch.softmax(ta @ bank.t() / tau, 1)
        out.append((p_t * (torch.log(p_t) - torch.log_softmax(sa @ bank.t() / tau, 1))).sum() / sa.shape[0])
    return out, (pq, pp, sq, sp)


def test_cirkd_memory_matches_independent_reference_and_randperm_order():
    torch.manual_seed(0)
    banks = _banks(c=3, pixel=40, region=10, dim=4)
    s_emb, t_emb = torch.randn(2, 4, 5, 6), torch.randn(2, 4, 5, 6)
    labels = torch.randint(0, 3, (2, 5, 6))
    labels[0, 0, :3] = 255
    got_banks = [b.clone() for b in banks]
    pix, reg = C.memory_contrast_loss(s_emb, t_emb, labels, *got_banks, 7, 4, ignore_index=255,
                                      generator=torch.Generator().manual_seed(11))
    (rp, rr), ref_banks = _memory_reference(s_emb, t_emb, labels, banks, 7, 4, seed=11)
    torch.testing.assert_close(pix, rp, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(reg, rr, rtol=1e-5, atol=1e-7)
    for a, b in zip(got_banks, ref_banks):
        assert torch.equal(a, b)
    # same seed again -> same result; another seed -> different contrast sets
    again = C.memory_contrast_loss(s_emb, t_emb, labels, *[b.clone() for b in banks], 7, 4,
                                   generator=torch.Generator().manual_seed(11))
    assert torch.equal(again[0], pix)
    # contrast sizes above the bank sizes take the whole (permuted) bank, as the authors' slice does
    big = C.memory_contrast_loss(s_emb, t_emb, labels, *[b.clone() for b in banks], 50, 12,
                                 generator=torch.Generator().manual_seed(11))
    (rp, rr), _ = _memory_reference(s_emb, t_emb, labels, banks, 50, 12, seed=11)
    torch.testing.assert_close(big[0], rp, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(big[1], rr, rtol=1e-5, atol=1e-7)


def test_cirkd_memory_no_valid_anchor_is_finite_zero():
    banks = _banks()
    s_emb = torch.randn(1, 4, 3, 3, requires_grad=True)
    labels = torch.full((1, 3, 3), 255)
    pix, reg = C.memory_contrast_loss(s_emb, torch.randn(1, 4, 3, 3), labels, *banks, 5, 3)
    assert pix.item() == 0 and reg.item() == 0
    (pix + reg).backward()
    assert torch.isfinite(s_emb.grad).all()
    assert banks[1].tolist() == [0, 0, 0]


def test_batch_scaled_defaults_follow_the_rules_in_the_docstrings():
    s_info, t_info = {"decoder": TapInfo(6, 8), "logits": TapInfo(5, 1)}, {"decoder": TapInfo(16, 8), "logits": TapInfo(5, 1)}
    # SKD pixel: lambda_pi = 10 per image; the authors' 10 when the batch size is not known
    assert build_method("skd_pixel", s_info, t_info, SPEC).weight == 10.0
    assert build_method("skd_pixel", s_info, t_info, SPEC, batch_size=8).weight == 1.25
    assert build_method("skd_pixel", s_info, t_info, SPEC, batch_size=8, weight=3.0).weight == 3.0
    # CIRKD banks keep the authors' age in steps: 20000 / 2000 at 16 images a step
    for batch, world, banks in ((None, 1, (20000, 2000)), (8, 1, (10000, 1000)), (2, 8, (20000, 2000)),
                                (4, 1, (5000, 500))):
        m = build_method("cirkd", s_info, t_info, SPEC, batch_size=batch, world_size=world)
        assert (m.teacher_pixel_queue.shape[1], m.teacher_segment_queue.shape[1]) == banks, (batch, world)
    assert C.scaled_bank_sizes(777, None, 8) == (777, 1000)
    # CIRKDv2 channel queue: 10000 x K / 256 with K = min(B x world x Ct, 256) vectors a step
    for batch, size in ((None, 10000), (8, 5000), (16, 10000), (64, 10000), (1, 625)):
        m = build_method("cirkd_channel", s_info, t_info, SPEC, feature_size=(8, 8), batch_size=batch)
        assert m.teacher_channel_queue.shape[0] == size, batch


def test_cirkd_module_state_and_sizes():
    m = build_method("cirkd", {"decoder": TapInfo(6, 8)}, {"decoder": TapInfo(4, 8)}, SPEC,
                     pixel_memory_size=1000, region_memory_size=300)
    assert m.pixel_contrast_size == 4096 // 5 + 1 and m.region_contrast_size == 1024 // 5 + 1
    sd = m.state_dict()
    for k in ("teacher_pixel_queue", "teacher_segment_queue", "pixel_queue_ptr", "segment_queue_ptr"):
        assert k in sd
    torch.testing.assert_close(m.teacher_pixel_queue.norm(dim=-1), torch.ones(5, 1000))
    small = build_method("cirkd", {"decoder": TapInfo(6, 8)}, {"decoder": TapInfo(4, 8)}, SPEC,
                         pixel_memory_size=64, region_memory_size=16)   # banks below the contrast sizes: the
    out = small({"decoder": torch.randn(2, 6, 4, 4)}, {"decoder": torch.randn(2, 4, 4, 4)},  # whole bank
                {"mask": torch.randint(0, 5, (2, 32, 32))})
    assert torch.isfinite(out["kd/cirkd_pixel_memory"]) and torch.isfinite(out["kd/cirkd_region_memory"])
    full = build_method("cirkd", {"decoder": TapInfo(6, 8)}, {"decoder": TapInfo(4, 8)}, SPEC)
    assert tuple(full.teacher_pixel_queue.shape) == (5, 20000, 4)
    assert tuple(full.teacher_segment_queue.shape) == (5, 2000, 4)



def test_cirkd_and_gp_random_draws_come_from_the_given_generator():
    """A checker passes its own generator: the bank sampling and the GP's alpha repeat with its seed."""
    torch.manual_seed(0)
    s_info, t_info = {"decoder": TapInfo(6, 8)}, {"decoder": TapInfo(4, 8)}
    s, t = torch.randn(2, 6, 8, 8), torch.randn(2, 4, 8, 8)
    batch = {"mask": torch.randint(0, SPEC.num_classes, (2, 64, 64))}

    def cirkd_loss(seed: int) -> torch.Tensor:
        torch.manual_seed(1)                        # same banks and head weights every time
        m = build_method("cirkd", s_info, t_info, SPEC, pixel_memory_size=1000, region_memory_size=300,
                         generator=torch.Generator().manual_seed(seed))
        out = m({"decoder": s}, {"decoder": t}, batch)
        torch.randperm(10)                          # the global RNG is not what the draws use
        return out["kd/cirkd_pixel_memory"] + out["kd/cirkd_region_memory"]

    assert torch.equal(cirkd_loss(3), cirkd_loss(3)) and not torch.equal(cirkd_loss(3), cirkd_loss(4))

    info = {"logits": TapInfo(5, 1)}
    real, fake = torch.randn(2, 5, 32, 32), torch.randn(2, 5, 32, 32)

    def d_loss(seed: int) -> float:
        torch.manual_seed(1)
        m = build_method("skd_holistic", info, info, SPEC, d_conv_dim=8, d_l4=False,
                         generator=torch.Generator().manual_seed(seed))
        return m.after_student_step({"logits": fake}, {"logits": real}, {})["kd/skd_holistic_d"]

    assert d_loss(3) == d_loss(3) and d_loss(3) != d_loss(4)


# ----------------------------------------------------------------------------- SAGAN D / SKD holistic
def test_spectral_norm_updates_u_v_in_place_once_per_call():
    torch.manual_seed(0)
    sn = SNConv2d(3, 5, 4, 2, 1)
    u0, v0, ptr = sn.weight_u.clone(), sn.weight_v.clone(), sn.weight_u.data_ptr()
    x = torch.randn(2, 3, 8, 8)
    y = sn(x)
    w = sn.weight_bar.detach().reshape(5, -1)
    v1 = l2_normalize(w.t() @ u0)
    u1 = l2_normalize(w @ v1)
    torch.testing.assert_close(sn.weight_v, v1)
    torch.testing.assert_close(sn.weight_u, u1)
    assert sn.weight_u.data_ptr() == ptr and not torch.equal(sn.weight_v, v0)
    torch.testing.assert_close(y, F.conv2d(x, sn.weight_bar / (u1 @ w @ v1), sn.bias, 2, 1))
    with torch.no_grad():
        sn(x)
    assert sn.num_updates == 2


@pytest.mark.parametrize("variant,calls", [("wgan-gp", 3), ("hinge", 2)])
def test_discriminator_step_forward_count(variant, calls):
    torch.manual_seed(0)
    d = SAGANDiscriminator(3, conv_dim=8, with_l4=False)
    s, t = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    loss = H.discriminator_step_loss(d, s, t, variant)
    loss.backward()
    assert all(m.num_updates == calls for m in d.sn_convs())
    assert all(p.grad is not None for p in d.parameters() if p.requires_grad)


@pytest.mark.parametrize("variant", ["wgan-gp", "hinge"])
def test_discriminator_step_call_order(variant):
    """SKD updates D on the teacher first, IFVD/CIRKD on the student first; each spectral-norm
    call advances u/v, so the order changes the loss."""
    torch.manual_seed(0)
    d = SAGANDiscriminator(3, conv_dim=8, with_l4=False)
    for a in (d.attn1,):
        a.gamma.data.fill_(0.5)
    s, t = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    losses = {}
    for order in ("ts", "st"):
        ref, ours = copy.deepcopy(d), copy.deepcopy(d)
        first, second = (t, s) if order == "ts" else (s, t)
        out_first, out_second = ref(first), ref(second)
        d_s, d_t = (out_second, out_first) if order == "ts" else (out_first, out_second)
        expected = 0.1 * H.discriminator_loss(d_s, d_t, variant)
        if variant == "wgan-gp":
            expected = expected + 0.1 * 10.0 * H.gradient_penalty(ref, s, t, torch.Generator().manual_seed(1))
        losses[order] = H.discriminator_step_loss(ours, s, t, variant, generator=torch.Generator().manual_seed(1),
                                                  order=order)
        torch.testing.assert_close(losses[order], expected, rtol=1e-6, atol=0)
    assert not torch.allclose(losses["ts"], losses["st"])
    default = H.discriminator_step_loss(copy.deepcopy(d), s, t, variant, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(default, losses["ts" if variant == "wgan-gp" else "st"], rtol=0, atol=0)


def test_discriminator_loads_reference_key_names():
    torch.manual_seed(0)
    d = SAGANDiscriminator(5, conv_dim=8, with_l4=True)
    theirs = {}
    for key, value in d.state_dict().items():       # the reference's names: SpectralNorm(conv).module,
        head, _, rest = key.partition(".")           # last = Sequential(conv), preprocess_additional BN
        if d.get_submodule(head) is d.preprocess:
            key = f"preprocess_additional.{rest}"
        elif head == "last":
            key = f"last.0.{rest}"
        elif head.startswith("l") and rest.split(".")[1] in ("weight_u", "weight_v", "weight_bar", "bias"):
            idx, name = rest.split(".")
            key = f"{head}.{idx}.module.{name}"
        theirs[key] = value.clone() + 1
    fresh = SAGANDiscriminator(5, conv_dim=8, with_l4=True)
    fresh.load_state_dict(SAGANDiscriminator.from_reference_keys(theirs), strict=True)
    assert torch.equal(fresh.last.weight, d.last.weight + 1) and torch.equal(fresh.l2[0].weight_u, d.l2[0].weight_u + 1)


def test_gradient_penalty_matches_independent_autograd():
    torch.manual_seed(1)
    d = SAGANDiscriminator(2, conv_dim=8, with_l4=False).double()
    s, t = torch.randn(3, 2, 32, 32, dtype=torch.float64), torch.randn(3, 2, 32, 32, dtype=torch.float64)
    ref = copy.deepcopy(d)
    gp = H.gradient_penalty(d, s, t, generator=torch.Generator().manual_seed(3))
    # independent: same pre-call state, one power iteration, then frozen u/v
    for m in ref.sn_convs():
        m._power_iteration()
        m.power_iterations = 0
    alpha = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(3)).double()
    x = (alpha * t + (1 - alpha) * s).requires_grad_(True)
    (grad,) = torch.autograd.grad(ref(x).sum(), x)
    norms = np.sqrt((grad.numpy().reshape(3, -1) ** 2).sum(1))
    np.testing.assert_allclose(gp.item(), np.mean((norms - 1) ** 2), rtol=1e-8)
    # the autograd gradient itself agrees with a central finite difference along a random direction
    direction = torch.randn_like(x)
    eps = 1e-6
    with torch.no_grad():
        fd = (ref(x + eps * direction).sum() - ref(x - eps * direction).sum()) / (2 * eps)
    np.testing.assert_allclose(fd.item(), (grad * direction).sum().item(), rtol=1e-5)
    # GP is differentiable w.r.t. D's parameters (create_graph)
    gp.backward()
    assert d.l1[0].weight_bar.grad is not None and d.l1[0].weight_bar.grad.abs().sum() > 0


def test_adversarial_losses_on_hand_built_outputs():
    s, t = torch.tensor([0.5, -2.0]), torch.tensor([2.0, 0.3])
    assert H.discriminator_loss(s, t, "hinge").item() == pytest.approx((0 + 0.7) / 2 + (1.5 + 0) / 2)
    assert H.discriminator_loss(s, t, "wgan-gp").item() == pytest.approx(-1.15 - 0.75)
    assert H.generator_loss(s).item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="variant"):
        H.discriminator_loss(s, t, "lsgan")


def test_skd_holistic_module_step_and_state():
    torch.manual_seed(0)
    info = {"logits": TapInfo(5, 1)}
    m = build_method("skd_holistic", info, info, SPEC, d_conv_dim=8, d_l4=False)
    assert m.weight == 0.1 and m.d_optimizer_kind == "sgd"
    assert len(list(m.parameters())) == 0          # D stays out of the student's optimiser / DDP
    s = torch.randn(2, 5, 32, 32, requires_grad=True)
    t = torch.randn(2, 5, 32, 32)
    out = m({"logits": s}, {"logits": t}, {})
    out["kd/skd_holistic"].backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    w0 = m.discriminator.l1[0].weight_bar.detach().clone()
    m.set_progress(5, 10)
    assert m.d_lr_now() == pytest.approx(4e-4 * 0.5 ** 0.9)
    assert m.d_order == "ts" and m.d_lr_schedule == "poly"
    ifvd = build_method("skd_holistic", info, info, SPEC, weight=0.001, d_optimizer="adam", d_order="st",
                        d_conv_dim=8, d_l4=False)
    ifvd.set_progress(5, 10)
    assert ifvd.d_lr_now() == pytest.approx(4e-4 * 0.5 ** 0.9)          # IFVD decays its Adam lr too
    with pytest.raises(ValueError, match="d_order"):
        build_method("skd_holistic", info, info, SPEC, d_order="tt", d_conv_dim=8, d_l4=False)
    res = m.after_student_step({"logits": s.detach()}, {"logits": t}, {})
    assert np.isfinite(res["kd/skd_holistic_d"])
    assert not torch.equal(w0, m.discriminator.l1[0].weight_bar)
    extra = m.extra_state_dict()
    m2 = build_method("skd_holistic", info, info, SPEC, d_conv_dim=8, d_l4=False)
    m2.load_extra_state_dict(extra)
    for k, v in m.discriminator.state_dict().items():
        assert torch.equal(v, m2.discriminator.state_dict()[k]), k
    assert m2.d_optimizer.state_dict()["state"]
    m.double()
    assert m.discriminator.l1[0].weight_bar.dtype == torch.float64
    res = m.after_student_step({"logits": s.detach().double()}, {"logits": t.double()}, {})   # float64 checks run
    assert np.isfinite(res["kd/skd_holistic_d"]) and m.discriminator.l1[0].weight_bar.dtype == torch.float64
    hinge = build_method("skd_holistic", info, info, SPEC, variant="hinge", d_conv_dim=8)
    assert hinge.weight == 0.001 and hinge.d_optimizer_kind == "adam" and hinge.discriminator.with_l4
    hinge.set_progress(5, 10)
    assert hinge.d_order == "st" and hinge.d_lr_now() == 4e-4                # CIRKD: constant


def test_skd_holistic_rejects_small_inputs_and_mismatch():
    info = {"logits": TapInfo(5, 1)}
    m = build_method("skd_holistic", info, info, SPEC, d_conv_dim=8)
    with pytest.raises(ValueError, match="too small"):
        m({"logits": torch.randn(2, 5, 40, 40)}, {"logits": torch.randn(2, 5, 40, 40)}, {})
    with pytest.raises(ValueError, match="channels"):
        build_method("skd_holistic", info, {"logits": TapInfo(7, 1)}, SPEC)


# ----------------------------------------------------------------------------- IntRA-KD
def test_box_blur_matches_cv2_blur():
    x = np.random.default_rng(0).random((20, 17)).astype(np.float32)
    got = I.box_blur(torch.from_numpy(x)[None, None], 11)[0, 0].numpy()
    np.testing.assert_allclose(got, cv2.blur(x, (11, 11)), rtol=1e-5, atol=1e-6)


def test_intra_kd_moments_against_numpy():
    rng = np.random.default_rng(1)
    f = rng.standard_normal((3, 4, 5)).astype(np.float64)
    m = rng.random((2, 4, 5))
    got = I.moment_vectors(torch.from_numpy(f), torch.from_numpy(m), "area").numpy()
    for k in range(2):
        z = m[k].sum()
        mu = (m[k] * f).reshape(3, -1).sum(1) / z
        var = (m[k] * (f - mu[:, None, None]) ** 2).reshape(3, -1).sum(1) / z
        sk = (m[k] * ((f - mu[:, None, None]) / np.sqrt(var + 1e-10)[:, None, None]) ** 3).reshape(3, -1).sum(1) / z
        np.testing.assert_allclose(got[:, k], np.stack([mu, var, sk]), rtol=1e-10)
    img = I.moment_vectors(torch.from_numpy(f), torch.from_numpy(m), "image").numpy()
    np.testing.assert_allclose(img[0], got[0] * m.sum((1, 2))[:, None] / 20, rtol=1e-10)


def test_intra_kd_loss_properties():
    torch.manual_seed(0)
    mask = torch.zeros(2, 24, 32, dtype=torch.long)
    mask[0, :, 10:14] = 2
    mask[0, :, 20:22] = 3
    mask[0, :2] = 255                         # image 0: classes {0, 2, 3}; image 1: only {0}
    s = torch.randn(2, 6, 6, 8, requires_grad=True)
    t = torch.randn(2, 10, 3, 4)
    loss = I.intra_kd_loss(s, t, mask, 5)
    loss.backward()
    assert loss.item() > 0 and s.grad.abs().sum() > 0 and s.grad[1].abs().sum() == 0
    valid = I.intra_kd_loss(s, t, mask, 5, average="valid")
    assert valid.item() == pytest.approx(2 * loss.item(), rel=1e-6)
    assert I.intra_kd_loss(s, s.detach(), mask, 5).item() == pytest.approx(0, abs=1e-10)
    assert I.intra_kd_loss(s, t, torch.zeros_like(mask), 5).item() == 0
    with pytest.raises(ValueError, match="outside"):
        I.intra_kd_loss(s, t, torch.full_like(mask, 7), 5)


# ----------------------------------------------------------------------------- LGAD
def _label_teacher():
    from distill.models.base import build_model

    torch.manual_seed(0)
    return build_model("erfnet", num_classes=5, lane_slots=4, in_channels=5).eval()


def test_lgad_zero_when_student_copies_label_teacher_and_checkpoint_load(tmp_path):
    from distill.checkpoint import save_checkpoint, spec_to_dict

    lt = _label_teacher()
    mask = torch.zeros(2, 32, 64, dtype=torch.long)
    mask[:, :, 20:24] = 2
    mask[1, 0, :] = 255
    m = build_method("lgad", lt.feature_info, None, SPEC, label_teacher=lt)
    assert m.stages == ("stage2", "stage3", "decoder") and not m.uses_teacher
    assert len(list(m.parameters())) == 0 and "weight" not in str(m.state_dict().keys())
    with torch.no_grad():
        taps = lt.forward_taps(label_input(mask, 5))
    out = m({k: v.clone() for k, v in taps.items()}, None, {"mask": mask})
    assert out["kd/lgad"].item() == pytest.approx(0, abs=1e-12)
    s_taps = {k: torch.randn_like(v, requires_grad=True) for k, v in taps.items()}
    m.train()
    assert not m.label_teacher.training
    loss = m(s_taps, None, {"mask": mask})["kd/lgad"]
    loss.backward()
    assert loss.item() > 0 and all(s_taps[k].grad.abs().sum() > 0 for k in m.stages)
    path = save_checkpoint(tmp_path / "lt.pt", {"model_name": "erfnet", "spec": spec_to_dict(SPEC),
                                                "model_kwargs": {"num_classes": 5, "lane_slots": 4, "in_channels": 5},
                                                "state_dict": lt.state_dict()})
    m2 = build_method("lgad", lt.feature_info, None, SPEC, label_teacher_checkpoint=str(path), stages=["stage3"])
    assert m2.stages == ("stage3",)
    torch.testing.assert_close(m2(s_taps, None, {"mask": mask})["kd/lgad"],
                               0.1 * L.lgad_loss([s_taps["stage3"]], [taps["stage3"]]))


def test_lgad_build_errors():
    lt = _label_teacher()
    with pytest.raises(ValueError, match="exactly one"):
        build_method("lgad", lt.feature_info, None, SPEC)
    with pytest.raises(ValueError, match="none of the stages"):
        build_method("lgad", lt.feature_info, None, SPEC, label_teacher=lt, stages=["stage9"])


def test_attention_map_is_spatial_softmax():
    a = L.attention_map(torch.randn(2, 3, 4, 5), size=(8, 10))
    assert a.shape == (2, 80)
    torch.testing.assert_close(a.sum(1), torch.ones(2))


# ----------------------------------------------------------------------------- registry-parametrised
S_INFO = {"decoder": TapInfo(6, 8), "stage2": TapInfo(6, 8), "stage3": TapInfo(6, 8), "logits": TapInfo(5, 1)}
T_INFO = {"decoder": TapInfo(10, 8), "stage2": TapInfo(10, 8), "stage3": TapInfo(10, 8), "logits": TapInfo(5, 1)}
KWARGS = {"skd_holistic": {"d_conv_dim": 8, "d_l4": False},
          "cirkd": {"pixel_memory_size": 1000, "region_memory_size": 300},
          "cirkd_channel": {"feature_size": (16, 16), "channel_memory_size": 500},
          "intra_kd": {}, "lgad": {}}


def _taps(info, b=2, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(b, v.channels, h // v.stride, w // v.stride, generator=g).requires_grad_(True)
            for k, v in info.items()}


def _batch():
    mask = torch.zeros(2, 32, 32, dtype=torch.long)
    mask[:, :, 8:12] = 1
    mask[:, :, 20:24] = 3
    mask[0, :4] = 255
    return {"image": torch.randn(2, 3, 32, 32), "mask": mask, "exist": torch.ones(2, 4)}


class _TinyLabelTeacher(torch.nn.Module):
    feature_info = {"stage2": TapInfo(6, 8), "decoder": TapInfo(6, 8)}

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(5, 6, 3, 8, 1)

    def forward_taps(self, x):
        y = self.conv(x)
        return {"stage2": y, "decoder": y * 2}


def _build(name, s_info=S_INFO, t_info=T_INFO, **extra):
    kw = dict(KWARGS[name], **extra)
    if name == "lgad":
        kw.setdefault("label_teacher", _TinyLabelTeacher())
        t_info = None
    return build_method(name, s_info, t_info, SPEC, **kw)


@pytest.mark.parametrize("name", ["skd_holistic", "cirkd", "intra_kd", "lgad"])
def test_method_finite_loss_and_gradients(name):
    torch.manual_seed(0)
    m = _build(name)
    s_taps, t_taps = _taps(S_INFO), _taps(T_INFO, seed=1)
    if name == "skd_holistic":
        s_taps["logits"] = torch.randn(2, 5, 32, 32, requires_grad=True)
        t_taps["logits"] = torch.randn(2, 5, 32, 32)
    out = m(s_taps, {k: v.detach() for k, v in t_taps.items()} if m.uses_teacher else None, _batch())
    assert out and all(k.startswith("kd/") for k in out)
    total = sum(out.values())
    assert torch.isfinite(total)
    total.backward()
    assert any(s_taps[k].grad is not None and s_taps[k].grad.abs().sum() > 0 for k in m.s_taps_needed)
    for p in m.parameters():   # adapters (CIRKD's projection head) are trained too
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["cirkd", "intra_kd"])
def test_method_minimal_when_student_equals_teacher(name):
    same = {"decoder": TapInfo(6, 8)}
    m = _build(name, same, same, **({"pixel_memory_weight": 0.0, "region_memory_weight": 0.0} if name == "cirkd" else {}))
    taps = _taps(same)
    out = m(taps, {k: v.detach() for k, v in taps.items()}, _batch())
    assert sum(out.values()).item() == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("name", ["skd_holistic", "cirkd", "cirkd_channel", "intra_kd", "lgad"])
def test_method_bad_taps_fail_at_build(name):
    with pytest.raises(ValueError, match="tap|stage"):
        if name == "lgad":
            _build(name, stages=["nope"])
        else:
            _build(name, s_tap="nope")


def test_bad_options_fail_at_build():
    with pytest.raises(ValueError, match="pooling"):
        _build("cirkd", pooling="max")
    with pytest.raises(ValueError, match="sampling"):
        _build("cirkd", sampling="random")
    with pytest.raises(ValueError, match="normaliser"):
        _build("intra_kd", normaliser="z")
    with pytest.raises(ValueError, match="variant"):
        _build("skd_holistic", variant="lsgan")


# ----------------------------------------------------------------------------- DDP (2 gloo processes)
def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)   # identical banks / D on both ranks, as after DDP's broadcast
        cirkd = _build("cirkd")
        cirkd.generator = torch.Generator().manual_seed(7)
        s_taps, t_taps = _taps(S_INFO, seed=10 + rank), _taps(T_INFO, seed=20 + rank)
        batch = _batch()
        cirkd(s_taps, {k: v.detach() for k, v in t_taps.items()}, batch)
        hol = _build("skd_holistic")
        hol.generator = torch.Generator().manual_seed(3)
        g = torch.Generator().manual_seed(rank)
        hol.after_student_step({"logits": torch.randn(2, 5, 32, 32, generator=g)},
                               {"logits": torch.randn(2, 5, 32, 32, generator=g)}, {})
        torch.manual_seed(0)
        channel = _build("cirkd_channel", generator=torch.Generator().manual_seed(7))
        ch_s, ch_t = torch.randn(2, 6, 16, 16, generator=g), torch.randn(2, 10, 16, 16, generator=g)
        channel({"decoder": ch_s}, {"decoder": ch_t}, batch)
        torch.save({"t": t_taps["decoder"].detach(), "mask": batch["mask"],
                    "bank": cirkd.teacher_pixel_queue, "ptr": cirkd.pixel_queue_ptr,
                    "seg": cirkd.teacher_segment_queue, "d": hol.discriminator.state_dict(),
                    "ch_t": ch_t, "ch_queue": channel.teacher_channel_queue, "ch_ptr": channel.channel_queue_ptr},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_ranks(tmp_path_factory) -> tuple[dict, dict]:
    """What each of 2 gloo ranks saved after one step of cirkd, skd_holistic's D and cirkd_channel."""
    import torch.multiprocessing as mp

    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_ddp_worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, join=True)
    return tuple(torch.load(tmp / f"rank{r}.pt") for r in range(2))


def test_ddp_gathers_teacher_into_banks_and_syncs_discriminator(ddp_ranks):
    r0, r1 = ddp_ranks
    for key in ("bank", "ptr", "seg"):
        assert torch.equal(r0[key], r1[key]), key
    for k in r0["d"]:   # BN running stats stay per rank (D always runs in train mode, they are unused)
        if "running_" not in k and "num_batches" not in k:
            assert torch.equal(r0["d"][k], r1["d"][k]), k
    # the banks equal a single-process enqueue of both ranks' teacher batches (in rank order)
    torch.manual_seed(0)
    ref = _build("cirkd")
    t = F.normalize(torch.cat([r0["t"], r1["t"]]), dim=1)
    labels = C.resize_labels(torch.cat([r0["mask"], r1["mask"]]), t.shape[-2:])
    C.enqueue_teacher(t, labels, ref.teacher_pixel_queue, ref.pixel_queue_ptr, ref.teacher_segment_queue,
                      ref.segment_queue_ptr, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(r0["bank"], ref.teacher_pixel_queue)
    assert torch.equal(r0["ptr"], ref.pixel_queue_ptr)


def test_ddp_cirkd_channel_enqueues_every_ranks_teacher_channels(ddp_ranks):
    r0, r1 = ddp_ranks
    assert torch.equal(r0["ch_queue"], r1["ch_queue"]) and torch.equal(r0["ch_ptr"], r1["ch_ptr"])
    assert r0["ch_ptr"].item() == 2 * 2 * 10                 # both ranks' B * Ct rows
    torch.manual_seed(0)
    ref = _build("cirkd_channel")
    rows = torch.cat([CC.channel_vectors(CC.pool(r["ch_t"])).flatten(0, 1) for r in (r0, r1)])   # rank order
    CC.enqueue_channels(rows, ref.teacher_channel_queue, ref.channel_queue_ptr,
                        generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(r0["ch_queue"], ref.teacher_channel_queue)
    assert torch.equal(r0["ch_ptr"], ref.channel_queue_ptr)
