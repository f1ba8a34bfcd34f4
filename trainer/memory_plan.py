"""The memory plan: how many bytes a run needs, from the model's config alone, before any weight is
loaded, against what the device has. It picks `train.micro_batch_size = "auto"` and refuses an
explicit micro-batch that cannot fit, so a run that would run out of memory minutes into loading is
told so in one line instead.

The terms (docs/memory.md derives each one and gives the measured error):
- the frozen base as the trainer stores it: NF4 at its real bytes per weight (4 bits plus the block
  constants), else the frozen Linear layers in the autocast dtype (`store_frozen_matmuls`), the rest
  (embeddings, norms) fp32 (an embedding table the trainer stores in bf16 because bf16 holds it
  exactly is still counted fp32: the plan reads no weight); and the loading peak before that store
  (the fp32 checkpoint in memory);
- the trainable parameters (LoRA A/B and the head) with their gradients and AdamW's two moments, fp32;
- the activations autograd keeps for one micro-batch of `model.max_length` tokens: the per-layer
  accounting of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
  Models", section 4.1) redone for frozen weights: a frozen matmul keeps nothing for its backward
  (its weight's gradient is never asked for), so only the norms, the element-wise nonlinearities,
  attention, dropout masks and LoRA's own inputs keep tensors (and NF4 matmuls: bitsandbytes keeps
  their inputs);
- the working set beyond what autograd keeps: on CUDA one layer's activations again (its
  gradients while its backward runs); on a CPU as much again as all the kept activations (measured:
  the forward's freed temporaries stay in the process's heap, RSS 1.9-2.2x the kept tensors).
Pure arithmetic over the weightless (meta-device) classifier that preflight builds anyway.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.errors import UserError
from trainer.micro_batches import asked_micro_batch, micro_batch_sizes, process_share

MiB = 1024**2
GiB = 1024**3

# What the plan leaves unused of what the device has: the allocator's fragmentation (CUDA's caching
# allocator, glibc's arenas), kernels' workspaces and what else runs on the machine. Above the
# plan's measured error (docs/memory.md), so a plan that fits is a run that fits.
MARGIN = 0.15

AVAILABLE_ENV = "ENTRENAR_MEMORY_AVAILABLE"  # a testing aid: pretend the device has this much

# Pre-norm decoders with a gated (SwiGLU/GeGLU) MLP and RMSNorm; every other architecture is planned
# with a post-norm encoder layer's terms (BERT's: LayerNorm, GELU, dropout).
DECODERS = {"qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "phi3"}

NF4_BLOCK = 64  # bitsandbytes' NF4 block: one absmax constant per 64 weights
NF4_NESTED_BLOCK = 256  # double quant: the absmax constants quantized to 8 bits in blocks of 256


def nf4_bytes_per_weight(double_quant: bool) -> float:
    """4 bits a weight plus its block's absmax: fp32 (4 bytes / 64 weights), or with double
    quantization 8 bits plus an fp32 constant per 256 blocks (QLoRA paper, section 3)."""
    if double_quant:
        return 0.5 + 1 / NF4_BLOCK + 4 / (NF4_BLOCK * NF4_NESTED_BLOCK)
    return 0.5 + 4 / NF4_BLOCK


@dataclass
class LayerShape:
    """A transformer layer's sizes, read from the model's config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    attention_width: int  # heads × head dim (= hidden in most models)
    decoder: bool  # pre-norm, gated MLP (else a post-norm encoder layer)
    hidden_dropout: float
    attention_dropout: float


