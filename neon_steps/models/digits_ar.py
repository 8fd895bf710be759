"""A class-conditional autoregressive model of 8x8 digits: a small decoder-only transformer over
the 64 pixels in raster order, each one of the 17 original gray levels (0..16), after a class
token (class 10 is the null class of classifier-free guidance). Sampled one pixel at a time
(with a key/value cache) with guidance on the logits, temperature, top-k and top-p.

arch: dim (64), layers (3), heads (4), mlp (4: hidden width as a multiple of dim), num_classes
(10), p_uncond (0.1: label dropout for CFG).
kappa: temperature (1), top_k (0: off), top_p (1: off), cfg (γ, 1). The order is that of common
LLM samplers: guidance mix, then temperature, then top-k, then top-p.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from neon_steps.data import DIGITS_LEVELS, digits_to_uint8, uint8_to_digits
from neon_steps.models import images, knobs
from neon_steps.models.base import Adapter, Kappa

PIXELS = 64


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = (t.view(n, length, self.heads, dim // self.heads).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=-1))
        if cache is not None:  # incremental decoding: one new position attends to all before it
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
            y = F.scaled_dot_product_attention(q, k, v, is_causal=length > 1)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(n, length, dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp * dim), nn.GELU(), nn.Linear(mlp * dim, dim))

    def forward(self, x, cache=None):
        x = x + self.attn(self.norm1(x), cache)
        return x + self.mlp(self.norm2(x))


class PixelTransformer(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, mlp: int, num_classes: int):
        super().__init__()
        self.class_embed = nn.Embedding(num_classes + 1, dim)     # + the null class
        self.pixel_embed = nn.Embedding(DIGITS_LEVELS, dim)
        self.position = nn.Parameter(torch.randn(PIXELS, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, DIGITS_LEVELS)

    def forward(self, labels: torch.Tensor, pixels: torch.Tensor, caches: list | None = None,
                start: int = 0) -> torch.Tensor:
        """Logits of pixels start..start+L-1 given the class and the L tokens before them: the
        class token (start = 0 only) and pixels [start-1 .. start+L-2]. Full sequence: start=0,
        `pixels` the first 63 pixels."""
        if start == 0:
            x = torch.cat([self.class_embed(labels)[:, None], self.pixel_embed(pixels)], 1)
        else:
            x = self.pixel_embed(pixels)
        x = x + self.position[start:start + x.shape[1]]
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return self.head(self.norm(x))


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus): what is cut gets -inf."""
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        cut = probs.cumsum(-1) - probs >= top_p
        logits = logits.masked_fill(cut.scatter(-1, order, cut), float("-inf"))
    return logits


class DigitsAutoregressive(Adapter):
    family = "autoregressive"
    arch_knobs, kappa_knobs = knobs.DIGITS_AUTOREGRESSIVE

    def build(self, arch: Mapping[str, Any]) -> nn.Module:
        self.num_classes, self.p_uncond = arch["num_classes"], arch["p_uncond"]
        return PixelTransformer(arch["dim"], arch["layers"], arch["heads"], arch["mlp"], self.num_classes)

    def loss(self, batch, generator, labels=None):
        tokens = uint8_to_digits(batch.to(self.device)).flatten(1)        # [N, 64] in 0..16
        y = images.conditioning(len(tokens), labels, self.num_classes, self.device)
        y = images.drop_labels(y, self.p_uncond, self.num_classes, generator)
        logits = self.net(y, tokens[:, :-1])
        return F.cross_entropy(logits.reshape(-1, DIGITS_LEVELS), tokens.reshape(-1))

    @torch.no_grad()
    def sample(self, n, generator, kappa: Kappa, labels=None):
        kappa = self.settings(kappa)
        gamma = images.sampling_scale(kappa, labels)
        temperature, top_k, top_p = kappa["temperature"], kappa["top_k"], kappa["top_p"]
        y = images.conditioning(n, labels, self.num_classes, self.device)
        if gamma != 1.0:  # conditional and unconditional rows decode side by side
            y = torch.cat([y, torch.full_like(y, self.num_classes)])
        caches = [{} for _ in self.net.blocks]
        pixels = torch.empty((len(y), 0), dtype=torch.long, device=self.device)
        out = torch.empty((n, PIXELS), dtype=torch.long)
        for i in range(PIXELS):
            logits = self.net(y, pixels, caches, start=i)[:, -1].float()
            if gamma != 1.0:
                cond, uncond = logits.chunk(2)
                logits = uncond + gamma * (cond - uncond)
            probs = filter_logits(logits, temperature, top_k, top_p).softmax(-1).cpu()
            token = torch.multinomial(probs, 1, generator=generator)[:, 0]
            out[:, i] = token
            token = token.to(self.device)
            pixels = torch.cat([token, token]) if gamma != 1.0 else token
            pixels = pixels[:, None]
        return digits_to_uint8(out.view(n, 1, 8, 8))

    def nfe(self, kappa):
        return PIXELS * images.evaluations_per_step(self.settings(kappa))
