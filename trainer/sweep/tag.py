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

ENV = "ENTRENAR_SWEEP_RUN"


def tag_environment(name: str, index: int, values: dict[str, Any]) -> dict[str, str]:
    return {ENV: orjson.dumps({"name": name, "index": index, "values": values}).decode()}


def env_tag() -> dict[str, Any] | None:
    """The tag the sweep passed to this run, None if none; a malformed one is a one-line error."""
    text = os.environ.get(ENV)
    if not text:
        return None
    try:
        tag = orjson.loads(text)
    except orjson.JSONDecodeError:
        tag = None
    if not (
        isinstance(tag, dict)
        and isinstance(tag.get("name"), str)
        and isinstance(tag.get("index"), int)
        and isinstance(tag.get("values"), dict)
    ):
        raise UserError(f"{ENV}: not a sweep run tag ({{name, index, values}}): {text[:200]!r}")
    return {"name": tag["name"], "index": tag["index"], "values": tag["values"]}
