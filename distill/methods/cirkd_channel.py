"""CIRKDv2's channel-wise cross-image relational distillation.

Yang et al., "CIRKDV2: Cross-Image Relational Knowledge Distillation with Contextual Modeling for
Efficient Semantic Segmentation" (github.com/winycg/CIRKD at HEAD ``dab64dbb``, 2025:
``losses/cirkd_channel.py::StudentSegChannelContrast``, weights from ``train_cirkdv2.py`` and its
``scripts/train_cirkdv2``). KD_METHODS.md §9.3. Shapes, for a (B, Cs, h, w) student tap and a
(B, Ct, h', w') teacher tap (resized to (h, w) when the sizes differ, the project-wide rule):

1. both are average-pooled 4x4 (stride 4, ceil mode) to (B, C, ceil(h/4), ceil(w/4)); the pooled
   student goes through a projection head Conv1x1(Cs->Ct, no bias) -> BN -> ReLU ->
   Conv1x1(Ct->Ct, no bias) (trained with the student; a SyncBN under CUDA DDP via the Trainer);
2. every channel map becomes a vector over the P = ceil(h/4) * ceil(w/4) pooled positions,
   L2-normalised: S, T of shape (B, Ct, P);
3. ``kd/cirkd_channel_batch`` (weight 1): for every ordered image pair (i, j) of the local batch,
   i == j included, KL(softmax_row(T_i T_j^T / tau) || softmax_row(S_i S_j^T / tau)) with
   ``batchmean`` over the Ct rows, summed / B^2 (CIRKD's mini-batch loss on channels instead of
   pixels; tau 0.1);
4. ``kd/cirkd_channel_mse`` (weight 100): mean over B*Ct*P of (S - T)^2;
5. ``kd/cirkd_channel_memory`` (weight 0.1): the B*Ct teacher rows, all-gathered across DDP ranks,
   are FIRST enqueued: ``randperm(rows)[:K]``, K = min(rows, ``channel_update_freq`` = 256),
   L2-normalised into ``teacher_channel_queue`` (``channel_memory_size`` x P, randn +
   L2-normalised at build) at ``channel_queue_ptr`` (or, when ptr + K >= size, into the LAST K
   slots and ptr = 0); then ``randperm(size)[:channel_contrast_size]`` slots (2048; more than the
   queue takes the whole queue, as the authors' slice does) are the contrast set Q and the loss is
   KL(softmax(T Q^T / tau) || softmax(S Q^T / tau)) with ``batchmean`` over the local B*Ct rows,
   x t_kd^2 (t_kd 1). Queue and pointer are buffers, so they checkpoint; anchors stay local.

Randomness: only ``torch.randperm`` on the CPU, per call ``randperm(rows)`` then
``randperm(channel_memory_size)``, drawn from ``generator`` (a ``torch.Generator``; None = the
global RNG, as the authors). The head and the queue are initialised from the global RNG in the
authors' order (conv, BN, conv, queue), so the same seed builds the same state and the authors'
``state_dict`` loads as is (same names).

Defaults are the authors': memory 10000, contrast 2048, update 256, tau 0.1, t_kd 1; weights
``minibatch_weight`` 1 and ``memory_weight`` 0.1 (argparse defaults and every script);
``mse_weight`` 100 is what every ``train_cirkdv2`` script passes (``--lambda-channel-kd 100``;
the argparse default is 0). ``weight`` scales all three; a per-term weight of 0 drops that term
(memory 0: no queue). The authors' CIRKDv2 runs add logit KD (1), FitNets (1 or 10) and CIRKD's
pixel terms: here those are the separate ``kd``, ``fitnet`` and ``cirkd`` methods.

Scaled default (``needs_batch_size``): the authors enqueue K = 256 channel vectors a step (16
images x hundreds of channels is always more), so their 10000 slots hold the last 39 steps. A
smaller run enqueues K = min(batch_size x world_size x Ct, 256) a step; with no
``channel_memory_size`` given the queue keeps the authors' age in steps: 10000 x K / 256 slots
(5000 for 8 images of a 16-channel teacher tap). Built without ``batch_size``: 10000.

``feature_size``: the (h, w) of the student tap at the training input size; it sizes the queue
(the authors measure it with one forward at the crop size). The Trainer fills it in
(``needs_feature_size``); a forward at another size fails with a clear error.

Deviations: the queue's vector length is ceil(h/4) * ceil(w/4), the pooled size; the authors'
``int(h * w / 16)`` equals it when h and w are multiples of 4 and otherwise fails at the first
matrix product. In the authors' script, when ``lambda_fitnet`` is set, the student feature first
passes a GCN adapter that also feeds these terms; here the terms read the student tap directly.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from distill.data.sample import DataSpec
from distill.methods._common import check_positive
from distill.methods.base import METHODS, KDMethod
from distill.methods.cirkd import concat_all_gather, contrast_kd, cross_image_kl, l2_normalized_randn
from distill.models.base import TapInfo

PATCH = 4   # the authors' fixed 4x4 average pooling
AUTHORS_MEMORY, AUTHORS_UPDATE = 10000, 256   # channel queue slots; vectors enqueued a step


def pooled_size(feature_size: Sequence[int]) -> int:
    """Number of positions P after the 4x4 ceil-mode average pooling of an (h, w) map."""
    h, w = (int(v) for v in feature_size)
    return math.ceil(h / PATCH) * math.ceil(w / PATCH)


def pool(feat: torch.Tensor) -> torch.Tensor:
    """AvgPool 4x4, stride 4, no padding, ceil mode: (B, C, h, w) -> (B, C, ceil(h/4), ceil(w/4))."""
    return F.avg_pool2d(feat, PATCH, PATCH, 0, ceil_mode=True)


def channel_vectors(feat: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, h*w): each channel map flattened and L2-normalised over positions."""
    return F.normalize(feat.reshape(feat.shape[0], feat.shape[1], -1), p=2, dim=-1)


