"""Plausible wrong answers to chapter 11's checked exercises, with the problem the checker must name."""

import math

import torch


def std_biased(z):
    u = z.double() / z.double().norm(dim=1, keepdim=True)
    centred = u - u.mean(0)
    return (centred.pow(2).mean(0)).sqrt().mean()  # divides by N


def std_raw(z):
    return torch.stack([z[:, j].double().std() for j in range(z.shape[1])]).mean()  # z itself, not z / ||z||


def std_of_rows(z):
    u = z.double() / z.double().norm(dim=1, keepdim=True)
    return torch.stack([row.std() for row in u]).mean()


def dino_no_centre(student, teacher, center, tau_s, tau_t):
    terms = []
    for g in range(teacher.shape[0]):
        for v in range(student.shape[0]):
            if v != g:
                p_t = torch.softmax(teacher[g].double() / tau_t, dim=-1)
                terms.append(-(p_t * torch.log_softmax(student[v].double() / tau_s, dim=-1)).sum(-1).mean())
    return torch.stack(terms).mean()


def dino_one_temperature(student, teacher, center, tau_s, tau_t):
    p_t = torch.softmax((teacher.double() - center.double()) / tau_t, dim=-1)
    log_p_s = torch.log_softmax(student.double() / tau_t, dim=-1)
    terms = [-(p_t[g] * log_p_s[v]).sum(-1).mean() for g in range(len(teacher)) for v in range(len(student)) if v != g]
    return torch.stack(terms).mean()


def dino_all_pairs(student, teacher, center, tau_s, tau_t):
    p_t = torch.softmax((teacher.double() - center.double()) / tau_t, dim=-1)
    log_p_s = torch.log_softmax(student.double() / tau_s, dim=-1)
    return torch.stack([-(p_t[g] * log_p_s[v]).sum(-1).mean() for g in range(len(teacher))
                        for v in range(len(student))]).mean()


def dino_kl(student, teacher, center, tau_s, tau_t):
    """KL(P_t || P_s) instead of the cross-entropy: the teacher's entropy subtracted."""
    p_t = torch.softmax((teacher.double() - center.double()) / tau_t, dim=-1)
    log_p_s = torch.log_softmax(student.double() / tau_s, dim=-1)
    ent = -(p_t * p_t.clamp_min(1e-300).log()).sum(-1).mean(-1)
    terms = [-(p_t[g] * log_p_s[v]).sum(-1).mean() - ent[g] for g in range(len(teacher))
             for v in range(len(student)) if v != g]
    return torch.stack(terms).mean()


def _bt(a, b, lambd, weights_on_diag=1.0):
    n, d = a.shape
    c = a.T @ b / n
    eye = torch.eye(d, dtype=c.dtype)
    return (weights_on_diag * (eye - c).pow(2) * eye).sum() + lambd * (c.pow(2) * (1 - eye)).sum()


def barlow_not_standardised(z1, z2, lambd):
    return _bt(z1.double(), z2.double(), lambd)


def barlow_unbiased(z1, z2, lambd):
    std = lambda z: (z - z.mean(0)) / (z.var(0) + 1e-5).sqrt()  # noqa: E731 (torch's default: unbiased)
    return _bt(std(z1.double()), std(z2.double()), lambd)


def barlow_lambda_everywhere(z1, z2, lambd):
    std = lambda z: (z - z.mean(0)) / (z.var(0, unbiased=False) + 1e-5).sqrt()  # noqa: E731
    a, b = std(z1.double()), std(z2.double())
    c = a.T @ b / len(a)
    return (1 - torch.diagonal(c)).pow(2).sum() + lambd * c.pow(2).sum()


def barlow_normalised_rows(z1, z2, lambd):
    """Cosine-style: l2-normalised rows instead of batch-standardised columns."""
    a, b = torch.nn.functional.normalize(z1.double(), dim=1), torch.nn.functional.normalize(z2.double(), dim=1)
    return _bt(a, b, lambd)


MISTAKES = {
    "11.1": [
        (std_biased, "the biased std"),
        (std_raw, "not l2-normalised"),
        (std_of_rows, "along each row"),
    ],
    "11.2": [
        (math.sqrt(2 / math.pi) / math.sqrt(256), None),  # the expectation over Gaussian a, not this a
        (1 / math.sqrt(256), None),  # the isotropic value
        (0.0, None),  # "rank one means collapsed"
    ],
    "11.3": [
        (dino_no_centre, "the centre is not subtracted"),
        (dino_one_temperature, "the teacher's temperature is used for the student"),
        (dino_all_pairs, "compared with itself"),
        (dino_kl, None),
    ],
    "11.4": [
        (barlow_not_standardised, "not standardised"),
        (barlow_unbiased, "the unbiased variance"),
        (barlow_lambda_everywhere, "includes the diagonal"),
        (barlow_normalised_rows, None),
    ],
}
