"""Model: the tokenizer and an AutoModelForSequenceClassification from a local folder, LoRA or QLoRA
through peft, and the compute precision.

Master weights and optimizer state stay fp32; `precision` only picks the autocast dtype (the trainer
stores the frozen Linear weights in that dtype once: store_frozen_matmuls). Any
causal-LM checkpoint whose architecture has a sequence-classification class (Qwen2, Llama, ...) loads
as a classifier with a fresh head.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from trainer.config import LoraSection, ModelSection, did_you_mean
from trainer.custom_code import load_pretrained, refuse_custom_code
from trainer.errors import UserError
from trainer.tokenizer_files import (
    TOKENIZER_FILES,
    check_tokenizer_sizes,
)

# The attention query/value projections of each architecture: LoRA's classic targets.
DEFAULT_TARGETS: dict[str, list[str]] = {
    "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "gemma2": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"],
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta-v2": ["query_proj", "value_proj"],
    "modernbert": ["Wqkv"],
    "gpt2": ["c_attn"],
}


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")  # torch.load territory: never loaded

# Architectures whose position ids start after the padding index (RoBERTa's scheme): the usable
# length is max_position_embeddings - pad_token_id - 1.
OFFSET_POSITIONS = {
    "roberta",
    "xlm-roberta",
    "xlm-roberta-xl",
    "camembert",
    "data2vec-text",
    "longformer",
    "mpnet",
}


@dataclass
class LoadedModel:
    model: Any  # a peft PeftModelForSequenceClassification
    tokenizer: Any
    device: torch.device
    precision: str  # the resolved compute precision: fp32 | bf16 | fp16
    architecture: str
    params_total: int
    params_trainable: int

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.precision)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward pass's autocast context (a no-op in fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def pick_device() -> torch.device:
    """CUDA (this process's LOCAL_RANK under torchrun) where there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 compute is native here: AVX512-BF16 or AMX on a CPU, Ampere or later on CUDA."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise UserError(
            "model.precision = 'fp16' needs a CUDA device; use 'bf16' or 'auto' on a CPU"
        )
    return precision


