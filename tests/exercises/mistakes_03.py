"""Plausible wrong answers to chapter 03's checked exercises, with the problem the checker must name."""

import torch


def row_space_part(h, head):
    w = head.linear.weight.detach().float()
    return h.float() @ (torch.linalg.pinv(w) @ w).T


def gram_instead_of_projector(h, head):
    w = head.linear.weight.detach().float()
    return h.float() - h.float() @ w.T @ w


def inverse_of_w_wt(h, head):
    w = head.linear.weight.detach().double()
    return h.double() - h.double() @ w.T @ torch.linalg.inv(w @ w.T) @ w  # breaks when W is not full row rank


def train_mode_block(head, h):
    head.train()  # a head straight out of training: BN normalises with the batch statistics
    return head.layers[:3](h.float())


def no_relu(head, h):
    head.eval()
    return head.layers[:2](h.float())


def no_upcast(head, h):
    return head.eval().layers[:3](h)  # bf16 h meets float32 weights; moco_v2 ends before its ReLU


def every_linear_has_bias(kind, in_dim, out_dim, hidden_dim):
    if kind == "identity":
        return 0
    out = out_dim or 128
    hid = hidden_dim or in_dim
    layers = {"linear": 1, "simclr_v2": 3}.get(kind, 2)
    dims = [in_dim] + [hid] * (layers - 1) + [out]
    bn = 0 if kind in ("linear", "moco_v2") else 2 * hid * (layers - 1) + (out if kind.startswith("simclr") else 0)
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:])) + bn


def hidden_always_in_dim(kind, in_dim, out_dim, hidden_dim):
    from contrastive_lab.heads import build_head

    return sum(p.numel() for p in build_head(kind, in_dim, out_dim).parameters())


def no_batchnorm(kind, in_dim, out_dim, hidden_dim):
    from contrastive_lab.heads import build_head

    head = build_head(kind, in_dim, out_dim, **({} if hidden_dim is None else {"hidden_dim": hidden_dim}))
    return sum(p.numel() for m in head.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters())


MISTAKES = {
    "03.2": [
        (row_space_part, "this is the row-space part"),
        (gram_instead_of_projector, "W^T W is not a projector"),
        (inverse_of_w_wt, None),  # right on full-rank W, wrong on the rank-deficient case
    ],
    "03.4": [
        (train_mode_block, "BN used the batch's own statistics"),
        (no_relu, "the ReLU is missing"),
        (no_upcast, None),
    ],
    "03.5": [
        (every_linear_has_bias, "a bias is counted on every Linear layer"),
        (hidden_always_in_dim, "the hidden width is taken to be in_dim"),
        (no_batchnorm, "the BatchNorm parameters are not counted"),
    ],
}
