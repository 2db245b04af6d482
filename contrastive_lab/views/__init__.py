"""Views: the data augmentation of contrastive learning. Chapter 01 (``chapters/01_augmentation.py``)
teaches it.

A contrastive method sees two random *views* of every image and learns to tell that they
come from the same image. Which views it sees is the single most important design choice
(SimCLR, Chen et al. 2020, Sec. 3 and Fig. 5): random crop + colour distortion is the key
pair. This package gives

* :class:`ViewRecipe` - the distribution of views, with the parameters of the papers
  (:func:`simclr_imagenet`, :func:`simclr_cifar`, :func:`moco_v1`, :func:`moco_v2`, :func:`byol`,
  registry :data:`RECIPES`, :func:`get_recipe`);
* :func:`build_torchvision_pipeline` - that distribution as a per-image
  ``torchvision.transforms.v2`` pipeline, for DataLoader workers;
* :class:`BatchedViews` - the same distribution as one vectorised call per batch, on CPU
  or CUDA, with its own random parameters for *every* sample. (A v2 transform applied to a
  batch tensor draws one set of parameters for the whole batch - every image would get the
  same crop and colours, which silently breaks contrastive learning.)

Pipeline order (SimCLR App. A; MoCo v2 repo): crop+resize -> flip -> colour jitter (random
op order, applied with probability ``jitter_p``) -> grayscale -> blur -> normalise. Flip
commutes with everything after it, so its place does not change the distribution. MoCo v1's
repo converts to grayscale *before* the jitter; ``gray_before_jitter`` reproduces that.

All colour ops follow ``torchvision.transforms.v2.functional`` on float images in [0, 1]
(clamped after each op); :meth:`BatchedViews.apply_reference` is the readable per-sample
loop over those functional ops, and the tests check that the vectorised path agrees.

Where each part lives:

==================  ===========================================================================
``recipes``         constants, :class:`ViewRecipe`, the paper recipes, the torchvision pipeline
``ops``             :class:`ViewParams` and the per-sample batched ops (crop, colour, blur, ...)
``batched``         :class:`BatchedViews`: sample parameters, apply them (fast path + reference)
``native``          the compiled C twins of the crop and colour ops (``csrc/crop.c``, ``colour.c``)
``compare``         :func:`ks_statistic`: do two view samplers draw the same distribution?
==================  ===========================================================================

Imports flow one way: ``ops`` uses ``recipes``; ``batched`` uses ``recipes``, ``ops`` and ``native``;
``native`` uses only :mod:`contrastive_lab.runtime`; ``compare`` stands alone.
"""

from . import native
from .batched import BatchedViews
from .compare import ks_critical, ks_statistic
from .ops import (
    CROP_ATTEMPTS,
    ViewParams,
    adjust_hue,
    blur_matrices,
    check_images,
    color_jitter,
    colour_affine,
    crop_resize_flip,
    gaussian_blur,
    gaussian_kernels,
    grayscale_,
    normalize,
    resize_weights,
    rgb_to_gray,
    sample_crop_boxes,
    to_float_images,
)
from .recipes import (
    BRIGHTNESS,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CONTRAST,
    GRAY_WEIGHTS,
    HUE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RECIPES,
    SATURATION,
    ViewRecipe,
    build_torchvision_pipeline,
    get_recipe,
    moco_v1,
    moco_v2,
    simclr_cifar,
    simclr_imagenet,
    simclr_jitter,
)

__all__ = [
    "BRIGHTNESS",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CONTRAST",
    "CROP_ATTEMPTS",
    "GRAY_WEIGHTS",
    "HUE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RECIPES",
    "SATURATION",
    "BatchedViews",
    "ViewParams",
    "ViewRecipe",
    "adjust_hue",
    "blur_matrices",
    "build_torchvision_pipeline",
    "check_images",
    "color_jitter",
    "colour_affine",
    "crop_resize_flip",
    "gaussian_blur",
    "gaussian_kernels",
    "get_recipe",
    "grayscale_",
    "ks_critical",
    "ks_statistic",
    "moco_v1",
    "moco_v2",
    "native",
    "normalize",
    "resize_weights",
    "rgb_to_gray",
    "sample_crop_boxes",
    "simclr_cifar",
    "simclr_imagenet",
    "simclr_jitter",
    "to_float_images",
]