def check_model_dir(path: str) -> dict[str, Any]:
    """The folder's config.json, or a UserError saying why this is not a model folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"model.path {path}: no such directory")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise UserError(f"model.path {path}: not a Hugging Face model folder (no config.json)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{config_file}: unreadable ({e})") from None
    if "model_type" not in config:
        raise UserError(f"{config_file}: no model_type; not a transformers model config")
    refuse_custom_code(folder, config, f"model.path {path}")
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for s in PICKLE_SUFFIXES for p in folder.glob(f"*{s}"))
        if pickles:
            raise UserError(
                f"model.path {path}: only pickle weights ({', '.join(pickles[:3])}), which can run "
                "code when loaded; entrenar-train loads *.safetensors only. Convert them once where "
                "you trust the file: AutoModel.from_pretrained(DIR, trust_remote_code=False).save_pretrained(DIR)"
            )
        raise UserError(f"model.path {path}: no weights (*.safetensors) in the folder")
    return config


def load_tokenizer(path: str) -> Any:
    """The folder's tokenizer, with a pad token (decoder models such as Qwen2 may have none)."""
    from transformers import AutoTokenizer

    if not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(
            f"model.path {path}: no tokenizer files (none of {', '.join(TOKENIZER_FILES)})"
        )
    check_tokenizer_sizes(Path(path))
    try:
        tokenizer = load_pretrained(AutoTokenizer, path)
    except Exception as e:  # transformers raises many kinds here; all mean "no usable tokenizer"
        raise UserError(
            f"model.path {path}: cannot load a tokenizer ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if tokenizer.pad_token is None:
            raise UserError(
                f"model.path {path}: the tokenizer has no pad, eos or unk token to pad with"
            )
    return tokenizer


@dataclass
class ModelPlan:
    """What a model folder is, read from its config.json and checked against the run's config
    before anything is written or any weight is loaded."""

    head: list[str]  # trained in full and saved with the adapter; never quantized
    targets: list[str]  # LoRA's target module names
    # samples per forward/backward on each process: train.micro_batch_size resolved by preflight
    micro_batch_size: int = 0
    memory: Any = (
        None  # preflight's memory plan (trainer.memory_plan.MemoryPlan): run.json's memory_plan
    )
    skeleton: Any = field(default=None, repr=False, compare=False)  # the weightless classifier
    hf_config: Any = field(default=None, repr=False, compare=False)


def inspect_model(cfg: ModelSection, lora: LoraSection) -> ModelPlan:
    """Check the model folder and the model/lora keys against it, on a weightless (meta-device)
    copy of the classifier: what it is, which modules are its head, which modules LoRA adapts and
    whether lora.r and model.max_length fit them. Raises UserError naming the key."""
    from transformers import AutoConfig

    raw_config = check_model_dir(cfg.path)
    try:
        hf_config = load_pretrained(AutoConfig, cfg.path, num_labels=2)
    except (ValueError, KeyError, OSError) as e:
        raise UserError(
            f"model.path {cfg.path}: cannot read its config.json ({str(e).splitlines()[0][:200]})"
        ) from None
    check_max_length(cfg, hf_config)
    skeleton = build_skeleton(cfg.path, hf_config)
    head = head_modules(skeleton)
    targets = target_modules(lora, raw_config["model_type"])
    check_targets(lora, skeleton, targets, head)
    return ModelPlan(head, targets, skeleton=skeleton, hf_config=hf_config)


def check_gradient_checkpointing(skeleton: torch.nn.Module, path: str) -> None:
    """train.gradient_checkpointing needs an architecture whose layers transformers can recompute
    (its `supports_gradient_checkpointing`); checked on the weightless classifier, before any
    weight loads."""
    model_class = type(skeleton)
    if not model_class.supports_gradient_checkpointing:
        raise UserError(
            f"train.gradient_checkpointing = true: {model_class.__name__} ({path}) does not support "
            "it; set it to false (or lower train.micro_batch_size to save memory)"
        )


def build_skeleton(path: str, hf_config: Any) -> torch.nn.Module:
    """The sequence classifier this config makes, on the meta device: its modules and shapes, no
    memory and no weights read."""
    from transformers import AutoModelForSequenceClassification

    try:
        with quiet_transformers(), torch.device("meta"):
            return AutoModelForSequenceClassification.from_config(
                hf_config, trust_remote_code=False
            )
    except ValueError as e:
        raise UserError(
            f"model.path {path}: cannot load as a sequence classifier ({str(e).splitlines()[0][:200]})"
        ) from None


def head_modules(model: torch.nn.Module) -> list[str]:
    """The classifier's own top-level modules besides its backbone (BERT's `classifier`, Qwen2's
    `score`, DistilBERT's `pre_classifier` and `classifier`, DeBERTa's `pooler` and `classifier`):
    freshly initialised, so trained in full (peft's modules_to_save) and kept out of quantization."""
    backbone = getattr(model, "base_model_prefix", "")
    return [
        name
        for name, child in model.named_children()
        if name != backbone and any(True for _ in child.parameters())
    ]


def max_positions(hf_config: Any) -> int | None:
    """How many tokens the model's position embeddings cover, when the config says."""
    n = getattr(hf_config, "max_position_embeddings", None) or getattr(
        hf_config, "n_positions", None
    )
    if not isinstance(n, int) or isinstance(n, bool):
        return None
    if getattr(hf_config, "model_type", "") in OFFSET_POSITIONS:
        n -= (getattr(hf_config, "pad_token_id", None) or 1) + 1
    return n


def check_max_length(cfg: ModelSection, hf_config: Any) -> None:
    n = max_positions(hf_config)
    if n is not None and cfg.max_length > n:
        raise UserError(
            f"model.max_length = {cfg.max_length} is more than the {n} positions this model has "
            f"(max_position_embeddings in {Path(cfg.path) / 'config.json'}); use at most {n}"
        )


def _adapted(model: torch.nn.Module, targets: list[str], head: list[str]) -> dict[str, Any]:
    """The modules LoRA would adapt, as peft matches them: a name equal to a target or ending in
    `.target`, outside the head (peft never adapts inside modules_to_save)."""
    out = {}
    for name, module in model.named_modules():
        if any(name == h or name.startswith(h + ".") for h in head):
            continue
        if any(name == t or name.endswith("." + t) for t in targets):
            out[name] = module
    return out


def check_targets(
    lora: LoraSection, model: torch.nn.Module, targets: list[str], head: list[str]
) -> None:
    """Every LoRA target exists, and lora.r fits the smallest of them: a rank above a layer's
    in or out size adds nothing but parameters (an absurd one is an allocation error)."""
    adapted = _adapted(model, targets, head)
    if not adapted:
        names = sorted(
            {
                n.rsplit(".", 1)[-1]
                for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear)
            }
        )
        raise UserError(
            f"lora.target_modules: no module named {', '.join(targets)} in {type(model).__name__}"
            f"{did_you_mean(targets[0], names)}"
        )
    dims = {
        name: min(m.weight.shape)
        for name, m in adapted.items()
        if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.ndim == 2
    }
    if dims:
        name, smallest = min(dims.items(), key=lambda kv: kv[1])
        if lora.r > smallest:
            raise UserError(
                f"lora.r = {lora.r} is larger than the smallest adapted layer ({name}: "
                f"{' x '.join(map(str, adapted[name].weight.shape))}); use lora.r <= {smallest}"
            )


