"""mfbo.study."""
