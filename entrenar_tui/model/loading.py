"""A run directory read once into a RunModel: what `--once`, the browser and the comparison see,
through RunModel.apply, the path the run screen's watcher messages take too. So a value is
checked, a problem named and a status worked out the same way wherever a run is shown."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from entrenar_tui.model.run import RunModel
from trainer.monitor.reader import RunReader
from trainer.monitor.schema import LIVE_STATUSES, Files
from trainer.monitor.step_tail import read_recent_steps

StepsToRead = Literal["all", "recent", "none"]


def load_run_model(
    run_dir: str | Path,
    *,
    clock: Callable[[], float] = time.time,
    steps: StepsToRead = "all",
) -> RunModel:
    """The run's JSON files and, by `steps`, its whole history ("all": `--once`, the comparison),
    or of a live run only the last lines of steps.jsonl ("recent": the browser, for the crash
    rule's typical step time, one bounded read however long the run), or none. A problem of steps.jsonl is named only
    where it is read whole."""
    model = RunModel(run_dir, clock=clock)
    reader = RunReader(run_dir)
    update = reader.poll(steps=steps == "all")
    model.apply(update)
    batch = update.steps
    while batch is not None and batch.more:
        batch = reader.steps.read()
        model.add_steps(batch)
    if steps == "recent" and (model.state or {}).get("status") in LIVE_STATUSES:
        model.history.add(read_recent_steps(Path(run_dir) / Files.STEPS))
    return model
