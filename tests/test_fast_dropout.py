"""train.fast_dropout: dropout masks from 4x fewer random draws (trainer.model.FastDropout).

The resume tests (tests/test_resume.py) run with the default (auto → on on a CPU) and the tiny BERT's
hidden dropout of 0.1, so a resumed run matching an uninterrupted one bit for bit covers this
sampler too (its draws come from torch's default generator, which checkpoints save).
"""

from __future__ import annotations

import orjson
import pytest
import torch

import trainer.train as train_module
from tests.conftest import write_config
from trainer.config import load_config
from trainer.model import FastDropout, fast_dropout_wanted, use_fast_dropout
from trainer.train import train


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_same_distribution_and_scaling_as_torch_dropout(p):
    torch.manual_seed(0)
    d = torch.nn.Dropout(p)
    d.__class__ = FastDropout
    d.train()
    y = d(torch.ones(400_000))
    keep = float((y > 0).float().mean())
    assert abs(keep - (1 - p)) < 0.003  # ~4 sigma at n = 400k
    assert torch.allclose(y[y > 0], torch.full_like(y[y > 0], 1 / (1 - p)))
    assert abs(float(y.mean()) - 1.0) < 0.01  # the expectation is kept, as torch's dropout does


def test_eval_and_p0_are_identity_dtype_and_shape_kept_and_seeded():
    x = torch.randn(3, 5, 7, dtype=torch.bfloat16)
    d = FastDropout(0.1).eval()
    assert d(x) is x
    assert FastDropout(0.0).train()(x) is x
    d.train()
    torch.manual_seed(1)
    a = d(x)
    torch.manual_seed(1)
    b = d(x)
    assert a.dtype == torch.bfloat16 and a.shape == x.shape and torch.equal(a, b)
    assert torch.equal(FastDropout(1.0).train()(x), torch.zeros_like(x))


def test_use_fast_dropout_swaps_plain_dropouts_and_leaves_the_state_dict_alone():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1), torch.nn.Dropout(0.2))
    keys = list(model.state_dict())
    assert use_fast_dropout(model) == 2
    assert all(type(m) is FastDropout for m in list(model)[1:]) and model[2].p == 0.2
    assert list(model.state_dict()) == keys
    assert fast_dropout_wanted("auto", torch.device("cpu"))
    assert not fast_dropout_wanted("auto", torch.device("cuda", 0))
    assert fast_dropout_wanted("on", torch.device("cuda", 0)) and not fast_dropout_wanted(
        "off", torch.device("cpu")
    )


@pytest.mark.parametrize("setting,swapped", [("on", True), ("off", False)])
def test_the_switch_is_applied_and_recorded(
    tmp_path, tiny_bert_dir, small_corpus, monkeypatch, setting, swapped
):
    calls = []

    def spy(model):
        calls.append(use_fast_dropout(model))
        return calls[-1]

    monkeypatch.setattr(train_module, "use_fast_dropout", spy)
    cfg = write_config(
        tmp_path / "c.toml", tiny_bert_dir, small_corpus, tmp_path / "run",
        train={"epochs": 1, "fast_dropout": setting}, lora={"r": 4, "alpha": 8, "dropout": 0.1},
    )  # fmt: skip
    assert train(load_config(cfg)) == 0
    # 2 layers x (attention output + FFN output + LoRA on query + LoRA on value) + embeddings + head
    assert (calls and calls[0] >= 9) if swapped else not calls
    run = orjson.loads((tmp_path / "run" / "run.json").read_bytes())
    assert run["config"]["train"]["fast_dropout"] == setting
