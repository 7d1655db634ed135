"""Guarded streaming generation: the cascade at generation time."""
