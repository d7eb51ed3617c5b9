"""Reviews between participants of a completed ride; exact ratings under concurrency."""
