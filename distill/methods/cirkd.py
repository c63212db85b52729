"""CIRKD: cross-image relational distillation.

Yang et al., "Cross-Image Relational Knowledge Distillation for Semantic Segmentation", CVPR 2022
(github.com/winycg/CIRKD, train_cirkd.py at 2d8ad0f). KD_METHODS.md §9, §13. Terms:

- ``kd/cirkd_minibatch`` (weight 1): for every ordered image pair (i, j) of the local batch,
  including i == j, KL(softmax_row(F_t,i^T F_t,j / tau) || softmax_row(F_s,i^T F_s,j / tau)) with
  ``batchmean`` over the HW rows, summed over pairs / B^2; features L2-normalised per pixel, no
  projection (Cs != Ct is fine), tau 0.1, no tau^2. ``pooling``: ``"none"`` (CVPR default),
  ``"avg2"`` (the ``pooling=True`` flag: AvgPool 2x2 ceil), ``"head"`` (2025 HEAD: AvgPool 4x4 ceil
  when H >= 256 and W >= 256).
- ``kd/cirkd_pixel_memory`` / ``kd/cirkd_region_memory`` (0.1 / 0.1; the authors use 0.01 on VOC):
  the student feature goes through a projection head Conv1x1(Cs->Ct, no bias) -> BN -> ReLU ->
  Conv1x1(Ct->Ct, no bias) (the Trainer's ``convert_sync_batchnorm`` makes the BN a SyncBN under
  DDP), both are L2-normalised, the label is nearest-resized to the feature size. Teacher
  embeddings are FIRST enqueued into per-class banks (pixel bank (C, 20000, Ct), region bank
  (C, 2000, Ct); randn + L2-normalised at build; registered buffers, so they checkpoint), then every
  non-ignored local pixel is an anchor contrasted (tau 0.1) with ``4096 // C + 1`` pixel slots and
  ``1024 // C + 1`` region slots per class (the same slot indices for all classes), KL(t || s)
  batchmean x T_kd^2 (T_kd = 1). Under DDP the enqueue gathers teacher embeddings and labels from all
  ranks; anchors stay local.

Randomness (KD_METHODS §13): only ``torch.randperm`` on the CPU, in this order: per image, per
present class ascending, ``randperm(n_c)`` for the pixel enqueue; then ``randperm(pixel_bank_size)``;
then ``randperm(region_bank_size)``, drawn from ``generator`` (a ``torch.Generator``; None = global RNG).
``sampling="reference"`` reproduces the authors' quirk (the enqueued pixels of class c are raster
positions 0..n_c-1 of the image, not class-c pixels); ``"class"`` takes class-c pixels.

The Hinton logit KD term that train_cirkd.py also uses is the separate ``kd`` method.
Spatial sizes: the teacher tap is bilinearly resized to the student's size when they differ.

Deviation: a batch without a single non-ignored pixel gives memory terms of 0 (times the mean of
all student embeddings, to keep the graph); the authors' ``0 * mean`` over the empty anchor set is NaN.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from distill.data.sample import DataSpec
from distill.methods.base import METHODS, KDMethod
from distill.models.base import TapInfo

POOLINGS = ("none", "avg2", "head")
SAMPLINGS = ("reference", "class")


# ----------------------------------------------------------------------------- mini-batch term
def _pool_for(feat: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "none":
        return feat
    if pooling == "avg2":
        return F.avg_pool2d(feat, 2, 2, 0, ceil_mode=True)
    if pooling == "head":
        if feat.shape[-2] >= 256 and feat.shape[-1] >= 256:
            return F.avg_pool2d(feat, 4, 4, 0, ceil_mode=True)
        return feat
    raise ValueError(f"unknown CIRKD pooling {pooling!r}; choose from {POOLINGS}")


def minibatch_pair_loss(feat_s: torch.Tensor, feat_t: torch.Tensor, tau: float = 0.1,
                        pooling: str = "none") -> torch.Tensor:
    """Mini-batch cross-image pixel-to-pixel loss on (B, Cs, H, W) / (B, Ct, H, W) features."""
    if feat_s.shape[0] != feat_t.shape[0] or feat_s.shape[-2:] != feat_t.shape[-2:]:
        raise ValueError(f"CIRKD mini-batch: student {tuple(feat_s.shape)} and teacher {tuple(feat_t.shape)} "
                         "need the same batch and spatial size")
    fs = F.normalize(_pool_for(feat_s, pooling), p=2, dim=1)
    ft = F.normalize(_pool_for(feat_t, pooling), p=2, dim=1)
    return cross_image_kl(fs.flatten(2).transpose(1, 2), ft.flatten(2).transpose(1, 2), tau)  # B, HW, C


def cross_image_kl(rows_s: torch.Tensor, rows_t: torch.Tensor, tau: float) -> torch.Tensor:
    """CIRKD's mini-batch relation loss on (B, N, D) row vectors (pixels, or CIRKDv2's channels).

    For every ordered image pair (i, j), i == j included: KL(softmax_row(T_i T_j^T / tau) ||
    softmax_row(S_i S_j^T / tau)) with ``batchmean`` over the N rows; summed over pairs / B^2.
    """
    b = rows_s.shape[0]
    total = rows_s.new_zeros(())
    for i in range(b):
        for j in range(b):
            p_s = F.log_softmax(rows_s[i] @ rows_s[j].t() / tau, dim=1)
            p_t = F.softmax(rows_t[i] @ rows_t[j].t() / tau, dim=1)
            total = total + F.kl_div(p_s, p_t, reduction="batchmean")
    return total / (b * b)


# ----------------------------------------------------------------------------- memory terms
def l2_normalized_randn(*shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=generator), p=2, dim=-1)


def resize_labels(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) int labels -> (B, h, w) long, nearest, as the authors resize them."""
    return F.interpolate(mask.unsqueeze(1).float(), size=tuple(size), mode="nearest").squeeze(1).long()


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0 (identity without DDP)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.ones_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous(), async_op=False)
    return torch.cat(parts, dim=0)


