"""mfbo.inspect."""
