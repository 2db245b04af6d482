"""Solutions and model answers for chapter 07 (where the negatives come from). For instructors;
`make handout` leaves this out."""

import math

import torch
import torch.nn.functional as F


def solution_07_6():
    """(2B)^2 > 256 (65536 + 1) = 16 777 472  <=>  2B > 4096.003  <=>  B >= 2049."""
    moco = 256 * (65536 + 1)
    return math.isqrt(moco) // 2 + 1


def solution_07_8(queue, ptr, keys):
    """Ring-buffer enqueue: key i goes to slot (ptr + i) mod K; only the newest K keys of a batch survive."""
    queue, k, n = queue.clone(), queue.shape[0], keys.shape[0]
    first = max(0, n - k)  # the keys that a deque(maxlen=K) would already have pushed out again
    slots = (ptr + torch.arange(first, n)) % k
    queue[slots] = keys[first:].to(queue.dtype)
    return queue, (ptr + n) % k


def solution_07_9(bank, index, features, m):
    """v_i <- normalize(m v_i + (1 - m) normalize(f_i)) for the rows in index (Wu et al. 2018, Sec. 3.2)."""
    bank = bank.clone()
    mixed = m * bank[index] + (1 - m) * F.normalize(features.float(), dim=1)
    bank[index] = F.normalize(mixed, dim=1)
    return bank


ANSWERS = {
    "07.1": "With m = 0 every written entry is exactly the feature of the step that last saw the image: the fresh "
            "entries are as consistent as they can be and the old ones drift as the encoder moves on. m = 0.9 "
            "averages an entry over its last ~10 visits (epochs), so even a fresh entry lags the current "
            "encoder; it is smoother but less consistent with it.",
    "07.2": "The proximal term lambda ||v_i^(t) - v_i^(t-1)||^2 penalises the network for moving an image's "
            "feature far from its stored entry, so the encoder changes more slowly and the bank, written "
            "once per epoch, stays closer to it: the consistency rises, at some cost in how fast it learns.",
    "07.3": "InfoNCE's loss is at least log(K+1) - I(q; k+) and equals log(K+1) for a query that scores its "
            "positive like any negative (chance). A run whose loss is close to log(K+1) certifies almost no "
            "mutual information: log(K+1) - L is a lower bound on I, and it is near 0.",
    "07.4": "Keep a LongTensor queue of dataset indices enqueued with the keys; for each query count whether its "
            "index appears in that queue. With n = 5085 images, batch B and K = 4096, the queue covers K/n ~ 80% "
            "of the dataset (K/B steps of keys), so most queries meet an older key of their own image; at "
            "K = 1024 about 20% do.",
    "07.5": "NCE with a bank (Wu et al.) trains a binary classifier per sample with a fixed Z estimate and m noise "
            "entries; on a small dataset with few epochs it typically trails InfoNCE with the same bank, as "
            "MoCo's 54.3% vs 58.0% on ImageNet; the size of the gap here depends on the run (one seed).",
    "07.7": "Compare the gap of the means with the spread of the seeds (e.g. the difference of two means has "
            "standard deviation sigma sqrt(2/n) for n seeds each): a gap smaller than about twice that is "
            "not resolved, and at 15 epochs on cifar10-mini K = 256 and K = 1024 are usually within it.",
}
