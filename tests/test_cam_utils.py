"""CAM utilities, PAR and decomposition on crafted tensors."""

from __future__ import annotations

import pytest
import torch
from _model_helpers import single_thread, tiny_model_config  # noqa: F401

from seco_deploy import cam as camlib
from seco_deploy.model.network import SeCoNet
from seco_deploy.model.par import OFFSETS, PAR, neighbour_views


@pytest.fixture(scope="module")
def net() -> SeCoNet:
    torch.manual_seed(0)
    return SeCoNet(tiny_model_config(), 3)


# ---------------------------------------------------------------------------- multi-scale CAMs
def test_normalise_cam_range() -> None:
    cam = torch.tensor([[[[2.0, 4.0], [6.0, 10.0]]]])
    out = camlib.normalise_cam(cam)
    assert torch.allclose(out, torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]]]) * 8 / (8 + 1e-5))
    flat = camlib.normalise_cam(torch.full((1, 1, 2, 2), 3.0))
    assert float(flat.max()) == 0.0  # constant map -> 0, no division by zero


def test_multi_scale_cams_range_flip_symmetry_and_reuse(net: SeCoNet) -> None:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 64, 48, generator=g)
    cam, cam_aux = camlib.multi_scale_cams(net, images, (1.0, 0.5))
    assert cam.shape == cam_aux.shape == (2, 3, 64, 48)
    for m in (cam, cam_aux):
        assert float(m.min()) >= 0.0 and float(m.max()) < 1.0
        assert torch.allclose(m.amin(dim=(-2, -1)), torch.zeros(2, 3))
        assert torch.allclose(m.amax(dim=(-2, -1)), torch.ones(2, 3), atol=1e-4)
    # max(image, un-flipped flip) is symmetric: the CAMs of the flipped image are the flipped CAMs
    cam_f, _ = camlib.multi_scale_cams(net, images.flip(-1), (1.0, 0.5))
    assert torch.allclose(cam_f, cam.flip(-1), atol=1e-5)
    # reusing the student's scale-1 maps gives the same result as encoding the image again
    with torch.no_grad():
        _, feats, feats_aux = net.encoder(images)
        known = net.cam_maps(feats, feats_aux)
    cam_r, cam_aux_r = camlib.multi_scale_cams(net, images, (1.0, 0.5), known_scale1=known)
    assert torch.allclose(cam_r, cam, atol=1e-5) and torch.allclose(cam_aux_r, cam_aux, atol=1e-5)


# ---------------------------------------------------------------------------- CAM -> labels
def _crafted_cam() -> tuple[torch.Tensor, torch.Tensor]:
    # 1 image, 3 classes, 1x5 pixels; class 3 is absent from the labels
    cam = torch.tensor(
        [
            [[0.9, 0.5, 0.1, 0.3, 0.0]],  # class 1
            [[0.2, 0.6, 0.0, 0.8, 0.0]],  # class 2
            [[1.0, 1.0, 1.0, 1.0, 1.0]],  # class 3 (absent)
        ]
    )[None]
    return cam, torch.tensor([[1.0, 1.0, 0.0]])


def test_three_way_label_and_roi_mask_by_hand() -> None:
    cam, labels = _crafted_cam()
    box = torch.tensor([[0, 1, 0, 4]])  # last pixel outside
    roi = camlib.roi_mask(cam, labels, box, high_thre=0.7, low_thre=0.25)
    # best present: (0.9, c1) -> 1; (0.6, c2) uncertain; (0.1) -> 0; (0.8, c2) -> 2; outside -> 255
    assert roi.tolist() == [[[1, -1, 0, 2, 255]]]
    ptc = camlib.cam_to_three_way(cam, labels, 0.7, 0.25, box)
    assert ptc.tolist() == [[[1, 255, 0, 2, 255]]]
    pseudo = camlib.cam_to_label(cam, labels, bkg_thre=0.5, img_box=None)
    assert pseudo.tolist() == [[[1, 2, 0, 2, 0]]]


def test_box_mask() -> None:
    m = camlib.box_mask(torch.tensor([[1, 3, 0, 2]]), 1, 4, 3, torch.device("cpu"))
    assert m.int().tolist() == [[[0, 0, 0], [1, 1, 0], [1, 1, 0], [0, 0, 0]]]


def test_ptc_label_resizes_box_to_feature_cells() -> None:
    cam = torch.ones(1, 1, 8, 8)
    lab = camlib.ptc_label(cam, torch.ones(1, 1), torch.tensor([[0, 8, 0, 5]]), (2, 2), 0.7, 0.25)
    # cells are 4x4 pixels: the right cell column has 1/4 of its pixels in the box -> ignored
    assert lab.tolist() == [[[1, 255], [1, 255]]]


