"""One alert: what the rule modules (alerts.py, class_alerts.py, flat_loss.py) return and the app
tells. Its own module so that each rule can live in a module of its own without an import cycle
through alerts.py, which gathers them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Alert:
    """One event worth a warning. `key` names the event (`nan@step:152`, `spike@step:90`,
    `stall@step:40`, `val_rising@epoch:5`, `crashed@step:52`, `finished:completed@step:60`,
    `recovered@step:5#0`: the first of run.json's recoveries, seen at step 5; `single_class@epoch:1`,
    `below_baseline@epoch:2`, `never_predicted@epoch:2`, `flat_loss@epoch:1`): the same event
    found again has the same key."""

    key: str
    kind: str  # one of alerts.KINDS
    message: str
