"""The classifier's host augmentation against torchvision, op by op at fixed parameters: on PIL images (the path
whose PIL calls bobjax makes) the pixels are equal (the blur within one level), and torchvision's tensor path is
within the tolerances docs/pipeline.md states. Then the draws: RandomResizedCrop's boxes against torchvision's
sampler, the probabilities of the random ops (binomial intervals), and determinism by (seed, step, row)."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import autoaugment
from torchvision.transforms import functional as TF

from bobjax.classify import augment, randaugment

BICUBIC = TF.InterpolationMode.BICUBIC
ALL_OFF = augment.AugmentSpec(image_size=32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_prob=0.0,
                              grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0, flip=False)


def _photo(height=120, width=96, seed=0) -> np.ndarray:
    """Smooth colour gradients plus noise: a photograph's statistics more than uniform noise has."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([128 + 100 * np.sin(x / 7.0) * np.cos(y / 11.0), 128 + 90 * np.cos((x + y) / 9.0),
                      60 + 50 * np.sin(y / 5.0)], -1)
    return np.clip(image + np.random.default_rng(seed).normal(0, 12, image.shape), 0, 255).astype(np.uint8)


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def _levels(image) -> np.ndarray:
    """A PIL image or a CHW uint8 tensor -> int HWC levels."""
    if isinstance(image, torch.Tensor):
        image = image.permute(1, 2, 0).numpy()
    return np.asarray(image).astype(np.int64)


JITTER = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
ORDER, FACTORS = [2, 0, 3, 1], (1.3, 0.7, 1.15, -0.07)


def _jitter(image):
    for i in ORDER:
        image = JITTER[i](image, FACTORS[i])
    return image


# (ours on a PIL image, torchvision on a PIL image or tensor, max level difference on the tensor path, mean on it)
OPS = {
    "resized crop (box 80x70 at (10, 7) -> 64, bicubic)": (
        lambda x: augment.resized_crop(x, (10, 7, 80, 70), 64),
        lambda x: TF.resized_crop(x, 10, 7, 80, 70, [64, 64], BICUBIC, antialias=True), 4, 0.3),
    "colour jitter (fixed order and factors)": (lambda x: augment.color_jitter(x, ORDER, FACTORS), _jitter, 10, 0.7),
    "gaussian blur (23 taps, sigma 1.3)": (
        lambda x: augment.gaussian_blur(x, 23, 1.3), lambda x: TF.gaussian_blur(x, [23, 23], [1.3, 1.3]), 1, 0.001),
    "grayscale": (lambda x: x.convert("L").convert("RGB"), lambda x: TF.rgb_to_grayscale(x, 3), 1, 0.6),
    "horizontal flip": (lambda x: x.transpose(Image.Transpose.FLIP_LEFT_RIGHT), TF.hflip, 0, 0.0),
    "solarize 128": (lambda x: augment.ImageOps.solarize(x, 128), lambda x: TF.solarize(x, 128), 0, 0.0),
}


@pytest.mark.parametrize("name", list(OPS))
def test_op_matches_torchvisions_pil_path_exactly_and_its_tensor_path_within_tolerance(name):
    ours, theirs, max_tensor, mean_tensor = OPS[name]
    image = _photo()
    got = _levels(ours(Image.fromarray(image)))
    pil_difference = np.abs(got - _levels(theirs(Image.fromarray(image))))
    # The blur's two 1-D passes round in float32 otherwise than torch's 2-D convolution: one level, rarely.
    assert pil_difference.max() <= (1 if "blur" in name else 0) and pil_difference.mean() < 1e-3, name
    tensor_difference = np.abs(got - _levels(theirs(_tensor(image))))
    assert tensor_difference.max() <= max_tensor and tensor_difference.mean() <= mean_tensor, \
        (name, tensor_difference.max(), tensor_difference.mean())


def _randaugment_cases():
    return [(name, sign) for name in randaugment.OPERATIONS for sign in (1.0, -1.0)]


@pytest.mark.parametrize("name,sign", _randaugment_cases())
def test_randaugment_operation_at_magnitude_9_is_torchvisions(name, sign):
    """torchvision's RandAugment() (2 ops, magnitude 9 of 31 bins, nearest warps, black fill): its own table of
    magnitudes and its ``_apply_op`` on a PIL image."""
    image = Image.fromarray(_photo(48, 40))
    magnitudes, signed = autoaugment.RandAugment()._augmentation_space(31, (image.height, image.width))[name]
    magnitude = float(magnitudes[randaugment.MAGNITUDE]) if magnitudes.ndim else 0.0
    want = autoaugment._apply_op(image, name, magnitude * (sign if signed else 1.0),
                                 interpolation=TF.InterpolationMode.NEAREST, fill=None)
    np.testing.assert_array_equal(_levels(randaugment.OPERATIONS[name](image, sign)), _levels(want))


