"""CAM utilities of SeCo (method §2.2-§2.4, §2.9, §3.1): multi-scale CAMs, CAM -> labels, ROI mask, refined
pseudo label, and the decomposition into local crops with their tags.

Conventions: ``cam`` (B, C, H, W) float for the C foreground classes; ``labels`` (B, C) multi-hot
image-level tags; label maps (B, H, W) long with 0 background, c in 1..C the class, 255 ignore;
the ROI mask also uses -1 for "uncertain"; ``img_box`` (B, 4) = (y0, y1, x0, x1) of real pixels
(pixels outside are ignored everywhere). All functions are vectorised over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from seco_deploy.model.par import PAR

IGNORE = 255
UNCERTAIN = -1


# ---------------------------------------------------------------------------- multi-scale CAMs
def normalise_cam(cam: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per image and class: ``(cam - min) / (max - min + eps)`` over the spatial dims (range [0, 1))."""
    cam = cam - cam.amin(dim=(-2, -1), keepdim=True)
    return cam / (cam.amax(dim=(-2, -1), keepdim=True) + eps)


def scaled_size(h: int, w: int, scale: float, patch: int) -> tuple[int, int]:
    """(h, w) times ``scale`` rounded to the nearest multiple of the patch size (at least one patch).

    The one rule for test-time sizes: training CAMs, the predictor's TTA inputs, TensorRT profiles
    and parity shapes all use it."""
    return max(patch, round(h * scale / patch) * patch), max(patch, round(w * scale / patch) * patch)


def fuse_flip(maps: torch.Tensor, size: tuple[int, int], flipped: bool = True) -> torch.Tensor:
    """Class maps of one test-time scale -> (B, K, H, W) float32 at ``size``.

    ``maps`` is (2B, K, h, w), the maps of B images followed by those of their horizontal flips
    (or (B, K, h, w) with ``flipped=False``). Each is upsampled bilinearly to ``size``; the result
    is ``ReLU(max(map(image), unflip(map(flipped image))))`` (or ``ReLU(map)``). Summing it over
    the scales, then :func:`normalise_cam`, gives the multi-scale flip CAMs (method §2.2, §3.1).
    """
    up = F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)
    if not flipped:
        return F.relu(up)
    b = up.shape[0] // 2
    return F.relu(torch.maximum(up[:b], up[b:].flip(-1)))


