"""Solutions and model answers for chapter 01 (augmentation). For instructors; `make handout` leaves this out."""

import math

import torch


def solution_01_7(batch, height, width, scale, ratio, seed):
    """RandomResizedCrop.get_params for a batch: 10 attempts per sample, first fit wins, else central crop."""
    g = torch.Generator().manual_seed(seed)
    u_area = torch.rand((batch, 10), generator=g, dtype=torch.float64)
    u_ratio = torch.rand((batch, 10), generator=g, dtype=torch.float64)
    u_corner = torch.rand((2, batch), generator=g, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u_area)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    r = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)  # log-uniform aspect ratio w / h
    w, h = torch.round(torch.sqrt(area * r)), torch.round(torch.sqrt(area / r))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    boxes = []
    for i in range(batch):
        hits = torch.nonzero(fits[i]).flatten()
        if len(hits):
            k = int(hits[0])
            bh, bw = int(h[i, k]), int(w[i, k])
            top = int(math.floor(float(u_corner[0, i]) * (height - bh + 1)))
            left = int(math.floor(float(u_corner[1, i]) * (width - bw + 1)))
        else:  # central crop of the whole image, its aspect ratio clipped to the range
            bh, bw = height, width
            if width / height < ratio[0]:
                bh = int(round(width / ratio[0]))
            elif width / height > ratio[1]:
                bw = int(round(height * ratio[1]))
            top, left = (height - bh) // 2, (width - bw) // 2
        boxes.append([top, left, bh, bw])
    return torch.tensor(boxes, dtype=torch.long).view(batch, 4)


def solution_01_8(x, factor):
    """Contrast: blend each image with the mean of its own luma image, then clamp."""
    luma = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # (B, H, W)
    mu = luma.mean(dim=(1, 2)).view(-1, 1, 1, 1)  # one number per image
    f = factor.to(x.dtype).view(-1, 1, 1, 1)
    return (f * x + (1 - f) * mu).clamp(0, 1)


ANSWERS = {
    "01.1": "The shortcut accuracy falls steadily with the strength s (near the crop-only value at s = 0, lowest "
            "at s = 1). With gray_p = 0 the curve sits higher: grayscale alone removes the colour cue from 20 % "
            "of the views, and a large part of the drop at small s comes from it; the jitter does the rest.",
    "01.2": "Mean and covariance of RGB (9 numbers) are a coarser fingerprint than a 48-bin histogram, yet "
            "for crop-only views they still match partners far above chance, usually a little below the "
            "histogram: the colour statistics of two crops of one image agree in both descriptions.",
    "01.3": "Smaller crops (0.08-0.2) make the shortcut harder: two small crops may cover different regions "
            "(sky and ground) whose histograms differ, while crops of half the image or more share most pixels "
            "and their histograms nearly coincide.",
    "01.4": "MoCo v1 has gray_before_jitter=True; apply_reference converts to gray first. Then saturation (a "
            "blend with the luma, which equals the image) and hue (undefined for gray pixels) do nothing, so "
            "gray views only get brightness and contrast changes; after the jitter the order is irrelevant for "
            "them because gray removes all colour anyway. The order changes the distribution of the views.",
    "01.5": "Applying the v2 pipeline to the stacked batch gives 1 distinct view out of a batch of copies "
            "(one set of parameters per call). The fix: call the pipeline per image inside the collate_fn "
            "(torch.stack([pipe(img) for img in images])) or use BatchedViews on the batch.",
    "01.6": "view_ops='crop' builds a recipe with jitter_p = gray_p = 0 (and blur off), view_ops='jitter,gray' "
            "one with crop scale (1, 1) and no flip. Crop alone leaves the colour shortcut intact (high matching "
            "accuracy); jitter + gray without crops hides colour but keeps the layout, which a histogram "
            "cannot see, so its shortcut accuracy is low.",
}
