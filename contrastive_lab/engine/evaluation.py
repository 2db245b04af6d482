"""What the engine evaluates at the end of a classifier run (``method=linear|finetune``): the top-1
accuracy of ``fc(f(x))`` on the test split, sharded over the ranks. (Pre-training runs end with the
kNN monitor instead, ``engine.loop.monitor_knn``.) Chapter 10 reads these numbers.
"""

from __future__ import annotations

import torch

from .. import distributed as dist_utils
from .setup import center_crop_pipeline, config_eval_transform


class _Transformed(torch.utils.data.Dataset):
    """``dataset[indices[i]]`` with ``transform`` applied to the image (ImageFolder test images)."""

    def __init__(self, dataset, transform, indices):
        self.dataset, self.transform, self.indices = dataset, transform, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.dataset[self.indices[i]]
        return self.transform(image), label


@torch.no_grad()
def classifier_top1(run) -> float:
    """Top-1 accuracy of ``run.method.classify`` on the test split. Rank r scores items r, r+W, r+2W, ...;
    the (correct, total) counts are summed over ranks, so every rank returns the same number."""
    method, test_ds, cfg, device = run.method, run.test_ds, run.cfg, run.device
    method.eval()
    indices = list(range(run.rank, len(test_ds), run.world))
    batch = max(1, min(256, cfg.batch_size // run.world))
    if hasattr(test_ds, "images"):
        transform = config_eval_transform(cfg)
        batches = (
            (transform(test_ds.images[chunk].to(device)), test_ds.labels[chunk])
            for chunk in torch.tensor(indices, dtype=torch.long).split(batch)
        )
    else:
        batches = torch.utils.data.DataLoader(
            _Transformed(test_ds, center_crop_pipeline(cfg), indices), batch_size=batch,
            num_workers=cfg.num_workers, pin_memory=device.type == "cuda", generator=torch.Generator(),
        )
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    for x, y in batches:
        with run.autocast():
            logits = method.classify(x.to(device, run.dtype, non_blocking=True))
        counts[0] += (logits.argmax(1).cpu() == y).sum().item()
        counts[1] += len(y)
    if dist_utils.is_distributed():
        torch.distributed.all_reduce(counts)
    return float(counts[0] / counts[1].clamp(min=1))
