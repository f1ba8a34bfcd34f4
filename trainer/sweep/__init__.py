"""`entrenar-train sweep`: a grid of runs (every combination, or N drawn at random), P at a time.

plan.py      the grid and the runs drawn from it (torch-free)
record.py    sweep.json: the grid, each run's status and best metrics; the same-sweep check
tag.py       the `sweep` object a run's run.json carries (passed to the run in its environment)
runner.py    the runs as child processes: cores or GPUs split, signals forwarded, outcomes read
command.py   the command line: the grid and every run's config checked before anything starts
session.py   one call of the sweep: the directory checked and locked, what is done kept, the rest run
arguments.py the sweep's and a trial's command-line arguments
trial.py     `sweep-trial SWEEP_DIR --index I`: one trial as a unit (what a SLURM array task runs)
slurm.py     `--slurm`: the trials as one job array (sbatch), followed with squeue (--wait)
"""
