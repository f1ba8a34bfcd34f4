"""A command's config and its data checked together, before anything is written: one run names
every unknown key, bad value, missing column and bad row (file:line), not one mistake a run."""

from __future__ import annotations

from pathlib import Path

from trainer.config import Config, ConfigCheck, check_config_file
from trainer.data import Corpus, load_corpus
from trainer.errors import UserError

# The keys that say what data to read: with one of them bad, the data is not read (what it would
# say is about a file or a column nobody asked for).
DATA_KEYS = {"", "data", "data.train", "data.validation", "data.text_field", "data.label_field",
             "data.labels"}  # fmt: skip


def check_data_too(check: ConfigCheck) -> Corpus | None:
    """The data of a config as far as it checked (its data keys good): the corpus, or None with
    the data's problems added to the config's."""
    if not check.config.data.train or check.bad_keys & DATA_KEYS:
        return None
    try:
        return load_corpus(check.config.data, check.config.train.seed)
    except UserError as e:
        check.problems.extend(e.problems)
        return None


def load_config_and_data(path: str | Path, overrides: list[str]) -> tuple[Config, Corpus]:
    """The config and the corpus it names, or one UserError with every problem of both."""
    check = check_config_file(path, overrides)
    corpus = check_data_too(check)
    config = check.valid()
    assert corpus is not None  # (a config that checked has data.train, so its data was read)
    return config, corpus
