"""Solutions and model answers for chapter 00 (welcome). For instructors; `make handout` leaves this out."""

import math

import torch.nn.functional as F

from contrastive_lab.exercises.ch00 import chapter_data


def solution_00_2():
    """Cosine 1-NN of flattened pixels: 1000 test queries against the first 5000 train images."""
    train, test = chapter_data("train"), chapter_data("test")
    gallery = F.normalize(train.images[:5000].float().flatten(1), dim=1)
    queries = F.normalize(test.images[:1000].float().flatten(1), dim=1)
    nearest = (queries @ gallery.T).argmax(dim=1)  # index of the most similar train image
    return float((train.labels[:5000][nearest] == test.labels[:1000]).float().mean())


def solution_00_3():
    """l = -log(e^{1/tau} / (e^{1/tau} + (2N - 2) e^0)) with N = 256, tau = 0.5: log(1 + 510 e^{-2})."""
    n, tau = 256, 0.5
    return -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (2 * n - 2)))


ANSWERS = {
    "00.1": "CIFAR-100 (or STL-10): 100 classes of 500 training images each at 32 px, with finer distinctions "
            "(maple vs oak, boy vs baby) and the same variety of pose and background, so the variation within a "
            "class is large compared with the differences between classes; STL-10's 96 px photos show more "
            "background and scale variation per class than CIFAR-10's.",
    "00.3": "Negatives appear only in the denominator (every k != i other than the positive). If every negative "
            "is far less similar than the positive, the softmax puts almost all mass on the positive and "
            "l_{i,j} -> 0: the anchor is solved and contributes little gradient. A negative of the same class "
            "(a false negative) with a high similarity keeps the denominator large: the loss pushes the two "
            "images of one class apart, which is the price of not having labels.",
    "00.4": "`python -m contrastive_lab train --help` lists the method options; the temperature is the "
            "`temperature` key (e.g. `--set temperature=0.2`, or `temperature:` in a config file).",
}
