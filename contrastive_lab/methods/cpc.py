"""Contrastive predictive coding on images (van den Oord et al. 2018, Sec. 3.2; CPC v2, Hénaff et
al. 2020): the method ``cpc`` of chapter 09. The pieces (patch grid, patch network, row-causal
context, per-patch augmentation) live in :mod:`contrastive_lab.cpc`, the loss in
:mod:`contrastive_lab.losses`. One step::

    patches = grid(x)                     G x G overlapping patches of one view
    z = f(augment(patches))               a latent per patch (PatchConvNet, LayerNorm)
    c = g_ar(z)                           row-causal context: c_i sees rows <= i only
    L = sum_k InfoNCE(W_k c_i, z_{i+k})   Eq. 4: predict the rows k = 1..K below, negatives are every
                                          other patch of the same offset in the batch
"""

from __future__ import annotations

from dataclasses import dataclass

from einops import rearrange
from torch import Tensor, nn

from ..config import Config, preset
from ..cpc import NORMS, PatchAugment, PatchConvNet, PatchGridEncoder, RowCausalContext, grid_size
from ..cpc._checks import _check_int
from ..losses import cpc_loss
from .base import Batch, BuildContext, register_method


@dataclass
class CPCOptions:
    """Image CPC's settings (CPC Sec. 3.2, CPC v2 Sec. 4.1; the CPU preset says where it departs)."""

    patch_size: int = 8  # side of the square patches (CPC Sec. 3.2: 64 px on 256-px images)
    patch_stride: int = 4  # step between patches; < patch_size -> overlap (CPC: 32 px -> a 7x7 grid)
    cpc_offsets: int = 3  # K, predict the patches 1..K rows below (CPC Sec. 3.2: up to 5 on 7x7)
    cpc_norm: str = "layer"  # patch net: layer (CPC v2 Sec. 4.1) | batch (leaks across patches) | none
    patch_augment: bool = True  # CPC v2 per-patch flips, colour dropping and crops (cpc.PatchAugment)
    temperature: float = 1.0  # scores are raw dot products z^T W_k c (CPC Eq. 3): temperature 1

    def validate(self, cfg: Config) -> None:
        if cfg.encoder != "patch_convnet":
            raise ValueError(
                f"method=cpc encodes patches with encoder=patch_convnet, got encoder={cfg.encoder!r}; "
                "to put another network on the patches, build cpc.ImageCPC(cpc.PatchGridEncoder(net), ...) yourself")
        if self.cpc_norm not in NORMS:
            raise ValueError(f"cpc_norm must be one of {NORMS}, got {self.cpc_norm!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (1.0 = CPC's plain dot product), got {self.temperature}")


