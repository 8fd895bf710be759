"""Where a job computes: the GPU when one is visible, the CPU otherwise."""


def default_device():
    import torch  # here, not above: torch-free stages (ckpt, search rounds) skip its import

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
