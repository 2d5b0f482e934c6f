"""A plain PyTorch GPT with the engine's parameter layout: the reference where transformers may be absent.

The GPU machine has PyTorch but maybe not transformers, so the GPU benchmarks compare the
engine with this eager-mode model (the same arithmetic as GPT-2: pre-LayerNorm blocks, tanh
GELU, tied unembedding; attention by ``torch.nn.functional.scaled_dot_product_attention``
with ``is_causal=True``, PyTorch's own fused kernel). Dense attention only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class TorchGPT(torch.nn.Module):
    """Parameters are a flat {engine name: tensor} dict, shapes exactly as the engine's (linear w: (in, out))."""

    def __init__(self, flat: dict, n_layer: int, n_head: int, eps: float = 1e-5):
        super().__init__()
        self.p = torch.nn.ParameterDict({k.replace(".", "__"): torch.nn.Parameter(v) for k, v in flat.items()})
        self.n_layer, self.n_head, self.eps = n_layer, n_head, eps

    def w(self, name):
        return self.p[name.replace(".", "__")]

    def _ln(self, x, name):
        return F.layer_norm(x, (x.shape[-1],), self.w(name + ".g"), self.w(name + ".b"), self.eps)

    def _lin(self, x, name):
        return torch.addmm(self.w(name + ".b"), x.reshape(-1, x.shape[-1]), self.w(name + ".w")).reshape(
            *x.shape[:-1], -1)

    def block(self, x, i: int):
        """One decoder block. x: (B, T, C) -> (B, T, C)"""
        B, T, C = x.shape
        H = self.n_head
        qkv = self._lin(self._ln(x, f"h.{i}.ln_1"), f"h.{i}.attn.c_attn")
        q, k, v = (t.reshape(B, T, H, C // H).transpose(1, 2) for t in qkv.split(C, dim=-1))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self._lin(a.transpose(1, 2).reshape(B, T, C), f"h.{i}.attn.c_proj")
        h = F.gelu(self._lin(self._ln(x, f"h.{i}.ln_2"), f"h.{i}.mlp.c_fc"), approximate="tanh")
        return x + self._lin(h, f"h.{i}.mlp.c_proj")

    def forward(self, ids):
        """ids: (B, T) int64 -> logits (B, T, V)"""
        T = ids.shape[1]
        x = self.w("wte")[ids] + self.w("wpe")[:T]
        for i in range(self.n_layer):
            x = self.block(x, i)
        return self._ln(x, "ln_f") @ self.w("wte").T


def gelu_tanh_reference(x):
    """The GELU formula spelled out (for tests): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
