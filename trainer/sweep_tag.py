"""The `sweep` object of a run's run.json: {"name", "index", "values"}, which sweep the run belongs
to and the grid values it was started with (the browser's columns).

The sweep passes it to each run it starts in the environment (ENTRENAR_SWEEP_RUN, JSON), as
torchrun passes RANK: the command line stays the one a user would type. A run resumed by hand
keeps the tag its run.json already has."""

from __future__ import annotations

import os
from typing import Any

import orjson

from trainer.errors import UserError
from trainer.monitor.text import printable

ENV = "ENTRENAR_SWEEP_RUN"


def tag_environment(name: str, index: int, values: dict[str, Any]) -> dict[str, str]:
    return {ENV: orjson.dumps({"name": name, "index": index, "values": values}).decode()}


MAX_VALUES = 64  # a tag's values are grid keys, each a config key: the config has fewer
MAX_BYTES = 16 * 1024  # its JSON: short override values (a list of module names at most)


def env_tag() -> dict[str, Any] | None:
    """The tag the sweep passed to this run, None if none; a malformed or oversized one is a
    one-line error (it is copied into run.json, which every monitor reads)."""
    text = os.environ.get(ENV)
    if not text:
        return None
    tag = _parsed(text)
    if tag is None:
        raise UserError(
            f"{ENV}: not a sweep run tag ({{name, index, values}}, at most {MAX_VALUES} values "
            f"and {MAX_BYTES // 1024} KiB): {printable(text[:200])}"
        )
    return tag


def kept_tag(value: Any) -> dict[str, Any] | None:
    """run.json's tag, kept by a hand resume only when it is one a sweep could have written (a
    planted one of 20,000 keys is dropped, not copied on)."""
    if not isinstance(value, dict):
        return None
    try:
        return _parsed(orjson.dumps(value).decode())
    except TypeError:
        return None


def _parsed(text: str) -> dict[str, Any] | None:
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        return None
    try:
        tag = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not (
        isinstance(tag, dict)
        and isinstance(tag.get("name"), str)
        and isinstance(tag.get("index"), int)
        and not isinstance(tag.get("index"), bool)
        and isinstance(tag.get("values"), dict)
        and len(tag["values"]) <= MAX_VALUES
    ):
        return None
    return {"name": tag["name"], "index": tag["index"], "values": tag["values"]}