def channel_mse(s_vec: torch.Tensor, t_vec: torch.Tensor) -> torch.Tensor:
    """Mean over every element of (S - T)^2 on the normalised channel vectors."""
    return ((s_vec - t_vec) ** 2).mean()


@torch.no_grad()
def enqueue_channels(t_rows: torch.Tensor, queue: torch.Tensor, ptr: torch.Tensor, update_freq: int = 256,
                     generator: torch.Generator | None = None) -> None:
    """Write K = min(rows, update_freq) of the (rows, P) teacher channel vectors into ``queue`` IN PLACE.

    The rows are ``randperm(rows)[:K]``, L2-normalised; they go to ``[ptr, ptr + K)`` (ptr += K),
    or, when ptr + K >= the queue size, to the last K slots with ptr = 0.
    """
    n, size = t_rows.shape[0], queue.shape[0]
    perm = torch.randperm(n, generator=generator).to(t_rows.device)
    k = min(n, update_freq)
    if k > size:
        raise ValueError(f"cirkd_channel: {k} channel vectors per update do not fit a queue of {size}; "
                         f"raise channel_memory_size or lower channel_update_freq")
    vecs = F.normalize(t_rows[perm[:k]], p=2, dim=1)
    p = int(ptr[0])
    if p + k >= size:
        queue[-k:, :] = vecs
        ptr[0] = 0
    else:
        queue[p:p + k, :] = vecs
        ptr[0] = (p + k) % size