@torch.no_grad()
def multi_scale_cams(
    net: torch.nn.Module,
    images: torch.Tensor,
    scales: Sequence[float],
    known_scale1: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised multi-scale flip CAMs (method §2.2): ``(cam, cam_aux)``, each (B, C, H, W) float32.

    For each scale: resize (bilinear) to a multiple of the patch size, run the encoder ONCE on the
    image and its flip concatenated, :func:`fuse_flip` both class maps at (H, W); sum over
    scales; :func:`normalise_cam`.

    ``net`` is a :class:`~seco_deploy.model.network.SeCoNet` (not a DDP wrapper). ``known_scale1``
    are the raw maps ``net.cam_maps(F, F_aux)`` of ``images`` at scale 1 when the caller already
    has them (the student forward of a training step): scale 1 then runs the flip only.
    """
    h, w = images.shape[-2:]
    patch = net.patch_size
    cam_sum = cam_aux_sum = None
    for scale in scales:
        size = scaled_size(h, w, scale, patch)
        x = images if size == (h, w) else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        if known_scale1 is not None and size == (h, w) and scale == 1.0:
            _, feats, feats_aux = net.encoder(x.flip(-1))
            flip_cam, flip_aux = net.cam_maps(feats, feats_aux)
            cam = torch.cat([known_scale1[0].detach(), flip_cam])
            cam_aux = torch.cat([known_scale1[1].detach(), flip_aux])
        else:
            _, feats, feats_aux = net.encoder(torch.cat([x, x.flip(-1)]))
            cam, cam_aux = net.cam_maps(feats, feats_aux)
        maps = fuse_flip(torch.cat([cam, cam_aux], 1), (h, w))
        c = cam.shape[1]
        cam_sum = maps[:, :c] if cam_sum is None else cam_sum + maps[:, :c]
        cam_aux_sum = maps[:, c:] if cam_aux_sum is None else cam_aux_sum + maps[:, c:]
    if cam_sum is None or cam_aux_sum is None:
        raise ValueError("multi_scale_cams needs at least one scale")
    return normalise_cam(cam_sum), normalise_cam(cam_aux_sum)


# ---------------------------------------------------------------------------- CAM -> labels
def box_mask(img_box: torch.Tensor | None, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """(B, H, W) bool, True inside each image's box ``(y0, y1, x0, x1)``; all True when ``img_box`` is None."""
    if img_box is None:
        return torch.ones(batch, height, width, dtype=torch.bool, device=device)
    box = img_box.to(device=device, dtype=torch.long)
    ys = torch.arange(height, device=device).view(1, -1, 1)
    xs = torch.arange(width, device=device).view(1, 1, -1)
    inside_y = (ys >= box[:, 0].view(-1, 1, 1)) & (ys < box[:, 1].view(-1, 1, 1))
    inside_x = (xs >= box[:, 2].view(-1, 1, 1)) & (xs < box[:, 3].view(-1, 1, 1))
    return inside_y & inside_x


def feature_box_mask(img_box: torch.Tensor | None, batch: int, size: tuple[int, int], image_size: tuple[int, int],
                     device: torch.device) -> torch.Tensor:
    """Box mask at a coarser resolution: a cell is inside when at least half of its pixels are."""
    full = box_mask(img_box, batch, image_size[0], image_size[1], device).float().unsqueeze(1)
    return F.interpolate(full, size=size, mode="area").squeeze(1) >= 0.5


def best_present_class(cam: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(value, class) of the best present class per pixel: ``max_c cam_c * y_c``; classes are 1..C."""
    valid = cam * labels.to(cam.dtype)[:, :, None, None]
    value, idx = valid.max(dim=1)
    return value, idx + 1


def cam_to_label(cam: torch.Tensor, labels: torch.Tensor, bkg_thre: float, img_box: torch.Tensor | None = None,
                 ignore_index: int = IGNORE) -> torch.Tensor:
    """Pseudo label (method §3.1): best present class, background (0) where its value <= ``bkg_thre``."""
    value, cls = best_present_class(cam, labels)
    out = torch.where(value > bkg_thre, cls, torch.zeros_like(cls))
    inside = box_mask(img_box, cam.shape[0], cam.shape[2], cam.shape[3], cam.device)
    return torch.where(inside, out, torch.full_like(out, ignore_index))


def labels_at_size(cam: torch.Tensor, labels: torch.Tensor, size: tuple[int, int], bkg_thre: float) -> torch.Tensor:
    """CAM pseudo label (method §3.1) at another resolution: ``cam`` (N, C, h, w) normalised CAMs are
    upsampled bilinearly to ``size``, then :func:`cam_to_label` with the image-level ``labels``."""
    up = F.interpolate(cam.float(), size=size, mode="bilinear", align_corners=False)
    return cam_to_label(up, labels, bkg_thre)


def cam_to_three_way(cam: torch.Tensor, labels: torch.Tensor, high_thre: float, low_thre: float,
                     img_box: torch.Tensor | None = None, uncertain: int = IGNORE,
                     ignore_index: int = IGNORE, box_inside: torch.Tensor | None = None) -> torch.Tensor:
    """Value v of the best present class c: v > high -> c; low < v <= high -> ``uncertain``; v <= low -> 0;
    outside the box -> ``ignore_index``. ``box_inside`` (B, H, W) bool overrides ``img_box``."""
    value, cls = best_present_class(cam, labels)
    out = torch.where(value > high_thre, cls, torch.where(value > low_thre, uncertain, 0))
    if box_inside is None:
        box_inside = box_mask(img_box, cam.shape[0], cam.shape[2], cam.shape[3], cam.device)
    return torch.where(box_inside, out, torch.full_like(out, ignore_index))


def roi_mask(cam: torch.Tensor, labels: torch.Tensor, img_box: torch.Tensor | None, high_thre: float,
             low_thre: float) -> torch.Tensor:
    """ROI mask for decomposition (method §2.3): class / -1 uncertain / 0 background / 255 outside the box."""
    return cam_to_three_way(cam, labels, high_thre, low_thre, img_box, uncertain=UNCERTAIN)


def ptc_label(cam_aux: torch.Tensor, labels: torch.Tensor, img_box: torch.Tensor | None, size: tuple[int, int],
              high_thre: float, low_thre: float) -> torch.Tensor:
    """Aux-CAM label at feature resolution for the PTC loss: CAMs resized bilinearly to ``size``,
    thresholded as the ROI mask (method §2.3) with uncertain -> 255 (PTC target, method §2.10); the box is
    resized too."""
    small = F.interpolate(cam_aux, size=size, mode="bilinear", align_corners=False)
    inside = feature_box_mask(img_box, cam_aux.shape[0], size, tuple(cam_aux.shape[-2:]), cam_aux.device)
    return cam_to_three_way(small, labels, high_thre, low_thre, uncertain=IGNORE, box_inside=inside)


@torch.no_grad()
def refined_pseudo_label(
    images: torch.Tensor,
    cam: torch.Tensor,
    labels: torch.Tensor,
    img_box: torch.Tensor | None,
    par: PAR,
    high_thre: float,
    low_thre: float,
    down_scale: int = 2,
    ignore_index: int = IGNORE,
) -> torch.Tensor:
    """Decoder pseudo label (method §2.9), (B, H, W) long.

    Present-class CAMs with a constant background channel at ``high_thre`` and, separately, at
    ``low_thre``; softmax over background + present classes at 1/``down_scale`` resolution; both
    refined by PAR (affinity computed once from ``images``, which may be normalised: PAR is
    invariant to per-channel affine maps); upsampled bilinearly; argmax. Result: the class where
    the "high" version says foreground, 0 where both say background, 255 elsewhere and outside
    the box. Vectorised: each image's present channels are gathered into K = 1 + max #classes
    slots; unused slots have probability 0 and stay 0 under PAR.
    """
    b, c, h, w = cam.shape
    small = (h // down_scale, w // down_scale)
    cams_small = F.interpolate((cam * labels.to(cam.dtype)[:, :, None, None]).float(), size=small,
                               mode="bilinear", align_corners=False)
    images_small = F.interpolate(images.float(), size=small, mode="bilinear", align_corners=False)
    present = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1) > 0.5  # (B, C+1), background first
    k = int(present.sum(1).max())
    order = torch.sort(present.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :k]  # (B, K)
    slot_valid = present.gather(1, order)[:, :, None, None]
    probs = []
    for bkg in (high_thre, low_thre):
        with_bkg = torch.cat([torch.full_like(cams_small[:, :1], bkg), cams_small], dim=1)
        gathered = with_bkg.gather(1, order[:, :, None, None].expand(-1, -1, *small))
        probs.append(torch.softmax(gathered.masked_fill(~slot_valid, -torch.inf), dim=1))
    refined = par.propagate(par.affinity(images_small), torch.cat(probs, dim=1))
    refined = F.interpolate(refined, size=(h, w), mode="bilinear", align_corners=False)
    label_h = order.gather(1, refined[:, :k].argmax(1).flatten(1)).view(b, h, w)
    label_l = order.gather(1, refined[:, k:].argmax(1).flatten(1)).view(b, h, w)
    out = torch.where(label_h > 0, label_h, torch.where(label_l == 0, 0, ignore_index))
    inside = box_mask(img_box, b, h, w, cam.device)
    return torch.where(inside, out, torch.full_like(out, ignore_index))


# ---------------------------------------------------------------------------- decomposition
def class_presence(label_map: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, ...) label values -> (N, C) bool: which classes 1..C occur (other values are ignored)."""
    flat = label_map.flatten(1)
    idx = torch.where((flat >= 1) & (flat <= num_classes), flat, 0).long()
    hits = torch.zeros(flat.shape[0], num_classes + 1, device=flat.device).scatter_(1, idx, 1.0)
    return hits[:, 1:] > 0


def single_roi_class(roi: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B,) the one class of each image's ROI mask, -1 when it holds none or several (global-view tags)."""
    present = class_presence(roi, num_classes)
    return torch.where(present.sum(1) == 1, present.float().argmax(1) + 1, -1)


def sample_crop_positions(roi: torch.Tensor, num_crops: int, crop_size: int,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners (y0, x0), each (B, n), of crops centred on uncertain (-1) ROI pixels.

    Centres lie where a whole crop fits (``crop_size // 2`` from the top/left). Each image draws
    ``num_crops`` distinct centres uniformly among its uncertain pixels, or among all centres
    when it has fewer than ``num_crops`` uncertain ones. Drawn with ``generator`` (on its device)
    or the global RNG of ``roi``'s device.
    """
    b, h, w = roi.shape
    ny, nx = h - crop_size + 1, w - crop_size + 1
    if ny < 1 or nx < 1:
        raise ValueError(f"local crops of {crop_size} px do not fit in {h}x{w} images; lower data.local_crop_size")
    half = crop_size // 2
    centres = roi[:, half : half + ny, half : half + nx].reshape(b, -1)
    uncertain = (centres == UNCERTAIN).float()
    enough = uncertain.sum(1, keepdim=True) >= num_crops
    weights = torch.where(enough, uncertain, torch.ones_like(uncertain))
    if generator is not None and generator.device != weights.device:
        weights = weights.to(generator.device)  # sample where the generator lives, return on roi's device
    idx = torch.multinomial(weights, num_crops, replacement=ny * nx < num_crops, generator=generator)
    idx = idx.to(roi.device)
    return idx // nx, idx % nx


def extract_crops(images: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Gather crops: images (B, ..., H, W) (any channel dims) and corners (B, n) -> (B, n, ..., s, s)."""
    b, n = y0.shape
    ar = torch.arange(crop_size, device=images.device)
    rows = (y0.to(images.device)[:, :, None] + ar)[:, :, :, None]  # (B, n, s, 1)
    cols = (x0.to(images.device)[:, :, None] + ar)[:, :, None, :]  # (B, n, 1, s)
    bi = torch.arange(b, device=images.device)[:, None, None, None]
    moved = images.movedim((-2, -1), (1, 2))  # (B, H, W, ...)
    out = moved[bi, rows, cols]  # (B, n, s, s, ...)
    return out.movedim((2, 3), (-2, -1))


def crop_tags(roi_crops: torch.Tensor, image_class: torch.Tensor, num_classes: int,
              threshold: float = 0.2, uncertain_as_class: bool = True) -> torch.Tensor:
    """Tags (B, n) of local crops from their ROI crops (B, n, s, s) (method §2.4).

    ``image_class`` (B,) is :func:`single_roi_class`; in a single-class image uncertain pixels count
    as that class (the paper; ``uncertain_as_class=False``: they never count as a class, so a crop
    needs confident pixels of a class to take its tag). Fraction of foreground-or-uncertain pixels
    <= ``threshold`` -> 0; else exactly one class inside -> that class; else -> -1.
    """
    b, n = roi_crops.shape[:2]
    single = image_class.view(b, 1, 1, 1)
    if not uncertain_as_class:
        single = torch.full_like(single, -1)
    effective = torch.where((roi_crops == UNCERTAIN) & (single > 0), single, roi_crops)
    active = ((roi_crops >= 1) & (roi_crops != IGNORE)) | (roi_crops == UNCERTAIN)
    fraction = active.flatten(2).float().mean(2)
    present = class_presence(effective.reshape(b * n, -1), num_classes).view(b, n, num_classes)
    count = present.sum(2)
    which = present.float().argmax(2) + 1
    tag = torch.where(count == 1, which, -1)
    return torch.where(fraction <= threshold, 0, tag)


def decompose(
    student_view: torch.Tensor,
    teacher_view: torch.Tensor,
    roi: torch.Tensor,
    num_classes: int,
    num_crops: int,
    crop_size: int,
    threshold: float = 0.2,
    generator: torch.Generator | None = None,
    uncertain_as_class: bool = True,
) -> dict[str, torch.Tensor]:
    """Method §2.4: local crops at the same positions from both views, with their tags (:func:`crop_tags`).

    Returns ``student`` and ``teacher`` crops (B*n, 3, s, s) image-major, ``tags`` (B, n) long,
    ``global_tags`` (B,) long (the image's single ROI class or -1) and ``y0``/``x0`` (B, n).
    """
    y0, x0 = sample_crop_positions(roi, num_crops, crop_size, generator)
    both = torch.cat([student_view, teacher_view], dim=1)
    crops = extract_crops(both, y0, x0, crop_size)  # (B, n, 6, s, s)
    b, n = y0.shape
    image_class = single_roi_class(roi, num_classes)
    tags = crop_tags(extract_crops(roi, y0, x0, crop_size), image_class, num_classes, threshold, uncertain_as_class)
    c = student_view.shape[1]
    return {
        "student": crops[:, :, :c].reshape(b * n, c, crop_size, crop_size),
        "teacher": crops[:, :, c:].reshape(b * n, c, crop_size, crop_size),
        "tags": tags,
        "global_tags": image_class,
        "y0": y0,
        "x0": x0,
    }
