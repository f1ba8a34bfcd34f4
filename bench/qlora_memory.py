"""QLoRA, measured: bytes of the frozen base weights in fp32 vs NF4, and training throughput, on a
model of Qwen2-0.5B's shape (random init: no download), loaded through the trainer's own code.

    python bench/qlora_memory.py                 # Qwen2-0.5B's shape, CPU (or CUDA when present)
    python bench/qlora_memory.py --tiny          # a small shape, for a quick look

Prints one table: base weight bytes, trainable parameters, and samples/s over timed steps after
warm-up, for quantize = none and nf4, run side by side in one process.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from trainer.config import LoraSection, ModelSection
from trainer.model import load_model, pick_device

QWEN2_05B = dict(
    hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True,
)  # fmt: skip
TINY = dict(
    hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=4096, max_position_embeddings=512, tie_word_embeddings=True,
)  # fmt: skip


def build_model_dir(folder: Path, shape: dict) -> None:
    """A random-init Qwen2 causal LM of the given shape plus a small locally trained tokenizer."""
    from qwen2_shape import build_qwen2_dir

    words = [f"ls -la /var/log/{i} && rm -rf $TMP/{i}" for i in range(2000)]
    build_qwen2_dir(folder, words, 1000, **shape)


def tensor_bytes(p) -> int:
    """Storage of a parameter, with the NF4 quantization constants it carries."""
    total = p.numel() * p.element_size()
    state = getattr(p, "quant_state", None)
    if state is not None:
        for t in (state.absmax, getattr(state, "code", None)):
            if t is not None:
                total += t.numel() * t.element_size()
        nested = getattr(state, "state2", None)
        if nested is not None:
            total += nested.absmax.numel() * nested.absmax.element_size()
    return total


def base_weight_bytes(model) -> tuple[int, int]:
    """(all frozen base bytes, bytes of the frozen Linear layers' weights: the ones NF4 quantizes)."""
    frozen = {
        id(p): p for p in list(model.parameters()) + list(model.buffers()) if not p.requires_grad
    }
    linear = {}
    for name, module in model.named_modules():
        if (
            isinstance(module, torch.nn.Linear)
            and "lora_" not in name
            and not module.weight.requires_grad
        ):
            linear[id(module.weight)] = module.weight
    return sum(map(tensor_bytes, frozen.values())), sum(map(tensor_bytes, linear.values()))


def throughput(loaded, batch: int, seq: int, steps: int) -> float:
    model = loaded.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    vocab = loaded.tokenizer.vocab_size
    ids = torch.randint(3, vocab, (batch, seq), device=loaded.device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 5, (batch,), device=loaded.device)
    timed = 0.0
    for i in range(steps + 1):  # the first step is warm-up
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with loaded.autocast():
            logits = model(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            timed += time.perf_counter() - t
    return batch * steps / timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a small shape instead of Qwen2-0.5B's")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    device = pick_device()
    shape = TINY if args.tiny else QWEN2_05B
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "qwen2"
        t = time.perf_counter()
        build_model_dir(folder, shape)
        print(
            f"built a random {'tiny' if args.tiny else 'Qwen2-0.5B-shaped'} model in {time.perf_counter() - t:.0f}s",
            file=sys.stderr,
        )
        rows = []
        for quantize in ("none", "nf4"):
            loaded = load_model(
                ModelSection(path=str(folder), quantize=quantize, precision=args.precision),
                LoraSection(r=16, alpha=32, dropout=0.05),
                ["a", "b", "c", "d", "e"],
                device,
            )
            rows.append((quantize, base_weight_bytes(loaded.model), loaded.params_trainable, loaded.precision,
                         throughput(loaded, args.batch, args.seq, args.steps)))  # fmt: skip
            del loaded
    cpu = platform.processor() or platform.machine()
    where = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"CPU ({os.cpu_count()} cores, {cpu})"
    )
    print(
        f"\ndevice: {where}; torch {torch.__version__}; batch {args.batch} × {args.seq} tokens; {args.steps} timed steps"
    )
    print(
        f"{'quantize':<10}{'base weights':>16}{'of it Linear':>16}{'trainable':>12}{'precision':>11}{'samples/s':>12}"
    )
    for quantize, (nbytes, lin), trainable, precision, sps in rows:
        print(
            f"{quantize:<10}{nbytes / 2**20:>12.1f} MiB{lin / 2**20:>12.1f} MiB{trainable:>12,}{precision:>11}{sps:>12.2f}"
        )
    (all32, lin32), (all4, lin4) = rows[0][1], rows[1][1]
    print(f"NF4 vs fp32: base {all32 / all4:.1f}× smaller, Linear weights {lin32 / lin4:.1f}× smaller "
          f"(embeddings stay full precision); throughput nf4 / none: {rows[1][4] / rows[0][4]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
