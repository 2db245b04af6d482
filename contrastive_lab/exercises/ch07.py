"""Chapter 07's checked exercises: the logit-matrix sizes of end-to-end vs queue (07.6), MoCo's FIFO
queue written by hand (07.8) and the memory bank's momentum write (07.9)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..memory import KeyQueue, MemoryBank
from .core import Case, Diagnosis, Exercise, ValueExercise, register

# --------------------------------------------------------------------------- 07.6


def end_to_end_logits(batch: int) -> int:
    """Floats in SimCLR's (2B, 2B) similarity matrix."""
    return (2 * batch) ** 2


def queue_logits(batch: int, k: int) -> int:
    """Floats in MoCo's (B, 1 + K) logit matrix: one positive and K queue negatives per query."""
    return batch * (k + 1)


def crossover_batch(k: int = 65536, moco_batch: int = 256) -> int:
    """The smallest SimCLR batch whose logit matrix holds more floats than MoCo's (B, 1 + K) one."""
    b = 1
    while end_to_end_logits(b) <= queue_logits(moco_batch, k):
        b += 1
    return b


register(ValueExercise(
    id="07.6",
    title="the smallest SimCLR batch whose logit matrix exceeds MoCo's (K=65536, B=256)",
    band=lambda: (crossover_batch() - 0.5, crossover_batch() + 0.5),
    hint="SimCLR's matrix is (2B) x (2B); MoCo's is B x (1 + K) with MoCo's B = 256; find the first B "
         "(an integer) where the first is strictly larger.",
))

# --------------------------------------------------------------------------- 07.8


def _queue_case(k: int, d: int, b: int, ptr: int, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    queue = F.normalize(torch.randn(k, d, generator=g), dim=1)
    keys = F.normalize(torch.randn(b, d, generator=g), dim=1)
    return queue, ptr, keys


def reference_enqueue(queue: torch.Tensor, ptr: int, keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    """:meth:`KeyQueue.enqueue` on a queue holding ``queue`` with pointer ``ptr`` (inputs untouched)."""
    q = KeyQueue(queue.shape[0], queue.shape[1], generator=torch.Generator())  # leaves the global RNG alone
    q.keys.copy_(queue)
    q.ptr.fill_(int(ptr))
    q.enqueue(keys, gather=False)
    return q.keys.clone(), int(q.ptr)


def _enqueue_cases() -> list[Case]:
    return [
        Case("K=8, batch of 2 at ptr 0", _queue_case(8, 4, 2, 0, 0)),
        Case("wrap-around: K=8, batch of 3 at ptr 6", _queue_case(8, 4, 3, 6, 1)),
        Case("batch of 1 into the last slot (K=6, ptr 5)", _queue_case(6, 3, 1, 5, 2)),
        Case("batch as large as the queue (K=5, ptr 2)", _queue_case(5, 4, 5, 2, 3)),
        Case("batch larger than the queue (K=4, batch of 6, ptr 1)", _queue_case(4, 3, 6, 1, 4)),
    ]


def _no_wrap(queue, ptr, keys):
    """Writes only up to the end of the buffer; the keys that do not fit are lost."""
    out = queue.clone()
    n = min(len(keys), len(queue) - ptr)
    out[ptr:ptr + n] = keys[:n]
    return out, (ptr + len(keys)) % len(queue)


def _ptr_not_advanced(queue, ptr, keys):
    """The keys are written, but the pointer stays where it was."""
    return reference_enqueue(queue, ptr, keys)[0], ptr


def _reversed_order(queue, ptr, keys):
    """The batch is pushed newest first."""
    return reference_enqueue(queue, ptr, keys.flip(0))


def _oldest_of_a_large_batch(queue, ptr, keys):
    """A batch larger than K keeps its first (oldest) K keys instead of its newest."""
    k = len(queue)
    if len(keys) <= k:
        return reference_enqueue(queue, ptr, keys)
    out = queue.clone()
    for i, key in enumerate(keys[:k]):
        out[(ptr + i) % k] = key
    return out, (ptr + len(keys)) % k


register(Exercise(
    id="07.8",
    title="MoCo's FIFO queue: enqueue a batch of keys",
    cases=_enqueue_cases,
    reference=reference_enqueue,
    hint="Write key i of the batch to slot (ptr + i) mod K, in row order, so the write wraps around to slot 0; "
         "the new pointer is (ptr + B) mod K. When B > K only the newest K keys survive, in the slots "
         "one-by-one writes would give them. Return (queue, new_ptr).",
    diagnoses=(
        Diagnosis("the write does not wrap around to slot 0 (keys past the end are lost)", _no_wrap),
        Diagnosis("the pointer is not advanced by the batch size", _ptr_not_advanced),
        Diagnosis("the batch is written in reverse order (newest key first)", _reversed_order),
        Diagnosis("a batch larger than K keeps its oldest K keys, not its newest", _oldest_of_a_large_batch),
    ),
))

# --------------------------------------------------------------------------- 07.9


def _bank_case(n: int, d: int, index: list[int], m: float, seed: int, scale: float = 1.0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    bank = F.normalize(torch.randn(n, d, generator=g), dim=1)
    features = scale * torch.randn(len(index), d, generator=g)
    return bank, torch.tensor(index), features, m


def reference_bank_update(bank: torch.Tensor, index: torch.Tensor, features: torch.Tensor, m: float) -> torch.Tensor:
    """:meth:`MemoryBank.update` on a bank holding ``bank`` (inputs untouched); returns the new bank."""
    mb = MemoryBank(bank.shape[0], bank.shape[1], momentum=m, generator=torch.Generator())
    mb.bank.copy_(bank)
    mb.update(index, features, gather=False)
    return mb.bank.clone()


def _bank_cases() -> list[Case]:
    return [
        Case("m=0.5 (the official default), 3 of 10 entries", _bank_case(10, 8, [7, 0, 3], 0.5, 0)),
        Case("m=0 (the paper's plain replacement)", _bank_case(6, 4, [5, 1], 0.0, 1)),
        Case("m=0.9, unnormalised features (norm ~50)", _bank_case(8, 4, [2, 6, 4], 0.9, 2, scale=50.0)),
        Case("one entry, the last row of the bank", _bank_case(5, 3, [4], 0.5, 3)),
    ]


def _not_renormalised(bank, index, features, m):
    """The mixture is written without projecting it back onto the unit sphere."""
    out = bank.clone()
    out[index] = m * bank[index] + (1 - m) * F.normalize(features, dim=1)
    return out


def _features_not_normalised(bank, index, features, m):
    """The raw features are mixed in before they are L2-normalised."""
    out = bank.clone()
    out[index] = F.normalize(m * bank[index] + (1 - m) * features, dim=1)
    return out


def _momentum_swapped(bank, index, features, m):
    """m weighs the new feature and 1 - m the stored entry."""
    out = bank.clone()
    out[index] = F.normalize((1 - m) * bank[index] + m * F.normalize(features, dim=1), dim=1)
    return out


register(Exercise(
    id="07.9",
    title="the memory bank's momentum write",
    cases=_bank_cases,
    reference=reference_bank_update,
    hint="For each row i in index: v_i <- normalize(m v_i + (1 - m) normalize(f_i)); every other row is "
         "unchanged. Return the whole (n, D) bank.",
    diagnoses=(
        Diagnosis("the updated entries are not L2-normalised again", _not_renormalised),
        Diagnosis("the features are mixed in before they are L2-normalised", _features_not_normalised),
        Diagnosis("the momentum is swapped: m weighs the new feature", _momentum_swapped),
    ),
))
