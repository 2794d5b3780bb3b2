"""mfbo.objectives."""
