"""What fusing LoRA into the base matmul could save: one adapted Linear at the quickstart's shapes.

    python bench/lora_fusion.py                  # 600 tokens x 384 -> 384, r 8, bf16 autocast
    python bench/lora_fusion.py --tokens 2048 --dim 896

Times forward + backward (the input's gradient, and A's and B's) of one Linear, as the trainer runs
it (frozen weight stored in bf16, the step under bf16 autocast, LoRA dropout 0 — the only case a
fusion can serve: with dropout, A reads another input than W):
- base:  the frozen Linear alone (no adapter): the floor
- peft:  peft's LoRA Linear (base + B·A·x·scale, three matmuls forward)
- fused: W and A stacked into one (d + r) x d weight: one matmul gives W·x and A·x, one gives the
         input's gradient; A's and B's own gradients as before (a custom autograd Function)
- function: base + LoRA as one hand-written autograd Function (the same matmuls, no per-op autograd)
All four alternate in one process; medians of the rounds. The fused output is checked against
peft's (allclose: a wider matmul may block its sums differently). What a step could save is
(peft − fused) × the adapted Linears a step runs (12 on the quickstart: query and value of 6 layers).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.tui_scale import machine


class StackedLoRA(torch.autograd.Function):
    """y = x·Wᵀ + (x·Aᵀ)·Bᵀ·s with [W; A] in one weight: one matmul forward, one for x's grad."""

    @staticmethod
    def forward(ctx, x, stacked, a, b, scale):
        out = x.to(stacked.dtype) @ stacked.t()
        d = out.shape[-1] - a.shape[0]
        z = out[..., d:]
        ctx.save_for_backward(x, z, a, b)
        ctx.scale, ctx.stacked = scale, stacked
        return out[..., :d] + (z @ b.to(z.dtype).t()) * scale

    @staticmethod
    def backward(ctx, g):
        x, z, a, b = ctx.saved_tensors
        s, stacked = ctx.scale, ctx.stacked
        gz = (g @ b.to(g.dtype)) * s
        gb = (g.transpose(-1, -2) @ z).sum(0) * s if g.dim() == 3 else (g.t() @ z) * s
        ga = (
            (gz.transpose(-1, -2) @ x.to(gz.dtype)).sum(0)
            if g.dim() == 3
            else gz.t() @ x.to(gz.dtype)
        )
        gx = torch.cat([g, gz], dim=-1) @ stacked
        return gx.to(x.dtype), None, ga.to(a.dtype), gb.to(b.dtype), None


class LoRALinear(torch.autograd.Function):
    """y = x·Wᵀ + b + ((x·Aᵀ)·Bᵀ)·s, forward and backward written out: the same matmuls as peft's
    under autocast, without autograd recording a dozen small ops and their casts."""

    @staticmethod
    def forward(ctx, x, w, bias, a, b, scale):
        xb = x.to(w.dtype)
        ab, bb = a.to(w.dtype), b.to(w.dtype)
        z = xb @ ab.t()
        y = torch.addmm(bias, xb, w.t()) if bias is not None else xb @ w.t()
        y.add_(z @ bb.t(), alpha=scale)
        ctx.save_for_backward(xb, z, w, ab, bb)
        ctx.scale, ctx.x_dtype = scale, x.dtype
        return y

    @staticmethod
    def backward(ctx, g):
        xb, z, w, ab, bb = ctx.saved_tensors
        s = ctx.scale
        g = g.to(w.dtype)
        gz = (g @ bb).mul_(s)
        gb = (g.t() @ z).mul_(s)
        ga = gz.t() @ xb
        gx = torch.addmm(g @ w, gz, ab)
        return gx.to(ctx.x_dtype), None, None, ga.float(), gb.float(), None


def build(dim: int, r: int, alpha: int) -> tuple[torch.nn.Module, torch.nn.Linear, torch.Tensor]:
    torch.manual_seed(0)
    base = torch.nn.Sequential()
    base.add_module("lin", torch.nn.Linear(dim, dim))
    peft_model = get_peft_model(
        base, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=["lin"])
    )
    layer = peft_model.base_model.model.lin
    torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.02)  # B = 0 would hide errors
    layer.base_layer.weight.data = layer.base_layer.weight.data.to(torch.bfloat16)
    layer.base_layer.bias.data = layer.base_layer.bias.data.to(torch.bfloat16)
    a = layer.lora_A["default"].weight
    stacked = torch.cat([layer.base_layer.weight.data, a.data.to(torch.bfloat16)])
    return layer, layer.base_layer, stacked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=600, help="a batch's tokens (32 x ~19)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    layer, base, stacked = build(args.dim, args.r, 2 * args.r)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    scale = layer.scaling["default"]
    x = torch.randn(args.tokens, args.dim, requires_grad=True)
    g = torch.randn(args.tokens, args.dim, dtype=torch.bfloat16)

    def run_base():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = base(x)
        y.backward(g)

    def run_peft():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        y.backward(g.to(y.dtype))

    def run_fused():
        stacked[args.dim :] = a.detach().to(torch.bfloat16)  # A's bf16 copy, as autocast makes it
        with torch.autocast("cpu", enabled=False):
            y = StackedLoRA.apply(x, stacked, a, b, scale) + base.bias
        y.backward(g.to(y.dtype))

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = layer(x).float()
        stacked[args.dim :] = a.to(torch.bfloat16)
        got = (StackedLoRA.apply(x, stacked, a, b, scale) + base.bias).float()
    err = (got - want).abs().max().item()
    assert torch.allclose(got, want, atol=0.05, rtol=0.02), err

    def run_function():
        y = LoRALinear.apply(x, base.weight, base.bias, a, b, scale)
        y.backward(g.to(y.dtype))

    with torch.no_grad():
        got = LoRALinear.apply(x, base.weight, base.bias, a, b, scale).float()
    assert torch.allclose(got, want, atol=0.05, rtol=0.02), (got - want).abs().max().item()

    contenders = {"base": run_base, "peft": run_peft, "fused": run_fused, "function": run_function}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for fn in contenders.values():  # warm-up: oneDNN picks and caches its kernels
        for _ in range(20):
            fn()
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            for _ in range(args.iters):
                fn()
                x.grad = a.grad = b.grad = None
            times[name].append((time.perf_counter() - t0) / args.iters)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{machine()}; {torch.get_num_threads()} torch threads")
    print(
        f"{args.tokens} tokens x {args.dim} -> {args.dim}, r {args.r}; max |fused - peft| {err:.2g}"
    )
    for k in contenders:
        print(f"{k:<6} {med[k] * 1e6:8.1f} µs forward+backward  ({med[k] / med['base']:.2f}× base)")
    lora = med["peft"] - med["base"]
    print(
        f"LoRA's own cost in peft: {lora * 1e6:.1f} µs a Linear ({lora / med['peft']:.0%} of it); "
        f"fused saves {(med['peft'] - med['fused']) * 1e6:.1f} µs a Linear "
        f"({med['fused'] / med['peft']:.2f}× peft's time)"
    )


if __name__ == "__main__":
    main()