def channel_memory_loss(s_rows: torch.Tensor, t_rows: torch.Tensor, queue: torch.Tensor, ptr: torch.Tensor,
                        contrast_size: int, tau: float = 0.1, t_kd: float = 1.0, update_freq: int = 256,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """The memory-based channel-to-channel loss (unweighted); one call = one step.

    s_rows / t_rows: (B*Ct, P) normalised student / teacher channel vectors. Enqueues the teacher
    rows of every rank first (mutating ``queue`` and ``ptr``), then contrasts with
    ``randperm(queue size)[:contrast_size]`` queue slots.
    """
    if s_rows.shape != t_rows.shape or s_rows.shape[1] != queue.shape[1]:
        raise ValueError(f"cirkd_channel: student rows {tuple(s_rows.shape)}, teacher rows {tuple(t_rows.shape)} "
                         f"and queue vectors of {queue.shape[1]} must agree")
    enqueue_channels(concat_all_gather(t_rows.detach().clone()), queue, ptr, update_freq, generator)
    index = torch.randperm(queue.shape[0], generator=generator)[:contrast_size].to(queue.device)
    contrast = queue[index, :]
    t_logits = t_rows @ contrast.t() / tau
    s_logits = s_rows @ contrast.t() / tau
    return contrast_kd(s_logits, t_logits.detach(), t_kd)


@METHODS.register("cirkd_channel")
class CIRKDChannel(KDMethod):
    """CIRKDv2 channel terms on the ``decoder`` taps (see the module docstring for shapes and defaults)."""

    needs_feature_size = True
    needs_batch_size = True

    def __init__(self, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None, spec: DataSpec,
                 weight: float = 1.0, minibatch_weight: float = 1.0, memory_weight: float = 0.1,
                 mse_weight: float = 100.0, tau: float = 0.1, t_kd: float = 1.0,
                 feature_size: Sequence[int] | None = None, channel_memory_size: int | None = None,
                 channel_contrast_size: int = 2048, channel_update_freq: int = 256,
                 s_tap: str = "decoder", t_tap: str = "decoder",
                 generator: torch.Generator | None = None, batch_size: int | None = None,
                 world_size: int = 1) -> None:
        super().__init__()
        if t_info is None:
            raise ValueError("cirkd_channel needs a teacher")
        s_i, t_i = self.bind_taps(s_info, t_info, s_tap, t_tap, "cirkd_channel")
        cs, ct = s_i.channels, t_i.channels
        if channel_memory_size is None:
            channel_memory_size = AUTHORS_MEMORY
            if batch_size is not None:
                per_step = min(int(batch_size) * int(world_size) * ct, int(channel_update_freq))
                channel_memory_size = max(per_step, round(AUTHORS_MEMORY * per_step / AUTHORS_UPDATE))
        self.weight, self.minibatch_weight = float(weight), float(minibatch_weight)
        self.memory_weight, self.mse_weight = float(memory_weight), float(mse_weight)
        self.tau = check_positive(tau, "tau", "cirkd_channel")
        self.t_kd = check_positive(t_kd, "t_kd", "cirkd_channel")
        self.channel_contrast_size = int(channel_contrast_size)
        self.channel_update_freq = int(channel_update_freq)
        for what, value in (("channel_memory_size", channel_memory_size),
                            ("channel_contrast_size", channel_contrast_size),
                            ("channel_update_freq", channel_update_freq)):
            check_positive(value, what, "cirkd_channel")
        self.generator = generator  # the queue sampling's RNG (None = global); also settable later
        self.use_memory = self.memory_weight != 0
        self.project_head = nn.Sequential(
            nn.Conv2d(cs, ct, 1, bias=False), nn.BatchNorm2d(ct), nn.ReLU(True), nn.Conv2d(ct, ct, 1, bias=False))
        self.feature_size = None if feature_size is None else tuple(int(v) for v in feature_size)
        if self.use_memory:
            if self.feature_size is None or len(self.feature_size) != 2:
                raise ValueError("cirkd_channel: feature_size (h, w) of the student tap at the training input size "
                                 f"is needed to size the channel memory, got {feature_size!r}")
            self.register_buffer("teacher_channel_queue",
                                 l2_normalized_randn(int(channel_memory_size), pooled_size(self.feature_size)))
            self.register_buffer("channel_queue_ptr", torch.zeros(1, dtype=torch.long))

    def forward(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor],
                batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s, t = self.feature_pair(s_taps, t_taps)
        s_vec = channel_vectors(self.project_head(pool(s)))
        t_vec = channel_vectors(pool(t))
        out = {}
        if self.minibatch_weight != 0:
            out["kd/cirkd_channel_batch"] = self.weight * self.minibatch_weight * cross_image_kl(s_vec, t_vec, self.tau)
        if self.use_memory:
            if s_vec.shape[-1] != self.teacher_channel_queue.shape[1]:
                raise ValueError(f"cirkd_channel: the tap is {tuple(s.shape[-2:])}, {s_vec.shape[-1]} pooled positions, "
                                 f"but the channel memory was sized for feature_size={self.feature_size} "
                                 f"({self.teacher_channel_queue.shape[1]})")
            memory = channel_memory_loss(
                s_vec.flatten(0, 1), t_vec.flatten(0, 1), self.teacher_channel_queue, self.channel_queue_ptr,
                self.channel_contrast_size, self.tau, self.t_kd, self.channel_update_freq, self.generator)
            out["kd/cirkd_channel_memory"] = self.weight * self.memory_weight * memory
        if self.mse_weight != 0:
            out["kd/cirkd_channel_mse"] = self.weight * self.mse_weight * channel_mse(s_vec, t_vec)
        return out