def target_modules(lora: LoraSection, model_type: str) -> list[str]:
    if lora.target_modules != "auto":
        return (
            [lora.target_modules]
            if isinstance(lora.target_modules, str)
            else list(lora.target_modules)
        )
    if model_type not in DEFAULT_TARGETS:
        raise UserError(
            f"lora.target_modules = 'auto': no default for model type {model_type!r}; list the modules"
        )
    return DEFAULT_TARGETS[model_type]


def quantization_config(cfg: ModelSection, precision: str, head: list[str]) -> Any:
    """QLoRA: the frozen base in NF4 through bitsandbytes, computing in the run's precision. The head
    stays out: it is trained in full (transformers' own guess, "the last module", misses a head
    whose last parameter is a bias, such as BERT's classifier)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        llm_int8_skip_modules=list(head),
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=DTYPES.get(precision, torch.float32),
        bnb_4bit_quant_storage=torch.uint8,
    )


def load_model(
    cfg: ModelSection,
    lora: LoraSection,
    label_names: list[str],
    device: torch.device,
    plan: ModelPlan | None = None,
    gradient_checkpointing: bool = False,
) -> LoadedModel:
    """Tokenizer + classifier + LoRA adapters (the head trained and saved with the adapter);
    `gradient_checkpointing`: each layer's activations recomputed in the backward pass."""
    quiet_bitsandbytes()
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForSequenceClassification

    plan = plan or inspect_model(cfg, lora)
    precision = resolve_precision(cfg.precision, device)
    tokenizer = load_tokenizer(cfg.path)
    id2label = dict(enumerate(label_names))
    hf_config = load_pretrained(
        AutoConfig,
        cfg.path,
        num_labels=len(label_names),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    hf_config.pad_token_id = tokenizer.pad_token_id
    kwargs: dict[str, Any] = {"config": hf_config, "dtype": torch.float32, "use_safetensors": True}
    if cfg.quantize == "nf4":
        kwargs["quantization_config"] = quantization_config(cfg, precision, plan.head)
        kwargs["device_map"] = {"": device}
    with quiet_transformers():
        try:
            model = load_pretrained(AutoModelForSequenceClassification, cfg.path, **kwargs)
        except ValueError as e:
            raise UserError(
                f"model.path {cfg.path}: cannot load as a sequence classifier ({str(e).splitlines()[0][:200]})"
            ) from None
        if cfg.quantize == "nf4":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        else:
            model.to(device)
        if gradient_checkpointing:
            # Non-reentrant: the recompute restores the RNG state, so dropout (fast_dropout too)
            # draws the same masks again; transformers also makes the embeddings' output require
            # grad, which a frozen base under LoRA needs.
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
    peft_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=plan.targets,
        modules_to_save=list(plan.head),
    )
    try:
        with quiet_transformers():
            model = get_peft_model(model, peft_config)
    except ValueError as e:
        raise UserError(f"lora.target_modules: {str(e).splitlines()[0][:200]}") from None
    trainable, total = model.get_nb_trainable_parameters()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        precision=precision,
        architecture=type(model.get_base_model()).__name__,
        params_total=int(total),
        params_trainable=int(trainable),
    )


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout with a keep mask from 4x fewer random draws: one 64-bit word (`random_()` on the
    default generator, so checkpoints' RNG state covers it) gives four 15-bit lanes, and an element is
    kept where its lane >= p·32768. Same Bernoulli(1 - p) distribution (p rounded to 1/32768) and the
    same 1/(1 - p) scaling as torch's dropout, but another random stream. On a CPU, torch's Bernoulli
    sampling is most of dropout's time (~1.2 ms for a [32, 19, 384] activation); this is ~3x cheaper.

    The mask is made with sign arithmetic on the 16-bit lanes (lane - threshold >> 15 is -1 where
    dropped), its kept lanes given the bits of 1.0 in bf16/fp16: int16 ops that vectorize, where a
    comparison to bool and a bool-by-float product take torch's slow type-promoting paths (~2.7x
    cheaper for a bf16 activation). The values are the same: x · {0, 1} is exact, then · 1/(1 - p)."""
    if p >= 1:
        return torch.zeros_like(x)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
    lanes = words.view(torch.int16)[:n].view(x.shape)
    kept = (  # -1 (all bits set) where lane & 0x7FFF >= threshold, else 0
        lanes.bitwise_and(0x7FFF).sub_(round(p * 32768)).bitwise_right_shift_(15).bitwise_not_()
    )
    if x.dtype == torch.float16:
        ones = kept.bitwise_and_(0x3C00).view(torch.float16)
    else:
        ones = kept.bitwise_and_(0x3F80).view(torch.bfloat16).to(x.dtype)
    return x * ones * (1.0 / (1.0 - p))


class FastDropout(torch.nn.Dropout):
    """nn.Dropout drawing its mask with `fast_dropout` (checkpoints are unchanged: no new state)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return fast_dropout(x, self.p)