# ---------------------------------------------------------------------------- PAR
def test_par_leaves_a_constant_mask_on_a_constant_image_unchanged() -> None:
    par = PAR((1, 2), num_iter=5)
    images = torch.full((1, 3, 12, 12), 0.4)
    masks = torch.stack([torch.full((12, 12), 0.3), torch.full((12, 12), 0.7)])[None]
    assert torch.allclose(par(images, masks), masks, atol=1e-6)


def test_par_affinity_prefers_same_colour_neighbours() -> None:
    par = PAR((1,), num_iter=1)
    images = torch.zeros(1, 3, 5, 6)
    images[..., 3:] = 1.0  # colour edge between columns 2 and 3
    aff = par.affinity(images)[0, 0, :, 2, 2]  # pixel (2, 2), left of the edge; neighbour order OFFSETS
    assert torch.allclose(aff.sum(), torch.tensor(1.0))
    same = aff[[0, 1, 3, 5, 6]]  # up-left, up, left, down-left, down
    across = aff[[2, 4, 7]]  # up-right, right, down-right
    assert float(same.min()) > 10 * float(across.max())
    # so a mask bleeding one column over the edge is pulled back to it
    masks = torch.zeros(1, 2, 5, 6)
    masks[:, 0, :, :4] = 1.0
    masks[:, 1] = 1.0 - masks[:, 0]
    refined = PAR((1,), num_iter=3)(images, masks)
    assert refined.argmax(1)[0, :, 3].tolist() == [1] * 5


# ---------------------------------------------------------------------------- refined pseudo label
def test_refined_pseudo_label_high_low_and_box() -> None:
    # class 1 CAM: 1.0 in columns 0-7 (confident), 0.5 in 8-15 (uncertain), 0 in 16-23 (background)
    cam = torch.zeros(1, 2, 16, 24)
    cam[0, 0, :, :8], cam[0, 0, :, 8:16] = 1.0, 0.5
    cam[0, 1] = 1.0  # class 2 is absent from the labels: ignored
    labels = torch.tensor([[1.0, 0.0]])
    box = torch.tensor([[0, 16, 0, 22]])
    images = torch.zeros(1, 3, 16, 24)
    out = camlib.refined_pseudo_label(images, cam, labels, box, PAR((1, 2), 0), 0.7, 0.25)
    # high (bkg 0.7): 1 > 0.7 fg, 0.5 < 0.7 bg; low (bkg 0.25): 0.5 > 0.25 fg -> uncertain -> 255
    assert out[0, :, :7].unique().tolist() == [1]
    assert out[0, :, 9:15].unique().tolist() == [255]
    assert out[0, :, 17:22].unique().tolist() == [0]
    assert out[0, :, 22:].unique().tolist() == [255]  # outside the box
    refined = camlib.refined_pseudo_label(images, cam, labels, box, PAR((1, 2), 3), 0.7, 0.25)
    assert refined[0, :, :5].unique().tolist() == [1] and refined[0, :, 18:21].unique().tolist() == [0]


def test_refined_pseudo_label_vectorised_over_different_class_counts() -> None:
    cam = torch.zeros(2, 3, 8, 8)
    cam[0, 2, :, :4] = 1.0  # image 0: class 3 only
    cam[1, 0, :4], cam[1, 1, 4:] = 1.0, 1.0  # image 1: classes 1 (top) and 2 (bottom)
    labels = torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    out = camlib.refined_pseudo_label(torch.zeros(2, 3, 8, 8), cam, labels, None, PAR((1,), 0), 0.7, 0.25)
    assert out[0, :, :3].unique().tolist() == [3] and out[0, :, 5:].unique().tolist() == [0]
    assert out[1, :3].unique().tolist() == [1] and out[1, 5:].unique().tolist() == [2]


