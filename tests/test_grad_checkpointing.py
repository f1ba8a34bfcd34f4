"""train.gradient_checkpointing: each layer's activations are recomputed in the backward pass, so a
step holds less memory and trains the same weights (the recompute replays the RNG: dropout, the
project's fast dropout and its attention path included, draws the same masks again)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.profiler import ProfilerActivity, profile

from tests.conftest import write_config
from trainer.config import LoraSection, ModelSection, load_config
from trainer.errors import UserError
from trainer.model import load_model
from trainer.preflight import preflight
from trainer.train import train


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / "adapter_model.safetensors")


def trained(
    tmp: Path, model_dir: Path, data: Path, name: str, checkpointing: bool, **sections
) -> Path:
    cfg = write_config(
        tmp / f"{name}.toml", model_dir, data, tmp / name,
        train={"epochs": 1, "batch_size": 16, "save_every": 0, "fast_dropout": "on",
               "gradient_checkpointing": checkpointing},
        **sections,
    )  # fmt: skip
    assert train(load_config(cfg)) == 0
    return tmp / name


@pytest.mark.parametrize(
    ("model", "sections"),
    [
        ("no_dropout_bert", {}),
        # dropout on: the hidden states', LoRA's input's and the attention probabilities' (the
        # project's fast dropout and its sdpa path), each replayed by the recompute
        ("tiny_bert_dir", {"lora": {"dropout": 0.1}}),
        ("tiny_qwen2_dir", {"model": {"quantize": "nf4"}}),  # QLoRA: an NF4 base
    ],
)
def test_checkpointing_trains_the_same_weights(tmp_path, data, request, model, sections):
    folder = request.getfixturevalue(model)
    plain = trained(tmp_path, folder, data, "plain", False, **sections)
    recomputed = trained(tmp_path, folder, data, "recomputed", True, **sections)
    got, want = weights(recomputed), weights(plain)
    assert got.keys() == want.keys()
    scale = max(float(w.abs().max()) for w in want.values())
    for k in want:
        assert float((got[k] - want[k]).abs().max()) <= 1e-5 * scale, k


def peak_bytes_of_a_step(model_dir: Path, checkpointing: bool, trace: Path) -> int:
    """The most memory the CPU allocator holds during one forward and backward beyond what it held
    before (torch's memory profiler: its allocation events carry the allocator's running total)."""
    loaded = load_model(
        ModelSection(path=str(model_dir), max_length=128, precision="fp32"),
        LoraSection(r=4, dropout=0.0),
        ["a", "b"],
        torch.device("cpu"),
        gradient_checkpointing=checkpointing,
    )
    model = loaded.model.train()
    torch.manual_seed(0)
    input_ids = torch.randint(5, 300, (16, 128))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(input_ids=input_ids).logits.sum().backward()
    prof.export_chrome_trace(str(trace))
    events = [e["args"] for e in json.loads(trace.read_text())["traceEvents"] if e.get("name") == "[memory]"]  # fmt: skip
    before = events[0]["Total Allocated"] - events[0]["Bytes"]
    return max(e["Total Allocated"] for e in events) - before


def test_checkpointing_lowers_a_steps_peak_memory(tmp_path, no_dropout_bert):
    plain = peak_bytes_of_a_step(no_dropout_bert, False, tmp_path / "plain.json")
    recomputed = peak_bytes_of_a_step(no_dropout_bert, True, tmp_path / "recomputed.json")
    # 2 layers at 16 × 128 tokens: the attention probabilities alone are 2 MiB a layer
    assert recomputed < 0.8 * plain, (recomputed, plain)


def test_an_architecture_without_checkpointing_is_one_line_naming_the_key(
    tmp_path, tiny_bert_dir, data, monkeypatch
):
    from transformers import BertForSequenceClassification

    monkeypatch.setattr(BertForSequenceClassification, "supports_gradient_checkpointing", False)
    cfg = write_config(tmp_path / "c.toml", tiny_bert_dir, data, tmp_path / "run",
                       train={"gradient_checkpointing": True})  # fmt: skip
    with pytest.raises(UserError) as e:
        preflight(load_config(cfg))
    message = str(e.value)
    assert message.startswith("train.gradient_checkpointing = true: BertForSequenceClassification")
    assert "\n" not in message
    assert not (tmp_path / "run").exists()  # refused before output.dir is made