@torch.no_grad()
def enqueue_teacher(t_emb: torch.Tensor, labels: torch.Tensor, pixel_queue: torch.Tensor,
                    pixel_ptr: torch.Tensor, segment_queue: torch.Tensor, segment_ptr: torch.Tensor,
                    ignore_index: int = 255, pixel_update_freq: int = 16, sampling: str = "reference",
                    generator: torch.Generator | None = None) -> None:
    """Write teacher embeddings into the banks IN PLACE (queues and pointers).

    t_emb: (B, Ct, h, w) L2-normalised teacher embeddings (already gathered across ranks);
    labels: (B, h, w) long. Per image, per present non-ignored class c ascending: the region slot
    ``segment_ptr[c]`` gets L2norm(mean of class-c embeddings) and the pointer advances mod bank
    size; K = min(n_c, 16) pixel vectors chosen by ``randperm(n_c)`` go to ``[ptr, ptr+K)`` (ptr += K
    mod size), or, if ``ptr + K >= size``, to the LAST K slots and ptr = 0.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown CIRKD sampling {sampling!r}; choose from {SAMPLINGS}")
    b, dim = t_emb.shape[:2]
    pixel_size, segment_size = pixel_queue.shape[1], segment_queue.shape[1]
    for bs in range(b):
        feat = t_emb[bs].reshape(dim, -1)
        label = labels[bs].reshape(-1)
        for lb in torch.unique(label).tolist():   # ascending
            if lb == ignore_index:
                continue
            if not 0 <= lb < pixel_queue.shape[0]:
                raise ValueError(f"CIRKD: label {lb} outside 0..{pixel_queue.shape[0] - 1} (ignore={ignore_index})")
            idxs = (label == lb).nonzero().squeeze(1)
            ptr = int(segment_ptr[lb])
            segment_queue[lb, ptr, :] = F.normalize(feat[:, idxs].mean(dim=1), p=2, dim=0)
            segment_ptr[lb] = (ptr + 1) % segment_size

            n = idxs.numel()
            perm = torch.randperm(n, generator=generator).to(feat.device)
            k = min(n, pixel_update_freq)
            cols = perm[:k] if sampling == "reference" else idxs[perm[:k]]  # reference: the authors' quirk
            vecs = F.normalize(feat[:, cols].t(), p=2, dim=1)
            ptr = int(pixel_ptr[lb])
            if ptr + k >= pixel_size:
                pixel_queue[lb, -k:, :] = vecs
                pixel_ptr[lb] = 0
            else:
                pixel_queue[lb, ptr:ptr + k, :] = vecs
                pixel_ptr[lb] = (ptr + k) % pixel_size


def contrast_kd(s_logits: torch.Tensor, t_logits: torch.Tensor, t_kd: float) -> torch.Tensor:
    """KL(softmax(t / T) || softmax(s / T)), ``batchmean`` over the anchor rows, x T^2 (the memory terms)."""
    p_s = F.log_softmax(s_logits / t_kd, dim=1)
    p_t = F.softmax(t_logits / t_kd, dim=1)
    return F.kl_div(p_s, p_t, reduction="batchmean") * t_kd ** 2


def memory_contrast_loss(s_emb: torch.Tensor, t_emb: torch.Tensor, labels: torch.Tensor,
                         pixel_queue: torch.Tensor, pixel_ptr: torch.Tensor, segment_queue: torch.Tensor,
                         segment_ptr: torch.Tensor, pixel_contrast_size: int, region_contrast_size: int,
                         tau: float = 0.1, t_kd: float = 1.0, ignore_index: int = 255,
                         sampling: str = "reference", generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory-based pixel-to-pixel and pixel-to-region losses (unweighted), one call = one
    training step: enqueues first (mutating queues and pointers), then contrasts.

    s_emb: (B, Ct, h, w) PROJECTED student embeddings (not yet normalised); t_emb: (B, Ct, h, w)
    teacher feature (not yet normalised); labels: (B, h, w) long at the feature size.
    Per-class contrast sizes are ``pixel_contrast_size`` / ``region_contrast_size`` (the authors
    pass ``4096 // C + 1`` and ``1024 // C + 1``).
    """
    t_emb = F.normalize(t_emb, p=2, dim=1)
    s_emb = F.normalize(s_emb, p=2, dim=1)
    if labels.shape[-2:] != s_emb.shape[-2:]:
        raise ValueError(f"CIRKD memory: labels {tuple(labels.shape)} do not match features {tuple(s_emb.shape)}")
    flat_labels = labels.reshape(-1)
    valid = flat_labels != ignore_index
    s_anchor = s_emb.permute(0, 2, 3, 1).reshape(-1, s_emb.shape[1])[valid]
    t_anchor = t_emb.permute(0, 2, 3, 1).reshape(-1, t_emb.shape[1])[valid]

    enqueue_teacher(concat_all_gather(t_emb.detach().clone()), concat_all_gather(labels.detach().clone()),
                    pixel_queue, pixel_ptr, segment_queue, segment_ptr, ignore_index=ignore_index,
                    sampling=sampling, generator=generator)

    if int(valid.sum()) == 0:
        # The reference returns 0 * mean(s_anchor^2), a mean over an EMPTY tensor (NaN); we take the
        # mean over all student embeddings instead: a finite zero that keeps the graph connected.
        zero = 0.0 * (s_emb ** 2).mean()
        return zero, zero

    losses = []
    for queue, size in ((pixel_queue, pixel_contrast_size), (segment_queue, region_contrast_size)):
        index = torch.randperm(queue.shape[1], generator=generator)[:size].to(queue.device)
        contrast = queue[:, index, :].reshape(-1, queue.shape[2])   # class-major, as _sample_negative
        t_logits = t_anchor @ contrast.t() / tau
        s_logits = s_anchor @ contrast.t() / tau
        losses.append(contrast_kd(s_logits, t_logits.detach(), t_kd))
    return losses[0], losses[1]


