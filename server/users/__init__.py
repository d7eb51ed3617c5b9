"""User profiles: the private `me` view and the public profile."""
