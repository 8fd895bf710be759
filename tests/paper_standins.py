"""Small stand-ins of the paper's real checkpoints, in their real formats: a diffusers pipeline
folder (save_pretrained), a torchcfm training checkpoint, and an EDM network pickle with a fake
EDM source tree whose network implements EDM's preconditioned interface."""
import pickle
import sys
import textwrap
from pathlib import Path

import torch


def diffusers_pipeline(folder: Path, scheduler: str = "DDIMScheduler", prediction: str = "epsilon",
                       classes: int = 0, seed: int = 0) -> Path:
    """A DDPMPipeline folder (unet/ + scheduler/) of a 0.1M-parameter 8x8 RGB UNet2DModel;
    `classes` > 0 adds a class embedding (one more for the null class)."""
    import diffusers
    from diffusers import DDPMPipeline, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8,
                       num_class_embeds=classes + 1 if classes else None)
    sched = getattr(diffusers, scheduler)(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                                          prediction_type=prediction)
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(folder)
    return folder


def torchcfm_checkpoint(path: Path, arch: dict, seed: int = 0) -> Path:
    """What torchcfm's train_cifar10.py saves ({"net_model", "ema_model", "sched", "optim",
    "step"}, under DataParallel's `module.`), for a small UNetModelWrapper; ema_model differs
    from net_model, as after training."""
    from neon_steps.models.torchcfm_flow import TorchCFMFlow

    torch.manual_seed(seed)
    net = TorchCFMFlow(arch).net
    ema = TorchCFMFlow(arch).net
    optim = torch.optim.Adam(net.parameters(), lr=2e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda=lambda step: 1.0)
    torch.save({"net_model": torch.nn.DataParallel(net).state_dict(),
                "ema_model": torch.nn.DataParallel(ema).state_dict(),
                "sched": sched.state_dict(), "optim": optim.state_dict(), "step": 400000}, path)
    return path


EDM_NETWORK = '''
"""Stand-in of EDM's training/networks.py: a tiny network behind EDM's VP preconditioning."""
import torch
import dnnlib  # noqa: F401  (EDM's networks import both)
from torch_utils import persistence


@persistence.persistent_class
class TinyVPPrecond(torch.nn.Module):
    def __init__(self, img_resolution=8, img_channels=3, label_dim=0, beta_d=19.9, beta_min=0.1,
                 M=1000, epsilon_t=1e-5, width=16):
        super().__init__()
        self.img_resolution, self.img_channels, self.label_dim = img_resolution, img_channels, label_dim
        self.beta_d, self.beta_min, self.M, self.epsilon_t = beta_d, beta_min, M, epsilon_t
        self.sigma_min, self.sigma_max = float(self.sigma(epsilon_t)), float(self.sigma(1))
        self.conv_in = torch.nn.Conv2d(img_channels, width, 3, padding=1)
        self.emb = torch.nn.Linear(1 + label_dim, width)
        self.conv_out = torch.nn.Conv2d(width, img_channels, 3, padding=1)

    def model(self, x, noise_labels, class_labels):
        cond = noise_labels.reshape(-1, 1).expand(len(x), 1) / self.M
        if self.label_dim:
            cond = torch.cat([cond, class_labels.expand(len(x), -1)], 1)
        return self.conv_out(torch.nn.functional.silu(self.conv_in(x) + self.emb(cond)[:, :, None, None]))

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        x = x.to(torch.float32)
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        class_labels = None if self.label_dim == 0 else torch.zeros([1, self.label_dim], device=x.device) \\
            if class_labels is None else class_labels.to(torch.float32).reshape(-1, self.label_dim)
        c_skip, c_out = 1, -sigma
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        c_noise = (self.M - 1) * self.sigma_inv(sigma)
        return c_skip * x + c_out * self.model(c_in * x, c_noise.flatten(), class_labels)

    def sigma(self, t):
        t = torch.as_tensor(t)
        return ((0.5 * self.beta_d * (t ** 2) + self.beta_min * t).exp() - 1).sqrt()

    def sigma_inv(self, sigma):
        sigma = torch.as_tensor(sigma)
        return ((self.beta_min ** 2 + 2 * self.beta_d * (1 + sigma ** 2).log()).sqrt() - self.beta_min) / self.beta_d

    def round_sigma(self, sigma):
        return torch.as_tensor(sigma)
'''


def edm_source_tree(root: Path) -> Path:
    """dnnlib, torch_utils (persistence) and training/networks.py, as EDM's repository lays them out."""
    (root / "dnnlib").mkdir(parents=True)
    (root / "dnnlib" / "__init__.py").write_text("")
    (root / "torch_utils").mkdir()
    (root / "torch_utils" / "__init__.py").write_text("")
    (root / "torch_utils" / "persistence.py").write_text(textwrap.dedent('''
        def persistent_class(cls):
            return cls
    '''))
    (root / "training").mkdir()
    (root / "training" / "__init__.py").write_text("")
    (root / "training" / "networks.py").write_text(EDM_NETWORK)
    return root


def edm_pickle(path: Path, source: Path, label_dim: int = 0, seed: int = 0) -> Path:
    """An EDM network pickle ({"ema", "loss_fn", "augment_pipe", "dataset_kwargs"}), written with
    the source tree importable and unimportable again afterwards."""
    sys.path.insert(0, str(source))
    try:
        from training.networks import TinyVPPrecond

        torch.manual_seed(seed)
        net = TinyVPPrecond(label_dim=label_dim).eval().requires_grad_(False)
        with open(path, "wb") as f:
            pickle.dump({"ema": net, "loss_fn": None, "augment_pipe": None, "dataset_kwargs": {}}, f)
    finally:
        sys.path.remove(str(source))
        for name in [m for m in sys.modules if m.split(".")[0] in ("training", "dnnlib", "torch_utils")]:
            del sys.modules[name]
    return path
