"""The monitor's widgets, one a file."""