def _first(config: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def layer_shape(hf_config: Any) -> LayerShape:
    hidden = int(_first(hf_config, "hidden_size", "dim", "n_embd", "d_model"))
    heads = int(_first(hf_config, "num_attention_heads", "n_heads", "n_head"))
    head_dim = _first(hf_config, "head_dim", default=None) or hidden // heads
    return LayerShape(
        layers=int(_first(hf_config, "num_hidden_layers", "n_layers", "n_layer")),
        hidden=hidden,
        intermediate=int(
            _first(hf_config, "intermediate_size", "hidden_dim", "n_inner", default=4 * hidden)
        ),
        heads=heads,
        attention_width=int(heads * head_dim),
        decoder=getattr(hf_config, "model_type", "") in DECODERS,
        hidden_dropout=float(_first(hf_config, "hidden_dropout_prob", "dropout", default=0.0)),
        attention_dropout=float(
            _first(hf_config, "attention_probs_dropout_prob", "attention_dropout", default=0.0)
        ),
    )


@dataclass
class WeightCounts:
    """Parameter counts of the classifier (from its meta-device copy) by how the trainer stores them."""

    linear_weights: int  # the backbone's nn.Linear weights: NF4, or stored in the autocast dtype
    linear_biases: int
    other: int  # embeddings, norms: fp32 (autocast keeps them there; bitsandbytes skips them)
    head: int  # trained in full; peft keeps a frozen copy of it beside the trained one
    lora: int  # LoRA's A and B: r × (in + out) per adapted layer
    lora_inputs: int  # the adapted layers' input widths, summed: what LoRA's A keeps per token
    lora_layers: int  # how many layers LoRA adapts
    largest_linear: int  # one weight's elements: the transient of quantizing it while loading
    buffer_bytes: int
    linear_inputs: int = 0  # the backbone Linear layers' input widths, summed: what NF4 ones keep


def weight_counts(
    skeleton: torch.nn.Module, head: list[str], adapted: dict[str, Any], r: int
) -> WeightCounts:
    in_head = {id(p) for name in head for p in getattr(skeleton, name).parameters()}
    linear_w = linear_b = other = largest = inputs = 0
    for module in skeleton.modules():
        if not isinstance(module, torch.nn.Linear) or id(module.weight) in in_head:
            continue
        linear_w += module.weight.numel()
        largest = max(largest, module.weight.numel())
        inputs += module.in_features
        if module.bias is not None:
            linear_b += module.bias.numel()
    seen = {id(m.weight) for m in skeleton.modules() if isinstance(m, torch.nn.Linear)}
    seen |= {id(m.bias) for m in skeleton.modules() if isinstance(m, torch.nn.Linear)}
    for p in skeleton.parameters():
        if id(p) not in seen and id(p) not in in_head:
            other += p.numel()
    layers = [m for m in adapted.values() if isinstance(m, torch.nn.Linear)]
    return WeightCounts(
        linear_weights=linear_w,
        linear_biases=linear_b,
        other=other,
        head=sum(p.numel() for name in head for p in getattr(skeleton, name).parameters()),
        lora=sum(r * (m.in_features + m.out_features) for m in layers),
        lora_inputs=sum(m.in_features for m in layers),
        lora_layers=len(layers),
        largest_linear=largest,
        buffer_bytes=sum(b.numel() * b.element_size() for b in skeleton.buffers()),
        linear_inputs=inputs,
    )


@dataclass
class Setting:
    """The run's choices the plan depends on."""

    device: str  # "cpu" | "cuda"
    precision: str  # resolved: fp32 | bf16 | fp16
    quantize: str  # none | nf4
    double_quant: bool
    max_length: int
    lora_r: int
    lora_dropout: float
    fast_dropout: bool  # trainer.model.fast_dropout: masks kept in the activation's dtype
    gradient_checkpointing: bool
    checkpoint_bytes: int = 0  # the folder's *.safetensors: mapped into RAM while a CPU run loads


def base_bytes(w: WeightCounts, s: Setting) -> int:
    """The frozen base as stored while training (the head's frozen copy included)."""
    half = s.precision in ("bf16", "fp16")
    if s.quantize == "nf4":
        linear = w.linear_weights * nf4_bytes_per_weight(s.double_quant) + 4 * w.linear_biases
    else:
        linear = (w.linear_weights + w.linear_biases) * (2 if half else 4)
    return int(linear + 4 * w.other + (2 if half else 4) * w.head + w.buffer_bytes)


def load_bytes(w: WeightCounts, s: Setting) -> int:
    """The loading peak: the checkpoint in fp32 before store_frozen_matmuls halves its Linear layers;
    with NF4, the quantized base plus the one fp32 weight being quantized. On a CPU the safetensors
    files are memory-mapped while they load: their pages are in RAM too."""
    mapped = s.checkpoint_bytes if s.device == "cpu" else 0
    if s.quantize == "nf4":
        return base_bytes(w, s) + 4 * w.largest_linear + mapped
    return 4 * (w.linear_weights + w.linear_biases + w.other + w.head) + w.buffer_bytes + mapped


def trainable_bytes(w: WeightCounts) -> int:
    """LoRA and the head in fp32: weight 4 + gradient 4 + AdamW's exp_avg and exp_avg_sq 8."""
    return 16 * (w.lora + w.head)


def layer_bytes_per_token(shape: LayerShape, w: WeightCounts, s: Setting) -> float:
    """What autograd keeps for one token of one layer (docs/memory.md, "Activations")."""
    e = 2 if s.precision in ("bf16", "fp16") else 4  # a matmul's output under autocast
    cuda = s.device == "cuda"
    h, f, a = shape.hidden, shape.intermediate, shape.heads
    # LoRA: A keeps its (cast) input, B keeps A's r-wide output; a dropout before A keeps its mask:
    # fast_dropout's multiplier in the input's dtype (fp32: the residual side), torch's bool on CUDA.
    lora_mask = 0 if s.lora_dropout == 0 else (1 if cuda and not s.fast_dropout else 4)
    lora = (w.lora_inputs * (e + lora_mask) + w.lora_layers * s.lora_r * e) / shape.layers
    # Attention. Fused SDPA (flash / memory-efficient / CPU flash) keeps q, k, v, the output and a
    # fp32 log-sum-exp per head; with dropout on a CPU the probabilities are materialized
    # (trainer.model.plain_attention): the softmax, the mask and the dropped probabilities, a × s
    # each per token, in the compute dtype.
    width = shape.attention_width
    if shape.attention_dropout > 0 and not cuda:
        attention = 3 * e * width + a * s.max_length * 3 * e
    else:
        attention = 4 * e * width + 4 * a
    # bitsandbytes' 4-bit matmul keeps its (cast) input for the backward even with the weight frozen.
    quantized = e * w.linear_inputs / shape.layers if s.quantize == "nf4" else 0
    if shape.decoder:  # 2 RMSNorms keep their fp32 input; SiLU(gate) · up keeps 3 f-wide tensors
        kept = 2 * 4 * h + lora + attention + 3 * e * f + quantized
    else:
        # Post-norm encoder: 2 LayerNorms keep their fp32 input; GELU its input; 2 hidden dropouts
        # (after the attention output and the MLP) their masks.
        mask = 0 if shape.hidden_dropout == 0 else (1 if cuda and not s.fast_dropout else e)
        kept = 2 * 4 * h + 2 * mask * h + lora + attention + e * f + quantized
    if cuda or shape.attention_dropout > 0:
        return kept
    # On a CPU, inputs of up to m positions train through plain matmuls
    # (trainer.model.use_short_attention), which keep the softmax in the compute dtype: a × L per
    # token. The plan counts max_length tokens a sample; the worst batch is the larger of one at
    # max_length (no softmax kept past m positions) and one at m positions with it.
    from trainer.model import MATH_ATTENTION_MAX_LENGTH

    m = min(s.max_length, MATH_ATTENTION_MAX_LENGTH)
    return max(kept, m / s.max_length * (kept + a * m * e))


@dataclass
class MemoryPlan:
    """The plan of one micro-batch size: each part in bytes, the total, what the device has.
    Recorded in run.json as `memory_plan` (docs/contract.md)."""

    device: str
    precision: str
    quantize: str
    micro_batch_size: int
    max_length: int
    gradient_checkpointing: bool
    base_weights: int
    trainable: int  # LoRA + head, with gradients and AdamW state
    activations: int
    workspace: int  # beyond the kept activations: one layer's (CUDA), a whole step's (CPU heap)
    loading: int  # the peak while loading, before the frozen base is stored in its final dtype
    available: int
    available_from: str  # where `available` comes from
    margin: float

    @property
    def training(self) -> int:
        return self.base_weights + self.trainable + self.activations + self.workspace

    @property
    def total(self) -> int:
        """The peak: loading or training, whichever is more."""
        return max(self.training, self.loading)

    @property
    def usable(self) -> int:
        return int(self.available * (1 - self.margin))

    @property
    def fits(self) -> bool:
        return self.total <= self.usable

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "training": self.training, "total": self.total, "fits": self.fits}


