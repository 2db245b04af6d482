"""Image CPC's patches (chapter 09's second half): an overlapping grid of patches, CPC v2's
per-patch augmentation, and the patch network that encodes each patch to a latent z.

van den Oord et al. 2018, Sec. 3.2: 64-px patches with stride 32 on 256-px images make a 7x7 grid;
Hénaff et al. 2020 (CPC v2), Sec. 4.1: LayerNorm in the patch network and per-patch augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ._checks import _check_fraction, _check_int


def grid_size(image_size: int, patch_size: int, stride: int) -> int:
    """Patches per side, G = (image_size - patch_size) / stride + 1; the grid must tile exactly.

    CPC (van den Oord et al. 2018, Sec. 3.2): 64-px patches, stride 32, 256-px image -> G = 7.
    The book's 32-px version: 8-px patches, stride 4 -> G = 7.
    """
    for name, value in (("image_size", image_size), ("patch_size", patch_size), ("stride", stride)):
        _check_int(value, name)
    if patch_size > image_size or (image_size - patch_size) % stride:
        raise ValueError(
            f"{patch_size}-px patches with stride {stride} do not tile a {image_size}-px image exactly: "
            f"need patch_size <= image_size and (image_size - patch_size) divisible by stride "
            f"(e.g. 8 and 4 for 32 px)"
        )
    return (image_size - patch_size) // stride + 1


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {shape}")
    if images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be square, got {images.shape[2]} x {images.shape[3]}")


def extract_patches(images: Tensor, patch_size: int, stride: int) -> Tensor:
    """(B, C, H, H) images -> (B, G, G, C, P, P) patches; patch (i, j) is the window at row i*S, column j*S.

    Two ``Tensor.unfold`` calls (views, no copy until the final reshape). With stride < patch
    size neighbouring patches overlap (8-px patches, stride 4: half of each patch is shared).
    """
    _check_images(images)
    grid_size(images.shape[-1], patch_size, stride)
    patches = images.unfold(2, patch_size, stride).unfold(3, patch_size, stride)  # B, C, G, G, P, P
    return rearrange(patches, "b c i j p q -> b i j c p q")


def extract_patches_reference(images: Tensor, patch_size: int, stride: int) -> Tensor:
    """:func:`extract_patches` with a double loop over the grid and plain slicing."""
    g = grid_size(images.shape[-1], patch_size, stride)
    rows = []
    for i in range(g):
        row = [
            images[:, :, i * stride : i * stride + patch_size, j * stride : j * stride + patch_size]
            for j in range(g)
        ]
        rows.append(torch.stack(row, dim=1))  # B, G(columns), C, P, P
    return torch.stack(rows, dim=1)  # B, G(rows), G(columns), C, P, P


@dataclass(frozen=True)
class PatchAugmentParams:
    """Random choices for N patches: ``shift`` (N, 2) int64 (dy, dx) of the crop window,
    ``flip`` (N,) bool, ``keep_channel`` (N,) int64: the one colour channel kept, -1 = keep all."""

    shift: Tensor
    flip: Tensor
    keep_channel: Tensor


class PatchAugment(nn.Module):
    """CPC v2's per-patch augmentation (Hénaff et al. 2020, Sec. 4.1, "RC" and "PA" in Fig. 3).

    Each patch independently gets, in this order:

    1. a random crop: the patch is zero-padded by ``max_shift`` pixels and a window of its own
       size is cut at a random offset (dy, dx) in [-max_shift, max_shift]^2 (zero = the dataset
       mean, since patches come from normalised images);
    2. a horizontal flip with probability ``flip_p``;
    3. colour dropping with probability ``color_drop_p``: two of the three channels are set to
       zero and one random channel is kept (CPC v2's "random color-dropping", from Doersch et
       al. 2015), so patches cannot be matched by colour statistics alone.

    Active only in training mode (``model.train()``); in eval mode the patches pass unchanged.
    ``sample_params`` + ``apply`` split the randomness from the map so tests can fix it;
    ``apply_reference`` is the same map as a loop over patches. Randomness comes from torch's
    global RNG (which the engine seeds and checkpoints) unless a generator is passed.
    """

    def __init__(self, flip_p: float = 0.5, color_drop_p: float = 0.5, max_shift: int = 1) -> None:
        super().__init__()
        self.flip_p = _check_fraction(flip_p, "flip_p")
        self.color_drop_p = _check_fraction(color_drop_p, "color_drop_p")
        self.max_shift = _check_int(max_shift, "max_shift", low=0)

    def extra_repr(self) -> str:
        return f"flip_p={self.flip_p}, color_drop_p={self.color_drop_p}, max_shift={self.max_shift}"

    def sample_params(
        self,
        n: int,
        channels: int = 3,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> PatchAugmentParams:
        dev = generator.device if generator is not None else torch.device(device)
        shift = torch.randint(-self.max_shift, self.max_shift + 1, (n, 2), generator=generator, device=dev)
        flip = torch.rand(n, generator=generator, device=dev) < self.flip_p
        drop = torch.rand(n, generator=generator, device=dev) < self.color_drop_p
        channel = torch.randint(channels, (n,), generator=generator, device=dev)
        keep = torch.where(drop, channel, torch.full_like(channel, -1))
        return PatchAugmentParams(shift.to(device), flip.to(device), keep.to(device))

    def _check(self, patches: Tensor, params: PatchAugmentParams) -> None:
        if patches.ndim != 4 or patches.shape[-1] != patches.shape[-2]:
            raise ValueError(f"patches must have shape (N, C, P, P), got {tuple(patches.shape)}")
        if len(params.flip) != len(patches):
            raise ValueError(f"params are for {len(params.flip)} patches but there are {len(patches)}")
        if bool((params.shift.abs() > self.max_shift).any()):
            raise ValueError(f"shifts must lie in [-{self.max_shift}, {self.max_shift}]")

    def apply(self, patches: Tensor, params: PatchAugmentParams) -> Tensor:
        """Vectorised crop -> flip -> colour drop of (N, C, P, P) patches with fixed params."""
        self._check(patches, params)
        n, channels, size, _ = patches.shape
        s = self.max_shift
        if s:  # crop: pixel (u, v) of the output is pixel (u + dy, v + dx) of the input (0 outside)
            padded = F.pad(patches, (s, s, s, s))
            rows = (params.shift[:, 0, None] + s + torch.arange(size, device=patches.device))[:, :, None]
            cols = (params.shift[:, 1, None] + s + torch.arange(size, device=patches.device))[:, None, :]
            batch = torch.arange(n, device=patches.device)[:, None, None]
            patches = rearrange(padded[batch, :, rows, cols], "n p q c -> n c p q")
        patches = torch.where(params.flip[:, None, None, None], patches.flip(-1), patches)
        channel = torch.arange(channels, device=patches.device)
        keep = (params.keep_channel[:, None] < 0) | (channel[None, :] == params.keep_channel[:, None])
        return patches * keep[:, :, None, None].to(patches.dtype)

    def apply_reference(self, patches: Tensor, params: PatchAugmentParams) -> Tensor:
        """:meth:`apply` as a loop over patches with padding, slicing, ``torch.flip`` and zeroing."""
        self._check(patches, params)
        out = []
        size, s = patches.shape[-1], self.max_shift
        for i, patch in enumerate(patches):
            dy, dx = (int(v) for v in params.shift[i])
            padded = F.pad(patch, (s, s, s, s))
            patch = padded[:, s + dy : s + dy + size, s + dx : s + dx + size]
            if params.flip[i]:
                patch = torch.flip(patch, dims=[-1])
            keep = int(params.keep_channel[i])
            if keep >= 0:
                patch = torch.stack([c if k == keep else torch.zeros_like(c) for k, c in enumerate(patch)])
            out.append(patch)
        return torch.stack(out)

    def forward(self, patches: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.training:
            return patches
        params = self.sample_params(len(patches), patches.shape[1], generator, device=patches.device)
        return self.apply(patches, params)


NORMS = ("layer", "batch", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    """'layer': GroupNorm with one group = LayerNorm over (C, H, W) of each patch on its own;
    'batch': BatchNorm2d, whose statistics mix all patches of all images in the batch."""
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class PatchConvNet(nn.Module):
    """The patch encoder g_enc: (N, 3, P, P) patches -> (N, D) vectors, D = round(128 * width).

    Three 3x3 convolutions (the second with stride 2) and a 1x1 convolution, each followed by a
    normalisation and ReLU, then the mean over the patch's positions. CPC uses a ResNet-v2-101 and
    mean-pools its output per 64-px patch (van den Oord et al. 2018, Sec. 3.2); this is a CPU-sized
    stand-in.
    ``norm='layer'`` is CPC v2's choice (Hénaff et al. 2020, Sec. 4.1): batch norm couples the
    patches through the batch statistics, which lets the model see past its causal mask
    (``norm='batch'`` is kept to demonstrate exactly that).
    """

    BASE = (32, 64, 128)

    def __init__(self, width: float = 1.0, norm: str = "layer", in_channels: int = 3) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise ValueError(
                f"width must be a number > 0 (it multiplies the channels {self.BASE}), got {width!r}"
            )
        c1, c2, c3 = (max(1, round(c * width)) for c in self.BASE)
        self.norm = norm

        def block(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
            conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
            return [conv, _norm(norm, cout), nn.ReLU()]

        self.net = nn.Sequential(
            *block(in_channels, c1), *block(c1, c2, stride=2), *block(c2, c2), *block(c2, c3, kernel=1)
        )
        self.feature_dim = c3

    def forward(self, patches: Tensor) -> Tensor:
        return self.net(patches).mean(dim=(2, 3))


class PatchGridEncoder(nn.Module):
    """Images -> a grid of patch latents, and the pooled image representation evaluation uses.

    * :meth:`patches`: (B, 3, H, H) -> (B, G, G, 3, P, P), the overlapping grid;
    * :meth:`encode_patches`: patches -> z (B, D, G, G), each patch encoded *independently*
      by ``patch_net`` (a module (N, 3, P, P) -> (N, D) with a ``feature_dim``);
    * :meth:`grid` = encode_patches(patches(x));
    * ``forward(x)`` = the mean of z over the grid, (B, D): CPC's linear evaluation pools the
      patch features spatially (van den Oord et al. 2018, Sec. 3.2; Hénaff et al. 2020, Sec. 2.2).

    ``forward`` is what the engine's kNN monitor and the linear probe call (``method.encoder``).
    """

    def __init__(self, patch_net: nn.Module, patch_size: int = 8, stride: int = 4) -> None:
        super().__init__()
        if not isinstance(getattr(patch_net, "feature_dim", None), int):
            raise TypeError("patch_net must be an nn.Module with an integer `feature_dim` (its output width)")
        self.patch_size, self.stride = _check_int(patch_size, "patch_size"), _check_int(stride, "stride")
        self.patch_net = patch_net
        self.feature_dim = patch_net.feature_dim

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, stride={self.stride}"

    def patches(self, images: Tensor) -> Tensor:
        return extract_patches(images, self.patch_size, self.stride)

    def encode_patches(self, patches: Tensor) -> Tensor:
        if patches.ndim != 6:
            raise ValueError(f"patches must have shape (B, G, G, C, P, P), got {tuple(patches.shape)}")
        b, rows, cols = patches.shape[:3]
        z = self.patch_net(patches.reshape(b * rows * cols, *patches.shape[3:]))  # one patch = one sample
        return rearrange(z, "(b i j) d -> b d i j", b=b, i=rows, j=cols)

    def grid(self, images: Tensor) -> Tensor:
        return self.encode_patches(self.patches(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.grid(images).mean(dim=(2, 3))


