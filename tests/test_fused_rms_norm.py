"""The frozen RMSNorms of a CPU run take torch's RMSNorm op forward and a short backward
(trainer.rms_norm.use_fused_rms_norm): the model's own output bit for bit, the input's gradient as
accurate as autograd's, and any norm it cannot match exactly left as it was."""

from __future__ import annotations

import torch
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from trainer.config import LoraSection, ModelSection
from trainer.model import autocast, load_model, store_frozen_matmuls
from trainer.rms_norm import exact_on_probe, use_fused_rms_norm


class Holder(torch.nn.Module):
    def __init__(self, norm: torch.nn.Module):
        super().__init__()
        self.norm = norm


def frozen_norm(hidden: int = 48, seed: int = 0) -> Qwen2RMSNorm:
    norm = Qwen2RMSNorm(hidden, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(seed))
    norm.weight.requires_grad_(False)
    return norm


def forward_backward(norm: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor):
    x = x.clone().requires_grad_(True)
    y = norm(x)
    y.backward(grad)
    return y.detach(), x.grad


def takes_the_short_backward(norm: torch.nn.Module, x: torch.Tensor) -> bool:
    return "FrozenWeightRMSNorm" in norm(x.clone().requires_grad_(True)).grad_fn.name()


def inputs(dtype=torch.float32, shape=(4, 7, 48)):
    g = torch.Generator().manual_seed(1)
    # a spread of scales per position, as a residual stream has
    x = torch.randn(shape, generator=g) * torch.logspace(-2, 2, shape[1]).view(1, -1, 1)
    return x.to(dtype), torch.randn(shape, generator=g).to(dtype)


def test_same_output_bit_for_bit_and_as_accurate_a_gradient():
    own, fused = frozen_norm(), Holder(frozen_norm())
    assert use_fused_rms_norm(fused) == 1
    assert type(fused.norm).__name__ == "FusedQwen2RMSNorm"
    x, grad = inputs()
    y_own, dx_own = forward_backward(own, x, grad)
    y_fused, dx_fused = forward_backward(fused.norm, x, grad)
    assert torch.equal(y_own, y_fused)
    assert takes_the_short_backward(fused.norm, x) and not takes_the_short_backward(own, x)

    # float64 reference of the same formula
    x64 = x.double().requires_grad_(True)
    y64 = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6) * own.weight.double()
    y64.backward(grad.double())
    scale = x64.grad.abs().amax(-1, keepdim=True)  # per position: scales span 4 decades here
    err_own = ((dx_own.double() - x64.grad) / scale).abs().max().item()
    err_fused = ((dx_fused.double() - x64.grad) / scale).abs().max().item()
    assert err_fused < 1e-5
    assert err_fused <= 4 * err_own + 1e-7
    assert not torch.equal(dx_fused, torch.zeros_like(dx_fused))


def test_a_trainable_weight_or_a_bf16_input_runs_the_models_own_forward():
    own, fused = frozen_norm(), Holder(frozen_norm())
    use_fused_rms_norm(fused)
    x, grad = inputs(torch.bfloat16)
    y_own, dx_own = forward_backward(own, x, grad)
    y_fused, dx_fused = forward_backward(fused.norm, x, grad)
    assert torch.equal(y_own, y_fused) and torch.equal(dx_own, dx_fused)
    assert not takes_the_short_backward(fused.norm, x)

    own.weight.requires_grad_(True)
    fused.norm.weight.requires_grad_(True)
    x, grad = inputs()
    forward_backward(own, x, grad)
    forward_backward(fused.norm, x, grad)
    assert not takes_the_short_backward(fused.norm, x)
    assert fused.norm.weight.grad is not None
    assert torch.equal(own.weight.grad, fused.norm.weight.grad)


class GemmaLikeRMSNorm(Qwen2RMSNorm):
    """A norm scaled by (1 + w), as Gemma's: the fused op computes something else."""

    def forward(self, hidden_states):
        h = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + 1e-6)
        return (1.0 + self.weight) * h


def test_a_norm_the_fused_op_does_not_match_is_left_alone():
    norm = GemmaLikeRMSNorm(48)
    norm.weight.requires_grad_(False)
    assert not exact_on_probe(norm)
    holder = Holder(norm)
    assert use_fused_rms_norm(holder) == 0
    assert type(holder.norm) is GemmaLikeRMSNorm


class NeedsAMask(Qwen2RMSNorm):
    """A norm whose forward the probe cannot call as transformers' is called."""

    def forward(self, hidden_states, mask):
        return super().forward(hidden_states) * mask


def test_a_norm_the_probe_cannot_run_is_left_alone():
    norm = NeedsAMask(48).requires_grad_(False)
    assert not exact_on_probe(norm)
    assert use_fused_rms_norm(Holder(norm)) == 0