FAST_ATTENTION_DROPOUT = "_entrenar_fast_attention_dropout"  # on every module of a model opted in
SHORT_ATTENTION = "_entrenar_short_attention"  # on every module of a model opted in
# Up to this many positions, a CPU training step's attention runs as plain matmuls and a softmax
# (`plain_attention`): torch's CPU flash-attention backward costs ~50 ms a call even at a dozen
# positions (16 × 14 heads × 64, bf16). Forward + backward of that attention, 2 threads: plain
# 2.3 ms against flash 20.7 at 12 positions, 25.6 / 99.9 at 128, 97.4 / 140.1 at 256, 345 / 249 at
# 384 (docs/benchmarks.md, "Qwen2-0.5B shape").
MATH_ATTENTION_MAX_LENGTH = 256


def sdpa_with_fast_dropout(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                           is_causal=None, **kwargs):  # fmt: skip
    """transformers' "sdpa" attention, except where a model opted in:
    - `use_fast_dropout`: a call that trains with attention dropout on a plain encoder layer
      computes softmax(q·kᵀ·scale + mask), dropped out with `fast_dropout`, times v. On a CPU,
      SDPA with dropout runs its math path and draws the mask with Bernoulli sampling, ~1.4 ms of
      a quickstart layer's forward.
    - `use_short_attention`: a CPU call that records gradients on at most
      MATH_ATTENTION_MAX_LENGTH positions computes the same softmax(q·kᵀ·scale + mask)·v
      (`plain_attention`, grouped-query layers included), the causal mask made here for a causal
      one: the same values up to rounding (bf16: the matmuls' own), at a fraction of the flash
      kernel's backward.
    Every other call (evaluation, no gradients, long inputs, extras) goes to SDPA unchanged."""
    extras = any(kwargs.get(k) is not None for k in ("position_bias", "s_aux", "sliding_window"))
    mask_ok = attention_mask is None or attention_mask.dim() == 4
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    fast = dropout > 0 and getattr(module, FAST_ATTENTION_DROPOUT, False)
    plain = fast and not causal and key.shape[1] == query.shape[1] and not extras and mask_ok
    short = (
        getattr(module, SHORT_ATTENTION, False)
        and torch.is_grad_enabled()
        and query.device.type == "cpu"
        and query.shape[2] == key.shape[2] <= MATH_ATTENTION_MAX_LENGTH
        and not extras
        and mask_ok
    )
    if not (plain or short):
        return _SDPA(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                     is_causal=is_causal, **kwargs)  # fmt: skip
    return plain_attention(query, key, value, attention_mask, causal, scaling, dropout, fast)