def _resize_like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if t.shape[-2:] == ref.shape[-2:]:
        return t
    return F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)


AUTHORS_IMAGES_PER_STEP = 16           # 2 per GPU on 8 GPUs, gathered for the enqueue
AUTHORS_BANKS = (20000, 2000)          # per class: pixel, region


def scaled_bank_sizes(pixel: int | None, region: int | None, batch_size: int | None,
                      world_size: int = 1) -> tuple[int, int]:
    """The per-class bank sizes: the ones given, else the scaled defaults.

    Rule: a bank should remember as many *steps* of teacher embeddings as the authors' does. They
    enqueue, per step, up to 16 pixels and 1 region per class from each of 16 images (all ranks
    gathered), so their 20000 / 2000 slots hold the last 78 / 125 steps. At ``batch_size`` x
    ``world_size`` images a step the same age needs 20000 / 2000 x images / 16 slots (10000 / 1000
    at 8 images on one device). Without ``batch_size``: the authors' 20000 / 2000.
    """
    scale = 1.0 if batch_size is None else int(batch_size) * int(world_size) / AUTHORS_IMAGES_PER_STEP
    sizes = [given if given is not None else max(1, round(default * scale))
             for given, default in zip((pixel, region), AUTHORS_BANKS)]
    for what, v in zip(("pixel_memory_size", "region_memory_size"), sizes):
        if int(v) <= 0:
            raise ValueError(f"cirkd: {what} must be > 0, got {v}")
    return int(sizes[0]), int(sizes[1])


