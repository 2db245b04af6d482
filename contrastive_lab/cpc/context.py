"""Image CPC's context network (chapter 09): a row-causal PixelCNN-style stack whose output at
row i sees only rows <= i of the latent grid, so predicting the rows below is not copying them.
The tests check causality with autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import _check_int


class RowCausalConv2d(nn.Conv2d):
    """A k x k convolution whose kernel is zero below its centre row (a masked convolution).

    Output row i sees input rows i - k//2 .. i (all columns within reach), never rows > i.
    It is PixelCNN's masking idea (van den Oord et al. 2016, "Pixel Recurrent Neural Networks",
    Sec. 3.4) applied to whole rows: PixelCNN also hides the right half of the centre row because
    it predicts pixel by pixel; CPC predicts whole rows k >= 1 ahead, so the centre row is visible.
    The mask is the buffer ``mask`` (1 = visible), applied to the weight at every call.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        if _check_int(kernel_size, "kernel_size") % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centre row is needed), got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        mask = torch.ones(kernel_size, kernel_size)
        mask[kernel_size // 2 + 1 :] = 0  # rows below the centre
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class RowCausalContext(nn.Module):
    """g_ar for images: residual blocks of row-causal convolutions over the latent grid.

    (B, D, G, G) latents z -> (B, D, G, G) contexts c, where c at row i depends only on z at
    rows <= i. Each block is ReLU -> RowCausalConv2d -> ReLU -> RowCausalConv2d, added to its
    input; 2 blocks of 3x3 kernels reach 4 rows up and 4 columns sideways. CPC uses a
    "PixelCNN-style autoregressive model" over the 7x7 grid (van den Oord et al. 2018, Sec. 3.2).
    """

    def __init__(self, dim: int, hidden: int | None = None, blocks: int = 2, kernel_size: int = 3) -> None:
        super().__init__()
        _check_int(dim, "dim")
        hidden = hidden or dim
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                RowCausalConv2d(dim, hidden, kernel_size),
                nn.ReLU(),
                RowCausalConv2d(hidden, dim, kernel_size),
            )
            for _ in range(_check_int(blocks, "blocks"))
        )

    def forward(self, z: Tensor) -> Tensor:
        c = z
        for block in self.blocks:
            c = c + block(c)
        return c