@dataclass
class ModelMemory:
    """Everything the plan needs about the model and the run, micro-batch aside."""

    shape: LayerShape
    weights: WeightCounts
    setting: Setting

    def plan(self, micro_batch_size: int, available: int, available_from: str) -> MemoryPlan:
        s, shape = self.setting, self.shape
        tokens = micro_batch_size * s.max_length
        per_layer = layer_bytes_per_token(shape, self.weights, s) * tokens
        # Outside the layers: a decoder's final RMSNorm (fp32 input) and the head's input on every
        # token (Qwen2 scores every position, then takes the last); an encoder's head sees one.
        outside = (4 + (2 if s.precision in ("bf16", "fp16") else 4)) * shape.hidden * tokens
        outside = outside if shape.decoder else 0
        every_layer = shape.layers * per_layer + outside  # what one step's forward allocates
        if s.gradient_checkpointing:  # each layer keeps its fp32 input; one layer is recomputed
            activations = shape.layers * 4 * shape.hidden * tokens + per_layer + outside
        else:
            activations = every_layer
        return MemoryPlan(
            device=s.device,
            precision=s.precision,
            quantize=s.quantize,
            micro_batch_size=micro_batch_size,
            max_length=s.max_length,
            gradient_checkpointing=s.gradient_checkpointing,
            base_weights=base_bytes(self.weights, s),
            trainable=trainable_bytes(self.weights),
            activations=int(activations),
            # CPU: glibc's heap keeps what a step freed, and a checkpointed backward recomputes
            # every layer, so the step's whole allocation stays resident (measured on Qwen2-0.5B's
            # shape, 16 x 256 tokens, checkpointing: ~1.8 GB held between steps, not 0.6).
            workspace=int(every_layer if s.device == "cpu" else per_layer),
            loading=load_bytes(self.weights, s),
            available=available,
            available_from=available_from,
            margin=MARGIN,
        )


