"""Visual fashion search: shared core (settings, pipeline, CLI)."""