def plain_attention(query, key, value, attention_mask, causal, scaling, dropout, fast):  # fmt: skip
    """softmax(q·kᵀ·scale + mask)·v with as few passes over the L×L scores as eager allows: the
    scale folded into q (a·L wide, not L²), the mask added in one pass with no backward of its
    own, the softmax in the compute dtype (torch's CPU kernel accumulates in fp32 either way) so
    that only its bf16 output is kept for the backward. Grouped-query layers multiply each
    key/value head with its `groups` query heads stacked as one matrix instead of repeating the
    key/value heads: fewer, larger matmuls and no repeat in the backward."""
    batch, heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    stacked = (query * scale).reshape(batch, kv_heads, groups * q_len, dim)
    scores = torch.matmul(stacked, key.transpose(-2, -1))  # [batch, kv_heads, groups·q_len, k_len]
    if attention_mask is None and causal and q_len > 1:  # what SDPA's is_causal would apply
        attention_mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril()
    if attention_mask is not None:
        mask = attention_mask
        if mask.dim() == 4:  # [batch, 1 or heads, q, k] → [batch, 1 or kv_heads, 1 or groups, q, k]
            per_head = mask.shape[1] == heads
            mask = mask.unflatten(1, (kv_heads, groups)) if per_head else mask[:, :, None]
        lowest = torch.finfo(scores.dtype).min  # a score plus this rounds to this: the fill's value
        if mask.dtype == torch.bool:
            mask = (~mask).to(scores.dtype) * lowest
        else:
            mask = mask.clamp(min=lowest).to(scores.dtype)
        # Added out of place: the add's backward passes the gradient through as it is, where a
        # fill in place on a view of the scores cost a copy of them and a second fill.
        per_group = scores.view(batch, kv_heads, groups, q_len, k_len) + mask
        scores = per_group.view(batch, kv_heads, groups * q_len, k_len)
    probs = torch.softmax(scores, dim=-1)
    if dropout > 0:
        probs = fast_dropout(probs, dropout) if fast else F.dropout(probs, dropout)
    out = torch.matmul(probs, value).view(batch, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


_SDPA = None  # transformers' own sdpa_attention_forward, kept when ours is registered


def _register_attention() -> None:
    """Register sdpa_with_fast_dropout as transformers' "sdpa", once a process; models that did not
    opt in are untouched (it hands their calls to the original)."""
    global _SDPA
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if _SDPA is None:
        _SDPA = ALL_ATTENTION_FUNCTIONS["sdpa"]
        AttentionInterface.register("sdpa", sdpa_with_fast_dropout)


def use_fast_dropout(model: torch.nn.Module) -> int:
    """Turn every plain nn.Dropout of the model (the base's hidden dropout, LoRA's input dropout) into a
    FastDropout in place (no new parameters or buffers: checkpoints are unchanged), and let its
    attention layers drop attention probabilities the same way (`sdpa_with_fast_dropout`, registered
    once as transformers' "sdpa"; other models in the process are untouched); returns how many
    Dropout modules it turned."""
    _register_attention()
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Dropout:
            module.__class__ = FastDropout
            count += 1
        setattr(module, FAST_ATTENTION_DROPOUT, True)  # read by the attention layers' calls
    return count


def use_short_attention(model: torch.nn.Module) -> None:
    """Let the model's attention layers compute short inputs (≤ MATH_ATTENTION_MAX_LENGTH
    positions) with plain matmuls while training on a CPU (`sdpa_with_fast_dropout`). Changes no
    parameter, buffer or random draw: checkpoints and resume are as before."""
    _register_attention()
    for module in model.modules():
        setattr(module, SHORT_ATTENTION, True)


def cpu_kernels_wanted(device: torch.device) -> bool:
    """The short-input attention and the frozen RMSNorms' short backward (trainer.rms_norm) were
    measured to pay on a CPU only (CUDA's flash and fused kernels are another story)."""
    return device.type == "cpu"


def store_frozen_matmuls(model: torch.nn.Module, precision: str) -> int:
    """Store every frozen plain nn.Linear (weight and bias) in the autocast dtype once; returns how
    many. Autocast casts a frozen fp32 weight afresh on every forward (it caches casts of trainable
    leaves only); stored cast, the matmuls get the very same values (the same round-to-nearest
    cast) without the per-step copy, and the frozen base takes half the memory. LoRA's own weights,
    the head and everything autocast keeps in fp32 (LayerNorm; embeddings, but see
    store_exact_embeddings) stay fp32; a quantized base (bitsandbytes' Linear4bit is a subclass,
    not a plain nn.Linear) is left alone."""
    if precision not in ("bf16", "fp16"):
        return 0
    dtype = DTYPES[precision]
    count = 0
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if type(module) is torch.nn.Linear and not any(p.requires_grad for p in own):
            module.to(dtype)
            count += 1
    return count


def store_exact_embeddings(model: torch.nn.Module, precision: str) -> int:
    """Store every frozen nn.Embedding table that the autocast dtype holds exactly in that dtype, its
    lookups cast back to fp32 (`_lookup_in_fp32`); returns how many. A checkpoint saved in bf16, as
    Qwen2's are, loads into fp32 tables of bf16 values: stored in bf16 they take half the memory
    (Qwen2-0.5B's 151936 × 896: 545 → 272 MB), and every lookup gives the same fp32 rows.

    Left alone: a table with any value the dtype would round (an fp32 checkpoint's), a trainable
    one, one that renormalizes itself in place (`max_norm`), and every table of a model whose
    logits `_probe_logits` finds changed by the store. That catches code that reads a table's
    weight without the lookup, or transformers' `model.dtype` (its first floating parameter, often
    this table: it now says bf16), where either changes a number. No random draw, and checkpoints
    hold the trainable parameters (and a table only where LoRA adapts it, bit for bit): resume is as
    before."""
    if precision not in ("bf16", "fp16"):
        return 0
    dtype = DTYPES[precision]
    tables = [
        m
        for m in model.modules()
        if type(m) is torch.nn.Embedding
        and m.max_norm is None
        and not m.weight.requires_grad
        and m.weight.dtype == torch.float32
        and _holds(m.weight, dtype)
    ]
    if not tables:
        return 0
    before = _probe_logits(model, precision)
    hooks = [t.to(dtype).register_forward_hook(_lookup_in_fp32) for t in tables]
    if before is None or not torch.equal(before, _probe_logits(model, precision)):
        for table, hook in zip(tables, hooks):
            hook.remove()
            table.to(torch.float32)  # exact: bf16 held every value
        return 0
    return len(tables)


def _probe_logits(model: torch.nn.Module, precision: str) -> torch.Tensor | None:
    """The model's logits for two short rows, the second padded, in eval mode (no dropout, no
    random draw) under the run's autocast; None if it cannot run them."""
    config = getattr(model, "config", None)
    pad = getattr(config, "pad_token_id", None) or 0
    ids = torch.tensor([[1, 2, 3, 4, 5, 6], [6, 5, 4, pad, pad, pad]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device, precision):
            return model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    except Exception:  # a model that needs other inputs: leave its tables alone
        return None
    finally:
        model.train(was_training)


def _holds(weight: torch.Tensor, dtype: torch.dtype, rows: int = 4096) -> bool:
    """Whether `dtype` holds every value of `weight` exactly (NaN never does); a few rows at a time,
    so that the check adds a few MB to loading's peak, not a copy of the table."""
    with torch.no_grad():
        return all(torch.equal(part.to(dtype).float(), part) for part in weight.split(rows))


def _lookup_in_fp32(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    """The rows of a table `store_exact_embeddings` stored in half precision, as the fp32 table gave
    them (the cast up is exact): autocast leaves embeddings out, so the model's stream stays fp32."""
    return output.float()


def store_frozen_base(model: torch.nn.Module, precision: str) -> None:
    """The frozen base in the autocast dtype where that is exact for the step: its Linear layers
    (`store_frozen_matmuls`: autocast would cast them anyway) and the tables that dtype holds
    (`store_exact_embeddings`)."""
    store_frozen_matmuls(model, precision)
    store_exact_embeddings(model, precision)


# glibc's mallopt parameters, and the thresholds `loading_memory` sets with them.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
LOADING_MMAP_THRESHOLD = 1 << 20  # while loading, every tensor over 1 MiB is its own mapping
# After loading, for training: a tensor up to 256 MiB comes from the heap and is reused step after
# step, and the heap keeps up to 512 MiB free at its top. glibc's own thresholds stop at 32 MiB: a
# larger activation (Qwen2-0.5B's MLP at 16 × 218 positions: 34 MiB) was a fresh mapping every
# step, its pages faulted in and zeroed, and an elementwise op on it took 2.5-4x as long (13.7 ms
# against 3.2-4.3 for one bf16 multiply of that size; docs/benchmarks.md, "Qwen2-0.5B shape").
STEADY_MMAP_THRESHOLD, STEADY_TRIM_THRESHOLD = 256 << 20, 512 << 20


@contextlib.contextmanager
def loading_memory():
    """Load the model so that what loading frees goes back to the system, not into the heap.

    The base loads in fp32, then NF4 quantizes it or its matmul weights are kept in bf16: each
    dropped fp32 copy used to stay in glibc's heap (or an arena of torch's threads), so the run's
    resident memory stayed at the loading peak, and that peak itself moved run to run with how the
    frees fell (NF4 on Qwen2-0.5B's shape, the same load five times: 1605-2361 MB peak, 735-1590
    MB after). Inside, every allocation over 1 MiB is its own mapping, returned when freed (the
    same load: 1534-1572 MB peak, 745-784 after); after, the heap is trimmed (malloc_trim) and the
    thresholds are set for training (STEADY_*: large activations reused, not mapped afresh each
    step). A no-op without glibc (musl, macOS)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, LOADING_MMAP_THRESHOLD)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, STEADY_TRIM_THRESHOLD)
            libc.malloc_trim(0)


def _glibc() -> Any:
    """The C library the process already runs on (dlopen of the program itself: no library
    searched for by name, no ldconfig or compiler started to find one), if it has glibc's calls."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def fast_dropout_wanted(setting: str, device: torch.device) -> bool:
    """train.fast_dropout: auto = on where measured to pay (the CPU; CUDA's dropout is one fused kernel)."""
    return setting == "on" or (setting == "auto" and device.type == "cpu")


def quiet_bitsandbytes() -> None:
    """bitsandbytes warns at import that an optional CPU kernel package is missing: not our user's concern."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


@contextlib.contextmanager
def quiet_transformers():
    """Hide transformers' "newly initialized weights ... you should TRAIN this model" notice: we know."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()