# ---------------------------------------------------------------------------- decomposition
def test_crop_tags_on_crafted_roi_crops() -> None:
    s = 5  # 25 pixels: 5 active pixels = 0.2 exactly
    crops = torch.zeros(2, 6, s, s, dtype=torch.long)
    crops[0, 1, 0, :5] = 2  # fraction 0.2 -> background
    crops[0, 2, 0, :5], crops[0, 2, 1, 0] = 2, 2  # fraction 0.24, one class -> 2
    crops[0, 3, 0, :3], crops[0, 3, 1, :3] = 1, 2  # two classes -> -1
    crops[0, 4, :2] = -1  # uncertain only, multi-class image -> no class -> -1
    crops[0, 5, :3] = 255  # outside the box is not foreground -> 0
    crops[1, 0, :2] = -1  # single-class image (class 3): uncertain counts as 3
    crops[1, 1, :2] = -1
    crops[1, 1, 4, :] = 3
    image_class = torch.tensor([-1, 3])
    tags = camlib.crop_tags(crops, image_class, num_classes=3, threshold=0.2)
    assert tags[0].tolist() == [0, 0, 2, -1, -1, 0]
    assert tags[1, :2].tolist() == [3, 3]
    # uncertain_as_class=False: the single-class image's uncertain-only crop has no class (-1); the crop
    # with confident pixels of 3 keeps its tag; the multi-class image is unchanged.
    strict = camlib.crop_tags(crops, image_class, num_classes=3, threshold=0.2, uncertain_as_class=False)
    assert strict[0].tolist() == tags[0].tolist()
    assert strict[1, :2].tolist() == [-1, 3]


def test_single_roi_class_tags_global_views() -> None:
    roi = torch.tensor([[[0, 2, -1, 255]], [[1, 3, 0, -1]], [[0, -1, 255, 0]]])
    assert camlib.single_roi_class(roi, 3).tolist() == [2, -1, -1]


def test_crop_positions_centre_on_uncertain_pixels_and_are_reproducible() -> None:
    roi = torch.zeros(2, 20, 20, dtype=torch.long)
    spots = [(6, 7), (10, 10), (12, 5), (13, 14)]
    for y, x in spots:
        roi[0, y, x] = -1
    roi[1, 10, 10] = -1  # fewer than n uncertain: any centre
    y0, x0 = camlib.sample_crop_positions(roi, 3, 8, torch.Generator().manual_seed(0))
    centres = {(int(y) + 4, int(x) + 4) for y, x in zip(y0[0], x0[0], strict=True)}
    assert len(centres) == 3 and centres <= set(spots)
    assert int(y0.max()) <= 12 and int(x0.max()) <= 12  # crops fit
    y0b, x0b = camlib.sample_crop_positions(roi, 3, 8, torch.Generator().manual_seed(0))
    assert torch.equal(y0, y0b) and torch.equal(x0, x0b)


def test_decompose_cuts_both_views_at_the_same_positions() -> None:
    g = torch.Generator().manual_seed(3)
    student = torch.randn(2, 3, 16, 16, generator=g)
    roi = torch.zeros(2, 16, 16, dtype=torch.long)
    roi[:, 4:12, 4:12] = -1
    roi[0, 0, 0] = 2
    out = camlib.decompose(student, student + 1.0, roi, 3, 4, 6, 0.2, torch.Generator().manual_seed(0))
    assert out["student"].shape == (8, 3, 6, 6)
    assert torch.allclose(out["teacher"], out["student"] + 1.0)
    y0, x0 = out["y0"], out["x0"]
    for b in range(2):
        for i in range(4):
            y, x = int(y0[b, i]), int(x0[b, i])
            assert torch.equal(out["student"][b * 4 + i], student[b, :, y : y + 6, x : x + 6])
    assert out["global_tags"].tolist() == [2, -1]
    # image 0 has one class (2): its uncertain pixels count as 2 -> crops on them are tagged 2
    assert out["tags"][0].tolist() == [2, 2, 2, 2]
    assert out["tags"][1].tolist() == [-1, -1, -1, -1]  # no class: uncertain-only crops are ambiguous


def test_par_affinity_is_the_formula_over_stacked_neighbours() -> None:
    # The module docstring's formula, written out over a stacked (N, C, K, H, W) tensor.
    torch.manual_seed(0)
    dilations = (1, 2, 3)
    par = PAR(dilations, num_iter=1)
    images = torch.randn(2, 3, 9, 11)
    nb = torch.stack(neighbour_views(images, dilations), dim=2)
    std = nb.std(dim=2, keepdim=True)
    logits = -(((nb - images.unsqueeze(2)).abs() / (std + 1e-8) / par.w_colour) ** 2).mean(dim=1, keepdim=True)
    expected = (torch.softmax(logits, dim=2) + par.w_pos * par.pos_weight.view(1, 1, -1, 1, 1)) / (1 + par.w_pos)
    assert torch.allclose(par.affinity(images), expected, rtol=1e-5, atol=1e-7)
    # Neighbour k of pixel (y, x) is the pixel at (y + dy * d, x + dx * d), clamped at the border.
    d, (dy, dx) = 2, OFFSETS[2]
    view = neighbour_views(images, dilations)[8 + 2]
    assert torch.equal(view[0, :, 4, 10], images[0, :, 4 + dy * d, min(10 + dx * d, 10)])
