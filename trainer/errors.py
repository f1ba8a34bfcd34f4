"""Errors a user caused (bad config, data, arguments, run directory): one line, exit code 2, no traceback."""


class UserError(Exception):
    """Bad input. The message names the file, line or key; the CLI prints it on one line and exits 2."""

    exit_code = 2


class TrainingFailed(Exception):
    """The run failed while training (NaN/Inf loss, a crash): exit code 1, the last good checkpoint kept."""

    exit_code = 1
