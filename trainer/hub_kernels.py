"""No compiled kernel is fetched from the Hugging Face Hub into the trainer's process.

Two libraries would: transformers 5 "kernelizes" every model it loads with layers from the Hub's
`kernels` repositories unless `USE_HUB_KERNELS` says no, and bitsandbytes (imported by peft
whenever it is installed) asks the `kernels` package for `kernels-community/quantization-
bitsandbytes` on a CPU with AVX512-BF16. On a machine that reaches the Hub either downloads a
shared library and loads it: code the user never installed (offline, they print warnings). So the
trainer says no to transformers (its own switch) and makes `kernels` unimportable before anything
imports bitsandbytes, which then uses the kernels it ships. Called first thing by `entrenar-train`'s
main and again by every model load (trainer.custom_code.load_pretrained).
"""

from __future__ import annotations

import logging
import os
import sys


def forbid_hub_kernels() -> None:
    """Turn transformers' hub kernels off, make `import kernels` fail in this process (importlib
    then finds no such module), and keep bitsandbytes' note that it fell back off stderr."""
    os.environ["USE_HUB_KERNELS"] = "NO"
    sys.modules.setdefault("kernels", None)  # type: ignore[arg-type]
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
