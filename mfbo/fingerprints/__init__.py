"""mfbo.fingerprints."""
