"""Solutions and model answers for chapter 03 (projection heads). For instructors; `make handout` leaves this out."""

import torch


def solution_03_2(h, head):
    """h - P h with P = W^+ W, the orthogonal projector onto W's row space (what z = W h + b sees)."""
    w = head.linear.weight.detach().double()
    projector = torch.linalg.pinv(w) @ w  # (d, d); pinv handles a rank-deficient W
    x = h.double()  # bf16 input upcast
    return x - x @ projector.T  # the bias plays no part: it shifts every z alike


def solution_03_4(head, h):
    """First block by hand, eval-mode BN: Linear -> BN(running mean, running var, gamma, beta) -> ReLU."""
    linear = head.layers[0]
    x = h.double() @ linear.weight.detach().double().T
    if linear.bias is not None:  # moco_v2: no BN, so its first Linear keeps a bias
        x = x + linear.bias.detach().double()
    bn = head.layers[1]
    if isinstance(bn, torch.nn.BatchNorm1d):  # the running statistics, whatever mode the head is in
        x = (x - bn.running_mean.double()) / torch.sqrt(bn.running_var.double() + bn.eps)
        x = x * bn.weight.detach().double() + bn.bias.detach().double()
    return torch.relu(x)


def solution_03_5(kind, in_dim, out_dim, hidden_dim):
    """Walk the layer list of heads.MLP_PRESETS: weights, biases only where no BN follows, BN 2 or 1 per channel."""
    if kind == "identity":
        return 0
    out = 128 if out_dim is None else out_dim
    if kind == "linear":
        return in_dim * out + out
    layers, bn, last_bn = {"mlp": (2, True, False), "simclr_v1": (2, True, True), "simclr_v2": (3, True, True),
                           "moco_v2": (2, False, False)}[kind]
    hidden = in_dim if hidden_dim is None else hidden_dim
    dims = [in_dim] + [hidden] * (layers - 1)
    total = 0
    for a, b in zip(dims[:-1], dims[1:]):  # hidden Linear layers (+ BN with scale and shift, or a bias)
        total += a * b + (2 * b if bn else b)
    total += hidden * out  # the output Linear
    total += out  # its bias, or the scale-only output BN's gamma (simclr_v1/v2): one per channel either way
    return total


ANSWERS = {
    "03.1": "Expect the h - z gaps (grayscale above all) to grow with training: the loss keeps pushing z towards "
            "invariance while the head shields h. Compare every gap with the seed-to-seed spread of the seed=1 "
            "run and the binomial standard error the chapter prints; a gap below both is not an effect.",
    "03.2": "With proj_dim=16 the loss constrains only 16 of h's 128 directions, so more of h can keep what the "
            "augmentations change: expect the grayscale probe on h to stay high (or rise) and on z to fall "
            "towards chance; the invisible part's share of ||h||^2 measures how much of h the loss never saw.",
    "03.3": "kNN asks that nearby images in cosine distance share the transformation label, i.e. that the "
            "information dominates the geometry; a linear probe only needs one direction that separates it, "
            "however small its share of the variance. Grayscale (a large colour shift in pooled features) "
            "usually survives kNN; rotation, a subtler direction, often drops towards chance. A transformation "
            "kNN cannot see may still be linearly readable, so kNN under-reports what h contains.",
    "03.4": "Features after the first block sit between h and z: in SimCLR v2 (Sec. 2) fine-tuning from this "
            "layer beats fine-tuning from h, especially with few labels. On the CPU runs the probe on them is "
            "usually within noise of h; the point of the check is to extract them in eval mode (running "
            "statistics), since a training-mode BN makes each feature depend on the rest of the batch.",
    "03.5": "At any usable width the simclr_v1 head is a small fraction of the ResNet-10 (about 8% at width 0.5, "
            "7% at width 1): the encoder grows with 9 c^2 per convolution while the head grows with d^2 + 128 d. "
            "The counts only meet near width 0.015 (7-8 channels), where the 128 d term of the output layer "
            "dominates a network too narrow to be useful.",
}
