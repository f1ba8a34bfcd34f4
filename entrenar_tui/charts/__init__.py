"""Braille charts: the dot canvas, the math (ranges, smoothing, zoom, cursor) and the views
that turn a run into chart text. No Textual here."""
