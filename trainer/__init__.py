"""entrenar-tui's headless trainer. Importing this package is cheap: no torch here (the monitor imports trainer.monitor)."""

__version__ = "0.1.0"
