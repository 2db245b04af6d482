"""Solutions and model answers for chapter 06 (what makes SimCLR work). For instructors; `make handout`
leaves this out."""

import math


def solution_06_7():
    """Positive at cosine 1, 2N - 2 = 510 negatives at cosine 0: -log(e^{1/tau} / (e^{1/tau} + 510))
    = log(1 + 510 e^{-2}) ~ 4.25 nats, although the encoder is perfect: a large tau caps how low the loss goes."""
    n, tau = 256, 0.5
    return math.log(1 + (2 * n - 2) * math.exp(-1 / tau))


def solution_06_8(batch_size, epochs, num_images):
    """epochs x floor(N / B) steps (drop_last), lr = 0.075 sqrt(B) (SimCLR App. B.1)."""
    return epochs * (num_images // batch_size), 0.075 * math.sqrt(batch_size)


ANSWERS = {
    "06.1": "TensorBatches applies one recipe to both views; it needs a recipe per view (e.g. view_ops for view 1 "
            "and view 2, or a flag that skips the colour ops on the second). Prediction: crop + colour still "
            "wins, but by less, since the uncoloured view keeps the colour histogram shortcut partly open "
            "(SimCLR Fig. 5's asymmetric setting is only slightly worse than the symmetric one).",
    "06.2": "Flip is kept in h and largely removed from z, like colour; it is harder to read out because a "
            "mirror image changes no statistics (histograms, mean colour), only the spatial layout, which a "
            "pooled CNN feature partly discards anyway.",
    "06.3": "At this budget the CIFAR recipe (s = 0.5) is usually as good as or better than s = 1: a strong colour "
            "distortion on 32 px images destroys much of the little signal a short run can use; SimCLR's "
            "s = 1 pays off with long training and large images.",
    "06.4": "Unnormalised dot products z_i^T z_j range over (-inf, inf) and scale with ||z||^2, so the network can "
            "sharpen the softmax by growing the norms; the temperature no longer sets the sharpness, and the "
            "useful range of tau shifts (Table 5 finds much worse results without normalisation at every tau).",
    "06.5": "With seed-to-seed standard deviation sigma, the difference of two means of n seeds has standard "
            "deviation sigma sqrt(2/n); to resolve 0.01 at about two standard errors: n >= 8 sigma^2 / 0.01^2 "
            "(e.g. sigma = 0.01 gives 8 seeds per configuration).",
    "06.6": "Plot kNN(h) against 16, 32, 64 epochs for 'none' and 'nonlinear'. The nonlinear head's advantage "
            "in SimCLR Fig. 8 grows with training; at these tiny budgets the curves are within the seed spread "
            "at 16 epochs and the nonlinear head tends to pull ahead only at the longest runs, if at all.",
}
