"""How a sweep chooses its runs and judges them: `--search grid|random|tpe`, `--trials N`,
`--param`, `--objective`, `--prune`, `--target`, checked together (one line each, exit 2).

grid and random without `--param` are the plan's grid (trainer/sweep/plan.py), as before. tpe, and
random with `--param`, ask an optuna study for each run's values (a *study sweep*): its space is
every `--param` and every `--grid` list (a categorical choice). Pruning compares a run with the
study's other trials, so `--prune` needs a study sweep. Torch-free, optuna-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainer.errors import UserError
from trainer.sweep.plan import Grid
from trainer.sweep.space import Param

SEARCHES = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "asha")
OBJECTIVES = {"val_loss": "minimize", "val_accuracy": "maximize", "macro_f1": "maximize"}


@dataclass
class Search:
    search: str = "grid"
    params: list[Param] = field(default_factory=list)  # a study sweep's space, grid lists included
    trials: int | None = None
    metric: str = "val_loss"
    prune: str = "none"
    target: float | None = None
    seed: int = 0

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.metric]

    @property
    def study(self) -> bool:
        """Whether optuna chooses the runs' values (tpe; random over ranges)."""
        return self.search == "tpe" or (self.search == "random" and bool(self.params))

    def record(self) -> dict[str, Any]:
        """sweep.json's fields for it (the identity of a study sweep includes them)."""
        return {
            "search": self.search,
            "space": [p.to_dict() for p in self.params] if self.study else [],
            "trials": self.trials if self.study else None,
            "objective": {"metric": self.metric, "direction": self.direction},
            "prune": self.prune,
            "target": self.target,
        }


# What a sweep.json written before these fields means (a grid or random sweep, judged by val loss).
DEFAULTS = Search().record() | {"search": None}


def choose_search(args: Any, grid_axes: int, params: list[Param]) -> Search:
    """The Search the arguments describe, every combination checked."""
    search = args.search or ("random" if args.random is not None else "grid")
    if search not in SEARCHES:  # (argparse's choices name it too)
        raise UserError(f"--search {search}: use one of {', '.join(SEARCHES)}")
    if args.objective not in OBJECTIVES:
        raise UserError(f"--objective {args.objective}: use one of {', '.join(OBJECTIVES)}")
    if args.prune not in PRUNERS:
        raise UserError(f"--prune {args.prune}: use one of {', '.join(PRUNERS)}")
    if args.target is not None and args.target != args.target:
        raise UserError("--target nan: give a number")
    s = Search(search, list(params), args.trials, args.objective, args.prune, args.target)
    s.seed = args.seed if args.seed is not None else 0
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials {args.trials}: must be at least 1")
    if search == "grid":
        if params:
            raise UserError(
                "--param needs --search tpe or --search random (a grid takes --grid lists)"
            )
        if args.trials is not None:
            raise UserError(
                "--trials goes with --search tpe or random (a grid runs every combination)"
            )
    if search == "tpe" and args.random is not None:
        raise UserError("--random N is a random draw; with --search tpe give --trials N")
    if s.study:
        if args.trials is None:
            raise UserError(
                f"--search {search} needs --trials N (how many runs the study asks for)"
            )
        if args.random is not None:
            raise UserError("--random N draws from a grid; with --param give --trials N")
        if not params and not grid_axes:
            raise UserError("nothing to search: give --param KEY=SPEC or --grid KEY=V1,V2")
    elif search == "random" and args.random is None and args.trials is None:
        raise UserError("--search random needs --trials N (how many combinations to draw)")
    elif s.prune != "none":
        raise UserError(
            f"--prune {s.prune}: pruning compares a run with the study's other trials; use it with "
            "--search tpe (or --search random with --param)"
        )
    return s


def study_space(grid: Grid, params: list[Param]) -> list[Param]:
    """A study sweep's space: each --grid list a choice, then the ranges."""
    space = [
        Param(a.key, "choice", choices=tuple(a.values), from_file=a.from_file) for a in grid.axes
    ]
    seen = {p.key for p in space}
    for param in params:
        if param.key in seen:
            raise UserError(f"{param.key}: swept twice (in [sweep], --grid or --param)")
        seen.add(param.key)
        space.append(param)
    return space