def test_randaugment_draws_two_of_the_fourteen_operations():
    image = Image.fromarray(_photo(32, 32))
    out = [_levels(randaugment.rand_augment(np.random.default_rng(seed), image)) for seed in range(60)]
    assert len({o.tobytes() for o in out}) > 40  # 14 x 14 x 4 signed choices: most draws differ


def test_crop_boxes_follow_torchvisions_sampler():
    """Area fraction and aspect ratio of the boxes: two-sample Kolmogorov-Smirnov against
    ``RandomResizedCrop.get_params`` (scale 0.25-1), every box inside the image."""
    spec = augment.AugmentSpec(image_size=224)
    height, width, n = 300, 400, 1500
    rng = np.random.default_rng(0)
    ours = [augment.crop_box(rng, height, width, spec) for _ in range(n)]
    torch.manual_seed(0)
    theirs = [RandomResizedCrop.get_params(torch.zeros(3, height, width), [0.25, 1.0], [3 / 4, 4 / 3])
              for _ in range(n)]
    for top, left, h, w in ours:
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
    features = (lambda b: b[2] * b[3] / (height * width), lambda b: b[3] / b[2],
                lambda b: b[0] / (height - b[2] + 1))
    for feature in features:
        assert stats.ks_2samp([feature(b) for b in ours], [feature(b) for b in theirs]).pvalue > 1e-3


def test_crop_box_falls_back_to_torchvisions_centre_crop():
    """A 6 x 100 image fits no box of the sampled sizes: both take the centre crop at the widest allowed ratio."""
    spec = augment.AugmentSpec(image_size=8, crop_scale=(0.9, 1.0))
    want = RandomResizedCrop.get_params(torch.zeros(3, 6, 100), [0.9, 1.0], [3 / 4, 4 / 3])
    assert augment.crop_box(np.random.default_rng(0), 6, 100, spec) == tuple(want) == (0, 46, 6, 8)


def _flat(n=400):
    flat = np.full((32, 32, 3), 90, np.uint8)
    flat[..., 0] = 200  # A coloured image: grayscale and solarize change it visibly.
    return flat, n


@pytest.mark.parametrize("field,prob,predicate", [
    ("grayscale_prob", 0.2, lambda o: np.array_equal(o[..., 0], o[..., 1])),
    ("solarize_prob", 0.2, lambda o: o[..., 0].mean() < 128),  # red 200 >= 128 -> 55
    ("jitter_prob", 0.8, lambda o: not np.array_equal(o[0, 0], [200, 90, 90])),
])
def test_probabilities_within_binomial_interval(field, prob, predicate):
    spec = augment.AugmentSpec(**{**ALL_OFF.__dict__, field: prob})
    flat, n = _flat()
    hits = sum(predicate(augment.augment_image(augment.row_rng(3, 0, row), flat, spec)) for row in range(n))
    low, high = stats.binom.interval(0.999, n, prob)
    assert low <= hits <= high, f"{field}: {hits}/{n} outside [{low}, {high}]"


def test_flip_probability_within_binomial_interval():
    image, n = _photo(32, 32), 400
    spec = augment.AugmentSpec(**{**ALL_OFF.__dict__, "flip": True})
    flips = sum(np.array_equal(augment.augment_image(augment.row_rng(0, 1, row), image, spec), image[:, ::-1])
                for row in range(n))
    low, high = stats.binom.interval(0.999, n, 0.5)
    assert low <= flips <= high


def test_augmentation_is_a_function_of_seed_step_and_row():
    image = _photo(40, 40)
    spec = augment.AugmentSpec(image_size=32, randaugment=True)
    first = augment.augment_image(augment.row_rng(0, 5, 3), image, spec)
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, augment.augment_image(augment.row_rng(0, 5, 3), image, spec))
    for other in [(1, 5, 3), (0, 6, 3), (0, 5, 4), (0, 5, 3, 1)]:
        assert not np.array_equal(first, augment.augment_image(augment.row_rng(*other), image, spec)), other


def test_augment_off_is_the_identity_on_the_host_image():
    image = _photo(32, 32)
    np.testing.assert_array_equal(augment.augment_image(augment.row_rng(0, 0, 0), image, ALL_OFF), image)


def test_resize_and_center_crop_matches_pil():
    from bobjax.data.image_ops import resize_and_center_crop

    image = np.random.default_rng(0).integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
    out = resize_and_center_crop(image, 20)
    resized = np.asarray(Image.fromarray(image).resize((33, 20), Image.BICUBIC))
    np.testing.assert_array_equal(out, resized[:, 6:26])
