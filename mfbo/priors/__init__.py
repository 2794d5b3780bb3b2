"""mfbo.priors."""
