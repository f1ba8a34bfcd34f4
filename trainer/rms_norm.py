"""RMSNorm in one fused pass forward and a short backward, for the frozen norms of a LoRA run.

Transformers' RMSNorm (Qwen2's, Llama's, Mistral's) is written as six elementwise ops, and autograd
runs their backward as as many again, each a pass over a [batch, positions, hidden] fp32 tensor.
On Qwen2-0.5B's shape that is 49 norms a step. torch's `_fused_rms_norm` computes the same forward
in one pass (bit for bit the same values in fp32: `exact_on_probe` checks it for every norm class
before it is used), and a frozen weight needs only the input's gradient, which this backward forms
in four passes from the saved input and its per-position scale. The backward is the same formula
as autograd's, rounded differently (fp32 either way; tests/test_fused_rms_norm.py compares both
with a float64 reference). No random draw, no parameter or buffer changes: checkpoints and resume
are as before.
"""

from __future__ import annotations

import copy

import torch

_FUSED_CLASSES: dict[type, type] = {}


class _FrozenWeightRMSNorm(torch.autograd.Function):
    """y = x · rsqrt(mean(x²) + eps) · w, with w frozen: only x gets a gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        y, rstd = torch.ops.aten._fused_rms_norm(x, [x.shape[-1]], weight, eps)
        ctx.save_for_backward(x, rstd, weight)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # dx = rstd · (g·w − x̂ · mean(g·w · x̂)), x̂ = x · rstd
        x, rstd, weight = ctx.saved_tensors
        gw = grad.to(x.dtype) * weight
        x_hat = x * rstd
        mean = torch.linalg.vecdot(gw, x_hat).unsqueeze(-1).div_(-x.shape[-1])
        return torch.addcmul(gw, x_hat, mean).mul_(rstd), None, None


def _fused_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    weight = self.weight
    if (
        hidden_states.dtype != torch.float32
        or weight.dtype != torch.float32
        or weight.requires_grad
    ):
        return super(type(self), self).forward(hidden_states)  # the model's own code
    return _FrozenWeightRMSNorm.apply(hidden_states, weight, self.variance_epsilon)


def _norm_classes(model: torch.nn.Module) -> dict[type, list[torch.nn.Module]]:
    """The model's RMSNorm modules by class: transformers' naming, a weight and an epsilon."""
    found: dict[type, list[torch.nn.Module]] = {}
    for module in model.modules():
        cls = type(module)
        if (
            cls.__name__.endswith("RMSNorm")
            and cls not in _FUSED_CLASSES.values()
            and isinstance(getattr(module, "weight", None), torch.nn.Parameter)
            and isinstance(getattr(module, "variance_epsilon", None), float)
        ):
            found.setdefault(cls, []).append(module)
    return found


def exact_on_probe(module: torch.nn.Module) -> bool:
    """Whether the fused forward gives this module's class's own output bit for bit, on a random
    fp32 input and a random weight (a copy: the model is untouched; a norm that computes something
    else, Gemma's (1 + w) for one, is left alone)."""
    if module.weight.dtype != torch.float32:
        return False
    # its own generator: the run's random streams are untouched
    g = torch.Generator().manual_seed(0)
    hidden = module.weight.shape[-1]
    twin = copy.deepcopy(module)
    with torch.no_grad():
        twin.weight.copy_(torch.rand(hidden, generator=g) + 0.5)
        probe = torch.randn(3, 5, hidden, generator=g).to(module.weight.device)
        own = type(module).forward(twin, probe)
        fused, _ = torch.ops.aten._fused_rms_norm(
            probe, [hidden], twin.weight, twin.variance_epsilon
        )
    return own.dtype == torch.float32 and torch.equal(own, fused)


def use_fused_rms_norm(model: torch.nn.Module) -> int:
    """Turn the model's RMSNorm modules into their fused-pass subclass in place, each class after a
    probe shows the fused forward gives its output exactly; returns how many modules it turned.
    A call with a trainable weight or a non-fp32 input still runs the model's own forward."""
    if not hasattr(torch.ops.aten, "_fused_rms_norm"):
        return 0
    count = 0
    for cls, modules in _norm_classes(model).items():
        if not exact_on_probe(modules[0]):
            continue
        fused = _FUSED_CLASSES.get(cls)
        if fused is None:
            fused = type(f"Fused{cls.__name__}", (cls,), {"forward": _fused_forward})
            _FUSED_CLASSES[cls] = fused
        for module in modules:
            module.__class__ = fused
            count += 1
    return count
