"""The monitor's screens, one a file."""
