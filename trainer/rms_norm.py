"""A short backward for the frozen RMSNorms of a LoRA run.

Transformers' RMSNorm (Qwen2's, Llama's, Mistral's) is written as six elementwise ops, and autograd
runs a backward for each, every one a pass over a [batch, positions, hidden] fp32 tensor; on
Qwen2-0.5B's shape that is 49 norms a step. A frozen weight needs only the input's gradient, which
`_FrozenWeightRMSNorm` forms in five passes from the saved input and its per-position scale. Its
forward is torch's RMSNorm op (`aten::_fused_rms_norm`: on a CPU the same ops as transformers',
and it returns the scale the backward needs); `exact_on_probe` checks, for every norm class before
it is turned, that it gives the class's own output bit for bit. The backward is autograd's formula
rounded otherwise (fp32 either way; tests/test_fused_rms_norm.py compares both with a float64
reference). No random draw, no parameter or buffer changes: checkpoints and resume are as before.
The turned classes are made at run time, so a turned model does not pickle (nothing here pickles a
model: checkpoints are safetensors).
"""

from __future__ import annotations

import copy

import torch
from torch.autograd.function import once_differentiable

_FUSED_CLASSES: dict[type, type] = {}


class _FrozenWeightRMSNorm(torch.autograd.Function):
    """y = x · rsqrt(mean(x²) + eps) · w, with w frozen: only x gets a gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        y, rstd = torch.ops.aten._fused_rms_norm(x, [x.shape[-1]], weight, eps)
        ctx.save_for_backward(x, rstd, weight)
        return y

    @staticmethod
    @once_differentiable  # a second derivative raises rather than coming out wrong
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
        return self._model_forward(hidden_states)  # the model's own code
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
    """Whether torch's RMSNorm op gives this module's class's own output bit for bit, on a random
    fp32 input and a random weight (a copy: the model is untouched). A norm that computes something
    else (Gemma's (1 + w)), or a torch whose op takes other arguments, is left alone."""
    if module.weight.dtype != torch.float32:
        return False
    # its own generator: the run's random streams are untouched
    g = torch.Generator().manual_seed(0)
    hidden = module.weight.shape[-1]
    twin = copy.deepcopy(module)
    try:
        with torch.no_grad():
            twin.weight.copy_(torch.rand(hidden, generator=g) + 0.5)
            probe = torch.randn(3, 5, hidden, generator=g).to(module.weight.device)
            own = type(module).forward(twin, probe)
            fused, _ = torch.ops.aten._fused_rms_norm(
                probe, [hidden], twin.weight, twin.variance_epsilon
            )
    except Exception:  # a capability probe: any failure means "not this class"
        return False
    return isinstance(own, torch.Tensor) and own.dtype == torch.float32 and torch.equal(own, fused)


def use_fused_rms_norm(model: torch.nn.Module) -> int:
    """Turn the model's RMSNorm modules into their short-backward subclass in place, each class after
    a probe shows torch's op gives its output exactly; returns how many modules it turned.
    A call with a trainable weight or a non-fp32 input still runs the model's own forward."""
    count = 0
    for cls, modules in _norm_classes(model).items():
        if not exact_on_probe(modules[0]):
            continue
        fused = _FUSED_CLASSES.get(cls)
        if fused is None:
            members = {"forward": _fused_forward, "_model_forward": cls.forward}
            fused = type(f"Fused{cls.__name__}", (cls,), members)
            _FUSED_CLASSES[cls] = fused
        for module in modules:
            module.__class__ = fused
            count += 1
    return count
