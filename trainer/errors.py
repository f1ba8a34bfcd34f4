"""Errors a user caused (bad config, data, arguments, run directory): one line each, exit code 2,
no traceback."""

MAX_PROBLEMS_SHOWN = 30  # past this a command's problems end with "and N more"


class UserError(Exception):
    """Bad input. Each problem names the file, line or key; the CLI prints one line a problem and
    exits 2. Several problems travel together so that one run names every mistake it found, not
    one mistake a run."""

    exit_code = 2

    def __init__(self, *problems: str):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def lines(self, limit: int = MAX_PROBLEMS_SHOWN) -> list[str]:
        """The problems to print, at most `limit` of them and a line saying how many more."""
        if len(self.problems) <= limit:
            return list(self.problems)
        return [*self.problems[:limit], f"and {len(self.problems) - limit:,} more problems"]


def gather(problems: list[str], check, *args, **kwargs):
    """Run `check`; a UserError it raises adds its problems to `problems` (the result: None)."""
    try:
        return check(*args, **kwargs)
    except UserError as e:
        problems.extend(e.problems)
        return None


class TrainingFailed(Exception):
    """The run failed while training (NaN/Inf loss, a crash): exit code 1, the last good checkpoint kept."""

    exit_code = 1
