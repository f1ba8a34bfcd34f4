"""The command lines' parser: argparse whose mistakes are UserErrors (one line, exit 2)."""

from __future__ import annotations

import argparse

from trainer.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are UserErrors (one line, exit 2) rather than a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see entrenar-train --help)")
