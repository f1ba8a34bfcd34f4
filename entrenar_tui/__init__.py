"""entrenar-tui's Textual monitor. Imports trainer.monitor only: never torch (it runs on login nodes)."""
