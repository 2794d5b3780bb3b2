"""mfbo.testing."""