class ImageCPC(nn.Module):
    """CPC on images (van den Oord et al. 2018, Sec. 3.2 and Fig. 4; Hénaff et al. 2020): the method ``cpc``.

    ``forward(batch)``: cut the batch's one view into the patch grid, augment each
    patch (training mode, if ``patch_augment``), encode the patches into z (B, D, G, G), run the
    row-causal context to get c, predict rows i+1..i+K below every row i with W_1..W_K, and
    return ``(loss, logs)`` with :func:`cpc_loss` (negatives: every other patch of the same
    offset in the batch, other images included) and ``acc_k1..acc_kK``.

    CPC learns from *one* view: it predicts one part of an image from another part of the same
    image (``num_views = 1``).

    ``encoder`` (a :class:`PatchGridEncoder`) maps (B, 3, H, H) images to pooled (B, D) features:
    the representation the engine's kNN monitor and the linear probe evaluate.
    """

    num_views = 1

    def __init__(
        self,
        encoder: PatchGridEncoder,
        context: nn.Module,
        max_offset: int = 3,
        temperature: float = 1.0,
        patch_augment: PatchAugment | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(encoder, PatchGridEncoder):
            raise TypeError(f"encoder must be a PatchGridEncoder, got {type(encoder).__name__}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(
                f"temperature must be a number > 0 (1.0 = CPC's plain dot product), got {temperature!r}"
            )
        self.encoder, self.context, self.patch_augment = encoder, context, patch_augment
        self.temperature = float(temperature)
        dim = encoder.feature_dim
        self.predictors = nn.ModuleList(  # W_k: a 1x1 map from c to z at every grid position
            nn.Linear(dim, dim, bias=False) for _ in range(_check_int(max_offset, "max_offset"))
        )
        self.log_keys = tuple(f"acc_k{k}" for k in range(1, max_offset + 1))  # extra metrics.csv columns

    @property
    def max_offset(self) -> int:
        return len(self.predictors)

    def context_from_patches(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        """(B, G, G, 3, P, P) patches -> (z, c), both channels-last grids (B, G, G, D).

        The causality tests differentiate through this function: patches are the inputs whose
        rows are well defined (pixels are not: overlapping patches share them).
        """
        if self.training and self.patch_augment is not None:
            flat = patches.reshape(-1, *patches.shape[3:])
            patches = self.patch_augment(flat).reshape(patches.shape)
        z = self.encoder.encode_patches(patches)
        c = self.context(z)
        return rearrange(z, "b d i j -> b i j d"), rearrange(c, "b d i j -> b i j d")

    def predict(self, contexts: Tensor, k: int) -> Tensor:
        """W_k c at every position: the prediction of the latent k rows below. (B, G, G, D)."""
        if not 1 <= k <= self.max_offset:
            raise ValueError(f"offset k must lie in 1..{self.max_offset}, got {k}")
        return self.predictors[k - 1](contexts)

    def forward(self, batch: Batch) -> tuple[Tensor, dict]:
        z, c = self.context_from_patches(self.encoder.patches(batch.views[0]))
        loss, accuracy = cpc_loss(z, c, self.predictors, self.temperature)
        return loss, {"loss": loss.detach(), **{key: a for key, a in zip(self.log_keys, accuracy)}}


def make_image_cpc(
    image_size: int = 32,
    patch_size: int = 8,
    stride: int = 4,
    width: float = 1.0,
    norm: str = "layer",
    context_blocks: int = 2,
    max_offset: int = 3,
    temperature: float = 1.0,
    patch_augment: bool = True,
) -> ImageCPC:
    """The book's image CPC: :class:`PatchConvNet` on a G x G grid, :class:`RowCausalContext`,
    K = ``max_offset`` predictors, and (if ``patch_augment``) CPC v2's :class:`PatchAugment`.

    Defaults for 32-px images: 8-px patches with stride 4 (a 7 x 7 grid, like CPC's 64-px
    patches with stride 32 on 256 px), LayerNorm (CPC v2), 3 rows ahead (CPC predicts up to 5
    rows on its 7 x 7 grid, Sec. 3.2; 3 keeps the CPU cost of the loss down).
    """
    grid = grid_size(image_size, patch_size, stride)
    if _check_int(max_offset, "max_offset") >= grid:
        raise ValueError(f"max_offset={max_offset} must be < the grid size {grid} (rows to predict from)")
    if not isinstance(patch_augment, bool):
        raise TypeError(f"patch_augment must be True or False, got {patch_augment!r}")
    encoder = PatchGridEncoder(PatchConvNet(width=width, norm=norm), patch_size=patch_size, stride=stride)
    context = RowCausalContext(encoder.feature_dim, blocks=context_blocks)
    augment = PatchAugment() if patch_augment else None
    return ImageCPC(encoder, context, max_offset=max_offset, temperature=temperature, patch_augment=augment)


def build_cpc(cfg: Config, ctx: BuildContext | None = None) -> ImageCPC:
    """Image CPC from a config. CPC predicts one part of an image from another, so it trains on ONE
    view. ``method.encoder`` maps images to the patch features mean-pooled over the grid, which the
    kNN monitor and the linear probe evaluate."""
    o = cfg.options
    return make_image_cpc(image_size=cfg.image_size, patch_size=o.patch_size, stride=o.patch_stride,
                          width=cfg.width, norm=o.cpc_norm, max_offset=o.cpc_offsets, temperature=o.temperature,
                          patch_augment=o.patch_augment)


register_method("cpc", CPCOptions, build_cpc, "contrastive predictive coding on image patches (van den Oord et al. 2018)")


@preset("cpc-cifar10-cpu")
def cpc_cifar10_cpu() -> Config:
    """CPC on CIFAR-10 for a 2-core CPU (van den Oord et al. 2018, Sec. 3.2; CPC v2, Hénaff et al. 2020).

    The 32-px image is cut into a 7x7 grid of overlapping 8-px patches with stride 4 (CPC: 64-px
    patches with stride 32 on 256 px), each encoded by ``cpc.PatchConvNet`` with LayerNorm (CPC v2);
    a row-causal PixelCNN-style context predicts the latents 1..3 rows below; per-patch flips,
    colour dropping and crops (CPC v2). Image-level views: random crop + flip only
    (``view_ops=crop,flip``), and CPC uses one view. Adam (CPC Sec. 3.1 uses Adam with
    lr 2e-4; a larger lr suits a run of minutes), raw dot-product scores (temperature 1, Eq. 3).
    Batch 32: every prediction is compared with all 32 x 7 x (7 - k) candidate patches, a cost that
    grows with the square of the batch, so on a CPU small batches train faster per image.
    """
    return Config(
        method="cpc",
        dataset="cifar10",
        recipe="simclr_cifar",
        view_ops="crop,flip",
        encoder="patch_convnet",
        width=1.0,
        options=CPCOptions(patch_size=8, patch_stride=4, cpc_offsets=3, cpc_norm="layer", patch_augment=True,
                           temperature=1.0),
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.0,
        batch_size=32,
        epochs=10,
        warmup_epochs=0.2,
        knn_every=5,
        checkpoint_every=200,
    )
