"""Batched views: one random view per image of a batch, each sample with its own random parameters.

Chapter 01 (``chapters/01_augmentation.py``) teaches it. :class:`BatchedViews` draws the
distribution of a :class:`~contrastive_lab.views.recipes.ViewRecipe` as one vectorised call per
batch, on CPU or CUDA. (A v2 transform applied to a batch tensor draws one set of parameters for
the whole batch - every image would get the same crop and colours, which silently breaks
contrastive learning.) On CPU uint8/float32 batches the crop and colour steps run in the compiled
kernels of :mod:`contrastive_lab.views.native` when they are available; otherwise, and always on
the GPU, in the PyTorch ops of :mod:`contrastive_lab.views.ops`.
:meth:`BatchedViews.apply_reference` is the readable per-sample loop over
``torchvision.transforms.v2.functional`` ops, and the tests check that the fast path agrees.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from . import native
from .ops import (
    ViewParams,
    _as_float,
    _jitter_factor,
    _uniform,
    check_images,
    color_jitter,
    crop_resize_flip,
    gaussian_blur,
    grayscale_,
    normalize,
    sample_crop_boxes,
    to_float_images,
)
from .recipes import BRIGHTNESS, CONTRAST, SATURATION, ViewRecipe, _as_recipe


class BatchedViews:
    """One random view per image of a batch, with per-sample random parameters.

    ``views = BatchedViews("simclr_cifar"); v1, v2 = views(x, g), views(x, g)`` where ``x`` is
    a uint8 (or [0, 1] float) B x 3 x H x W tensor on CPU or CUDA; each output is a normalised
    float B x 3 x size x size tensor on the same device. ``sample_params`` + ``apply`` split the
    call so tests can fix parameters; ``apply_reference`` is the same map as a per-sample loop
    over ``torchvision.transforms.v2.functional`` ops.

    ``native`` chooses how crop/resize/flip and colour jitter + grayscale run on CPU uint8 or float32
    batches: ``None`` (default) uses the compiled kernels of :mod:`contrastive_lab.views.native` when
    they are available (the same map to float rounding; the whole call ~3x faster at CIFAR sizes;
    ``$CONTRASTIVE_LAB_NATIVE`` switches them off or makes them required), ``False`` always runs the
    PyTorch functions of :mod:`contrastive_lab.views.ops`, ``True`` requires the kernels. GPU and
    float64 batches always use PyTorch. Blur and normalisation are PyTorch in every case.
    """

    def __init__(self, recipe: ViewRecipe | str, native: bool | None = None) -> None:
        if native not in (None, True, False):
            raise ValueError(f"native must be None (auto), True or False, got {native!r}.")
        self.recipe = _as_recipe(recipe)
        self.native = native

    def __repr__(self) -> str:
        return f"BatchedViews({self.recipe!r}, native={self.native!r})"

    def sample_params(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> ViewParams:
        """Draw the parameters of ``batch`` views of H x W images (distributions: see
        :class:`ViewRecipe`). Sampling runs on the generator's device (CPU by default, so a
        CPU generator gives the same views on any device); the result is moved to ``device``."""
        for name, v in (("batch", batch), ("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        r, dev = self.recipe, generator.device if generator is not None else torch.device("cpu")
        top, left, h, w = sample_crop_boxes(batch, height, width, r.crop_scale, r.crop_ratio, generator, dev)
        coins = torch.rand((4, batch), generator=generator, device=dev, dtype=torch.float64)
        b, c, s, hue_s = r.jitter
        params = ViewParams(
            top=top, left=left, height=h, width=w,
            flip=coins[0] < r.flip_p, jitter=coins[1] < r.jitter_p,
            brightness=_jitter_factor(b, batch, generator, dev),
            contrast=_jitter_factor(c, batch, generator, dev),
            saturation=_jitter_factor(s, batch, generator, dev),
            hue=_uniform((batch,), -hue_s, hue_s, generator, dev),
            order=torch.rand((batch, 4), generator=generator, device=dev).argsort(dim=1),
            gray=coins[2] < r.gray_p, blur=coins[3] < r.blur_p,
            sigma=_uniform((batch,), r.blur_sigma[0], r.blur_sigma[1], generator, dev),
        )
        return params.to(device)

    def _check(self, x: Tensor, params: ViewParams) -> None:
        """Raise a clear error unless ``params`` has one row per image and every crop box lies inside it."""
        if not isinstance(params, ViewParams):
            raise TypeError(f"params must be a ViewParams, got {type(params).__name__}.")
        if len(params) != x.shape[0]:
            raise ValueError(f"params are for {len(params)} images but the batch has {x.shape[0]}.")
        _, _, h, w = x.shape
        bad = ((params.top < 0) | (params.left < 0) | (params.height < 1) | (params.width < 1)
               | (params.top + params.height > h) | (params.left + params.width > w))
        if bool(bad.any()):
            raise ValueError(f"crop boxes of samples {torch.nonzero(bad).flatten().tolist()} "
                             f"leave the {h} x {w} image.")

    def apply(self, images: Tensor, params: ViewParams) -> Tensor:
        """Vectorised views of ``images`` with fixed ``params``: crop/resize/flip -> jitter ->
        grayscale -> blur (only the blurred samples) -> normalise."""
        check_images(images)
        self._check(images, params)
        return self._apply(images, params.to(images.device))

    def _apply(self, images: Tensor, params: ViewParams) -> Tensor:
        r = self.recipe
        if self._use_native(images):
            x = native.crop_resize_flip(images, params.top, params.left, params.height, params.width,
                                        params.flip, r.size)
            factors = torch.stack((params.brightness, params.contrast, params.saturation, params.hue), dim=1)
            native.colour_jitter_gray_(x, params.jitter, params.order, factors, params.gray, r.gray_before_jitter)
        else:
            x = self._crop_and_colour(_as_float(images), params)
        idx = torch.nonzero(params.blur).flatten()
        if idx.numel():
            x[idx] = gaussian_blur(x[idx], params.sigma[idx], r.blur_kernel_size)
        return normalize(x, r.mean, r.std)

    def _crop_and_colour(self, x: Tensor, params: ViewParams) -> Tensor:
        """The PyTorch path: crop/resize/flip, then colour jitter and grayscale in the recipe's order."""
        r = self.recipe
        x = crop_resize_flip(x, params, r.size)
        if r.gray_before_jitter:
            x = color_jitter(grayscale_(x, params.gray), params)
        else:
            x = grayscale_(color_jitter(x, params), params.gray)
        return x

    def _use_native(self, images: Tensor) -> bool:
        """Run the compiled crop and colour kernels on this batch? (See the class docstring.)"""
        if self.native is False:
            return False
        if not native.supports(images):
            if self.native:
                raise ValueError(f"BatchedViews(native=True) needs uint8 or float32 images on the CPU, got "
                                 f"{images.dtype} on {images.device}; pass native=None to use PyTorch there.")
            return False
        if self.native:
            return True  # colour_jitter_gray_ raises a clear error if the kernel cannot be built
        return native.available()

    def apply_reference(self, images: Tensor, params: ViewParams) -> Tensor:
        """Readable per-sample loop over torchvision's functional ops, same map as :meth:`apply`."""
        x = to_float_images(images)
        self._check(x, params)
        p = params.to("cpu")
        return torch.stack([self._one_reference(x[i], p, i) for i in range(len(p))])

    def _one_reference(self, img: Tensor, p: ViewParams, i: int) -> Tensor:
        """Sample ``i``'s view of ``img`` (3 x H x W floats) by torchvision's functional ops, in the pipeline's order."""
        r = self.recipe
        out = TF.resized_crop(img, int(p.top[i]), int(p.left[i]), int(p.height[i]), int(p.width[i]),
                              [r.size, r.size], antialias=True)
        if p.flip[i]:
            out = TF.horizontal_flip(out)
        if r.gray_before_jitter and p.gray[i]:
            out = TF.rgb_to_grayscale(out, num_output_channels=3)
        if p.jitter[i]:
            out = self._jitter_reference(out, p, i)
        if not r.gray_before_jitter and p.gray[i]:
            out = TF.rgb_to_grayscale(out, num_output_channels=3)
        if p.blur[i]:
            k, s = r.blur_kernel_size, float(p.sigma[i])
            out = TF.gaussian_blur(out, [k, k], [s, s])
        return TF.normalize(out, list(r.mean), list(r.std))

    @staticmethod
    def _jitter_reference(img: Tensor, p: ViewParams, i: int) -> Tensor:
        """torchvision ColorJitter.transform with this sample's factors and op order."""
        for op in p.order[i].tolist():
            if op == BRIGHTNESS:
                img = TF.adjust_brightness(img, float(p.brightness[i]))
            elif op == CONTRAST:
                img = TF.adjust_contrast(img, float(p.contrast[i]))
            elif op == SATURATION:
                img = TF.adjust_saturation(img, float(p.saturation[i]))
            elif float(p.hue[i]) != 0.0:
                img = TF.adjust_hue(img, float(p.hue[i]))
        return img

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Sample parameters for this batch and apply them (one random view per image)."""
        check_images(images)
        params = self.sample_params(images.shape[0], images.shape[2], images.shape[3], generator,
                                    device=images.device)
        return self._apply(images, params)
