"""Text out of the monitor: number and duration formatting, the plain `--once` summaries and
the CSV/JSON export. No Textual here."""
