"""The tone model and other generator backends (see the "Tone model" issue)."""
