"""Solutions and model answers for chapter 02 (encoders). For instructors; `make handout` leaves this out."""


def solution_02_7(width, blocks, cifar_stem):
    """Count conv weights and BN (gamma, beta) stage by stage, as SmallResNet lays them out."""
    def scaled(c):
        return max(1, int(round(c * width)))

    channels = [scaled(c) for c in (64, 128, 256, 512)]
    stem, k = scaled(64), 3 if cifar_stem else 7
    total = 3 * stem * k * k + 2 * stem  # conv1 (no bias) + bn1
    c_in = stem
    for stage, (c, n) in enumerate(zip(channels, blocks)):
        for block in range(n):
            first = c_in if block == 0 else c
            total += 9 * first * c + 2 * c  # conv1 of the block + its BN
            total += 9 * c * c + 2 * c  # conv2 + its BN
            if block == 0 and (stage > 0 or c_in != c):
                total += first * c + 2 * c  # 1x1 shortcut conv + its BN
        c_in = c
    return total


def solution_02_8(size, cifar_stem):
    """Every stride-2 layer (kernel k, padding (k - 1) / 2) maps n to floor((n - 1) / 2) + 1."""
    def down(n):
        return (n - 1) // 2 + 1

    n = size if cifar_stem else down(down(size))  # ImageNet stem: conv1 stride 2, max-pool stride 2
    for _ in range(3):  # layer2, layer3, layer4
        n = down(n)
    return n


ANSWERS = {
    "02.1": "The kNN accuracy of a random ResNet varies by about a percentage point between seeds on "
            "cifar10-mini, smaller than or comparable to the gap to raw pixels; any conclusion from one seed "
            "should be checked against that spread.",
    "02.2": "In eval mode with the initial running statistics (mean 0, var 1) BN is the identity, and "
            "activations grow or shrink from layer to layer. One pass in train mode sets the running means and "
            "variances to the data's, so every layer's output is standardised; the features change (usually for "
            "the better), because a network whose activations were never normalised can be dominated by a few "
            "large channels.",
    "02.3": "Max pooling keeps the strongest response of each random detector and discards how often it fired; "
            "on cifar10-mini global average pooling gives the better random features (a smoother bag of "
            "patterns), max pooling is noisier.",
    "02.4": "At 64 px the ImageNet stem leaves a 2x2 map for stage 4 and recovers part, not all, of the CIFAR "
            "stem's accuracy, at about (64/32)^2 = 4x the FLOPs of the same stem at 32 px, roughly the cost of "
            "the CIFAR stem at 32 px (the two then see maps of the same size from stage 1 on).",
    "02.5": "blocks (2,2,2,2) at width 0.5 has 2.80M parameters (ResNet-18's 11.18M x 0.25 = 2.79M plus the stem "
            "and BN terms that scale with w, not w^2), and about a quarter of the CIFAR-stem ResNet-18's FLOPs.",
    "02.6": "Apply cifar_stem_ to the torchvision model first (3x3 stride-1 conv1 without bias, maxpool = "
            "Identity); for ResNet-50 the feature dimension is 2048. load_state_dict(strict=False) then reports "
            "only fc.weight and fc.bias missing, since the encoder's fc is an Identity.",
}