# ------------------------------------------------------------------------------------ the device


SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int | None:
    """'2GiB', '512 MiB', '1.5GB', '123456' (bytes) -> bytes; None when it is not a size."""
    m = SIZE.match(text)
    if not m:
        return None
    return int(float(m.group(1)) * UNITS[(m.group(2) or "b").lower()])


def available_memory(device: torch.device) -> tuple[int, str]:
    """What this process may use: CUDA's free memory on its device, or the RAM the OS says is
    available shared among this host's processes (LOCAL_WORLD_SIZE under torchrun).
    ENTRENAR_MEMORY_AVAILABLE pretends a size (a testing aid, documented in docs/memory.md)."""
    pretend = os.environ.get(AVAILABLE_ENV)
    if pretend is not None:
        size = parse_size(pretend)
        if size is None:
            raise UserError(
                f"{AVAILABLE_ENV}={pretend!r}: not a size (write e.g. 2GiB, 512MiB or bytes)"
            )
        return size, AVAILABLE_ENV
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device}"
    import psutil

    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    share = f" / {local} processes" if local > 1 else ""
    return psutil.virtual_memory().available // local, f"RAM available{share}"


# ---------------------------------------------------------------------------- the micro-batch


def choose_micro_batch(
    memory: ModelMemory, sizes: list[int], asked: int | str, available: int, source: str
) -> MemoryPlan:
    """The plan of the asked micro-batch, or for "auto" of the largest of `sizes` (those that make
    whole accumulation steps, ascending: micro_batches.micro_batch_sizes) that fits; a UserError
    naming the ways out when it does not fit."""
    if asked != "auto":
        plan = memory.plan(int(asked), available, source)
        if not plan.fits:
            smaller = [d for d in sizes if memory.plan(d, available, source).fits]
            hint = f" ({max(smaller)} fits)" if smaller else ""
            raise UserError(
                f"train.micro_batch_size = {asked} does not fit: {too_big(plan)}; lower "
                f"train.micro_batch_size{hint}, set train.gradient_checkpointing = true, or "
                f'model.quantize = "nf4" (entrenar-train CONFIG --estimate shows the plan)'
            )
        return plan
    plans = [memory.plan(d, available, source) for d in sizes]
    fitting = [p for p in plans if p.fits]
    if not fitting:
        raise UserError(
            f"train.micro_batch_size = auto: not even 1 sample fits: {too_big(plans[0])}; set "
            f'train.gradient_checkpointing = true, model.quantize = "nf4" or a smaller '
            f"model.max_length (entrenar-train CONFIG --estimate shows the plan)"
        )
    return fitting[-1]


def too_big(plan: MemoryPlan) -> str:
    return (
        f"the memory plan needs {gib(plan.total)} on {plan.device} (weights "
        f"{gib(plan.base_weights)}, activations {gib(plan.activations + plan.workspace)}), more "
        f"than the {gib(plan.usable)} usable of {gib(plan.available)} {plan.available_from}"
    )


def gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / MiB:.1f} MiB"


def world_size() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


# ------------------------------------------------------------------------------------ the table


def table(plan: MemoryPlan, architecture: str, per_process: int, asked: int | str) -> str:
    """The plan as `entrenar-train CONFIG --estimate` prints it."""
    checkpointing = "on" if plan.gradient_checkpointing else "off"
    stored = "nf4" if plan.quantize == "nf4" else f"{plan.precision} matmuls"
    rows = [
        (f"frozen base weights ({stored})", plan.base_weights),
        ("trainable (LoRA + head) with grads and AdamW", plan.trainable),
        (f"activations ({plan.micro_batch_size} x {plan.max_length} tokens)", plan.activations),
        (
            f"working set ({'freed temporaries in the heap' if plan.device == 'cpu' else 'one layer'})",
            plan.workspace,
        ),
        ("training total", plan.training),
        ("loading peak (before the frozen base is stored)", plan.loading),
        ("total (the larger)", plan.total),
        (f"available ({plan.available_from})", plan.available),
        (f"usable (margin {plan.margin:.0%})", plan.usable),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [
        f"memory plan: {architecture} on {plan.device}, {plan.precision}, gradient checkpointing "
        f"{checkpointing}"
    ]
    lines += [f"  {label:<{width}}  {n / MiB:>10.1f} MiB" for label, n in rows]
    if asked == "auto":
        verdict = (
            f"auto picks {plan.micro_batch_size}: the largest divisor of {per_process} that fits"
        )
    else:
        verdict = f"{asked}: {'fits' if plan.fits else 'does NOT fit'}"
    lines.append(f"  train.micro_batch_size = {verdict}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- from a config


def model_memory(config: Any, model_plan: Any, device: torch.device) -> ModelMemory:
    """The plan's inputs for a run's config and the weightless model preflight inspected."""
    from trainer.model import _adapted, fast_dropout_wanted, resolve_precision

    skeleton = model_plan.skeleton
    adapted = _adapted(skeleton, model_plan.targets, model_plan.head)
    return ModelMemory(
        shape=layer_shape(model_plan.hf_config),
        weights=weight_counts(skeleton, model_plan.head, adapted, config.lora.r),
        setting=Setting(
            device=device.type,
            precision=resolve_precision(config.model.precision, device),
            quantize=config.model.quantize,
            double_quant=config.model.double_quant,
            max_length=config.model.max_length,
            lora_r=config.lora.r,
            lora_dropout=config.lora.dropout,
            fast_dropout=fast_dropout_wanted(config.train.fast_dropout, device),
            gradient_checkpointing=config.train.gradient_checkpointing,
            checkpoint_bytes=sum(
                f.stat().st_size for f in Path(config.model.path).glob("*.safetensors")
            ),
        ),
    )


def asked_and_sizes(config: Any) -> tuple[int | str, list[int], int]:
    """train.micro_batch_size as asked (checked against the batch), the sizes auto may pick, and a
    process's share of the batch."""
    batch_size, world = config.train.batch_size, world_size()
    asked = asked_micro_batch(config.train.micro_batch_size, batch_size, world)
    return asked, micro_batch_sizes(batch_size, world), process_share(batch_size, world)


def plan_micro_batch(config: Any, model_plan: Any) -> MemoryPlan:
    """preflight's memory check: the plan of the micro-batch this process will run (UserError when
    it cannot fit; nothing is loaded or written yet)."""
    from trainer.model import pick_device

    device = pick_device()
    memory = model_memory(config, model_plan, device)
    available, source = available_memory(device)
    asked, sizes, _ = asked_and_sizes(config)
    return choose_micro_batch(memory, sizes, asked, available, source)


def estimate(config: Any, model_plan: Any) -> str:
    """`--estimate`: the table, and the refusal a run would give, if any (no raise: it only tells)."""
    from trainer.model import pick_device

    device = pick_device()
    memory = model_memory(config, model_plan, device)
    available, source = available_memory(device)
    asked, sizes, per_process = asked_and_sizes(config)
    try:
        plan, refusal = choose_micro_batch(memory, sizes, asked, available, source), ""
    except UserError as e:
        plan = memory.plan(1 if asked == "auto" else int(asked), available, source)
        refusal = f"\n  a run would stop here: {e}"
    architecture = type(model_plan.skeleton).__name__
    return table(plan, architecture, per_process, asked) + refusal