@METHODS.register("cirkd")
class CIRKD(KDMethod):
    """CIRKD mini-batch + memory terms on the ``decoder`` taps (see the module docstring).

    ``weight`` scales all three terms; ``minibatch_weight`` / ``pixel_memory_weight`` /
    ``region_memory_weight`` are the per-term lambdas (1, 0.1, 0.1; set a memory weight to 0 to drop
    that term; both 0 skips the banks entirely). Bank sizes not given are scaled to the images per
    step (``scaled_bank_sizes``; the Trainer passes ``batch_size`` and ``world_size``).
    """

    needs_batch_size = True

    def __init__(self, s_info: dict[str, TapInfo], t_info: dict[str, TapInfo] | None, spec: DataSpec,
                 weight: float = 1.0, minibatch_weight: float = 1.0, pixel_memory_weight: float = 0.1,
                 region_memory_weight: float = 0.1, tau: float = 0.1, memory_tau: float = 0.1,
                 t_kd: float = 1.0, pooling: str = "none", sampling: str = "reference",
                 pixel_memory_size: int | None = None, region_memory_size: int | None = None,
                 pixel_contrast_total: int = 4096, region_contrast_total: int = 1024,
                 s_tap: str = "decoder", t_tap: str = "decoder",
                 generator: torch.Generator | None = None, batch_size: int | None = None,
                 world_size: int = 1) -> None:
        super().__init__()
        pixel_memory_size, region_memory_size = scaled_bank_sizes(pixel_memory_size, region_memory_size,
                                                                  batch_size, world_size)
        if t_info is None:
            raise ValueError("cirkd needs a teacher")
        if pooling not in POOLINGS:
            raise ValueError(f"cirkd: unknown pooling {pooling!r}; choose from {POOLINGS}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"cirkd: unknown sampling {sampling!r}; choose from {SAMPLINGS}")
        s_i, t_i = self.bind_taps(s_info, t_info, s_tap, t_tap, "cirkd")
        cs, ct = s_i.channels, t_i.channels
        self.weight, self.minibatch_weight = float(weight), float(minibatch_weight)
        self.pixel_memory_weight, self.region_memory_weight = float(pixel_memory_weight), float(region_memory_weight)
        self.tau, self.memory_tau, self.t_kd = float(tau), float(memory_tau), float(t_kd)
        self.pooling, self.sampling = pooling, sampling
        self.ignore_index = spec.ignore_index
        self.generator = generator  # the bank sampling's RNG (None = global); also settable later
        self.use_memory = self.pixel_memory_weight != 0 or self.region_memory_weight != 0
        n_cls = spec.num_classes
        self.pixel_contrast_size = pixel_contrast_total // n_cls + 1
        self.region_contrast_size = region_contrast_total // n_cls + 1
        if self.use_memory:  # a contrast size above its bank takes the whole bank, as the authors' slice does
            self.project_head = nn.Sequential(
                nn.Conv2d(cs, ct, 1, bias=False), nn.BatchNorm2d(ct), nn.ReLU(True), nn.Conv2d(ct, ct, 1, bias=False))
            self.register_buffer("teacher_segment_queue", l2_normalized_randn(n_cls, region_memory_size, ct))
            self.register_buffer("segment_queue_ptr", torch.zeros(n_cls, dtype=torch.long))
            self.register_buffer("teacher_pixel_queue", l2_normalized_randn(n_cls, pixel_memory_size, ct))
            self.register_buffer("pixel_queue_ptr", torch.zeros(n_cls, dtype=torch.long))

    def forward(self, s_taps: dict[str, torch.Tensor], t_taps: dict[str, torch.Tensor],
                batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s = s_taps[self.s_tap]
        t = _resize_like(t_taps[self.t_tap].detach(), s)
        out = {"kd/cirkd_minibatch": self.weight * self.minibatch_weight
               * minibatch_pair_loss(s, t, self.tau, self.pooling)}
        if self.use_memory:
            labels = resize_labels(batch["mask"], s.shape[-2:])
            pixel, region = memory_contrast_loss(
                self.project_head(s), t, labels, self.teacher_pixel_queue, self.pixel_queue_ptr,
                self.teacher_segment_queue, self.segment_queue_ptr, self.pixel_contrast_size,
                self.region_contrast_size, self.memory_tau, self.t_kd, self.ignore_index, self.sampling,
                self.generator)
            if self.pixel_memory_weight != 0:
                out["kd/cirkd_pixel_memory"] = self.weight * self.pixel_memory_weight * pixel
            if self.region_memory_weight != 0:
                out["kd/cirkd_region_memory"] = self.weight * self.region_memory_weight * region
        return out
