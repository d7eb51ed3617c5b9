"""Administration: verifying drivers."""
