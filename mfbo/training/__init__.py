"""mfbo.training."""