def test_a_subclass_of_a_turned_class_falls_back_without_recursing():
    holder = Holder(frozen_norm())
    use_fused_rms_norm(holder)
    sub = type("Sub", (type(holder.norm),), {})(48)  # trainable weight: the model's own forward
    x, grad = inputs()
    _, dx = forward_backward(sub, x, grad)
    assert sub.weight.grad is not None and dx.abs().max() > 0


def test_turning_draws_nothing_from_the_runs_generator_and_leaves_the_weight():
    holder = Holder(frozen_norm())
    weight = holder.norm.weight.clone()
    rng = torch.random.get_rng_state()
    assert use_fused_rms_norm(holder) == 1
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert torch.equal(holder.norm.weight, weight)


def test_turning_twice_turns_nothing_more():
    holder = Holder(frozen_norm())
    assert use_fused_rms_norm(holder) == 1
    assert use_fused_rms_norm(holder) == 0
    assert type(holder.norm).__name__ == "FusedQwen2RMSNorm"


def test_a_qwen2_lora_step_keeps_its_logits_and_gradients(tiny_qwen2_dir):
    """Every norm of a tiny Qwen2 LoRA classifier turned: the same logits bit for bit, the same
    LoRA and head gradients within fp32 rounding, under the trainer's bf16 autocast."""

    def loaded():
        torch.manual_seed(0)
        model = load_model(
            ModelSection(path=str(tiny_qwen2_dir), max_length=32, precision="bf16"),
            LoraSection(r=4, alpha=8, dropout=0.0),
            ["a", "b", "c"],
            torch.device("cpu"),
        )
        store_frozen_matmuls(model.model, "bf16")
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():  # LoRA's B starts at zero: give A a gradient to compare
            for name, p in model.model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        model.model.train()
        return model

    def step(model):
        torch.manual_seed(1)
        with autocast(model.device, "bf16"):
            logits = model.model(**batch).logits.float()
        torch.nn.functional.cross_entropy(logits, labels).backward()
        grads = {n: p.grad for n, p in model.model.named_parameters() if p.requires_grad}
        return logits.detach(), grads

    own, fused = loaded(), loaded()
    layers = fused.model.config.num_hidden_layers
    assert use_fused_rms_norm(fused.model) == 2 * layers + 1
    tok = own.tokenizer
    batch = dict(tok(["ls -la src", "rm -rf build now"], padding=True, return_tensors="pt"))
    labels = torch.tensor([0, 2])
    logits_own, grads_own = step(own)
    logits_fused, grads_fused = step(fused)
    assert torch.equal(logits_own, logits_fused)
    assert grads_own.keys() == grads_fused.keys() and len(grads_own) > 0
    for name, g in grads_own.items():
        assert g.abs().max() > 0, name
        torch.testing.assert_close(
            grads_fused[name], g, rtol=1e-3, atol=1e-5 * g.abs().max().item()
        )


def test_a_qwen2_run_on_a_cpu_trains_with_every_norm_turned(
    tmp_path, tiny_qwen2_dir, small_corpus, monkeypatch
):
    import orjson

    import trainer.train as train_module
    from tests.conftest import write_config
    from tests.helpers import record_returns
    from trainer.config import load_config

    turned = record_returns(monkeypatch, train_module, "use_fused_rms_norm")
    cfg = write_config(
        tmp_path / "c.toml", tiny_qwen2_dir, small_corpus, tmp_path / "run",
        train={"epochs": 1}, lora={"r": 4, "alpha": 8},
    )  # fmt: skip
    assert train_module.train(load_config(cfg)) == 0
    assert turned == [2 * 2 + 1]  # 2 layers x 2 norms + the final norm
    (epoch,) = orjson.loads((tmp_path / "run" / "epochs.json").read_bytes())["epochs"]
    assert 0 < epoch["train_loss"] < 10 and 0 < epoch["val_loss"] < 10  # finite numbers, no NaN


def test_a_qwen2_run_stopped_and_resumed_ends_bit_for_bit_where_a_straight_one_does(
    tmp_path, tiny_qwen2_dir, data, monkeypatch
):
    """The fused norms draw nothing and keep no state: resume stays exact on a decoder too."""
    from tests.helpers import hook_steps
    from tests.test_resume import assert_same_as_straight, make_config, request_stop, state
    from trainer.cli import main
    from trainer.config import load_config
    from trainer.train import train

    (tmp_path / "straight").mkdir()
    assert train(load_config(make_config(tmp_path / "straight", tiny_qwen2_dir, data))) == 0
    (tmp_path / "stopped").mkdir()
    config = load_config(make_config(tmp_path / "stopped", tiny_qwen2_dir, data))
    hook_steps(monkeypatch, 12, request_stop)  # epoch 2, mid-epoch (8 steps an epoch)
    assert train(config) == 0
    assert state(tmp_path / "stopped" / "run")["status"] == "stopped"
    monkeypatch.undo()
    assert main(["--resume", str(tmp_path / "stopped" / "run")]) == 0
    assert_same_as_straight(tmp_path / "stopped" / "run", tmp_path / "straight" / "run")
