"""A model or checkpoint folder that needs its own Python code is refused before anything loads.

transformers runs a folder's .py files when its config.json (or tokenizer_config.json) names them
in `auto_map` and the caller trusts remote code; left unset, it asks "Do you wish to run the
custom code? [y/N]" on stdin, which the texts piped to `entrenar-train predict` would answer.
Every loader here passes trust_remote_code=False, so it never asks; this check turns what would
then be a traceback deep in transformers into one line naming the file, before any loader runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.checkpoint import read_json
from trainer.errors import UserError
from trainer.hub_kernels import forbid_hub_kernels
from trainer.monitor.text import printable

TOKENIZER_CONFIG = "tokenizer_config.json"


def _auto_map(config: dict[str, Any]) -> str | None:
    auto_map = config.get("auto_map")
    if not auto_map:
        return None
    if isinstance(auto_map, dict):
        names = [f"{k}: {v}" for k, v in list(auto_map.items())[:2]]
        return printable(", ".join(names))[:160]
    return printable(str(auto_map))[:160]


def refuse_custom_code(folder: str | Path, config: dict[str, Any], what: str) -> None:
    """UserError when the folder's config.json (already read: `config`) or tokenizer_config.json
    asks for custom code, or names a model_type this transformers does not have. `what` names the
    folder in the message (`model.path DIR`, a checkpoint)."""
    from transformers import __version__ as transformers_version
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    folder = Path(folder)
    config = config if isinstance(config, dict) else {}
    never = "entrenar-train never runs a model folder's own code (trust_remote_code=False)"
    names = _auto_map(config)
    if names:
        raise UserError(
            f"{what}: {folder / 'config.json'} asks for custom code (auto_map {names}); {never}. "
            "If transformers' own class for its model_type fits, delete auto_map from config.json"
        )
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise UserError(
            f"{what}: {folder / 'config.json'}: model_type {printable(repr(model_type))[:80]} is not "
            f"one transformers {transformers_version} knows; only custom code could load it, and "
            f"{never}"
        )
    tokenizer_config = folder / TOKENIZER_CONFIG
    if tokenizer_config.is_file():
        names = _auto_map(read_json(tokenizer_config))
        if names:
            raise UserError(
                f"{what}: {tokenizer_config} asks for custom code (auto_map {names}); {never}. "
                f"If transformers' own tokenizer fits, delete auto_map from {TOKENIZER_CONFIG}"
            )


def load_pretrained(auto_class: Any, path: str | Path, **kwargs: Any) -> Any:
    """`auto_class.from_pretrained(path, trust_remote_code=False, **kwargs)`: it never runs the
    folder's code, never asks on stdin whether to, and never fetches the Hub's kernels. Every config,
    tokenizer and model load of the trainer goes here."""
    forbid_hub_kernels()
    return auto_class.from_pretrained(path, trust_remote_code=False, **kwargs)
