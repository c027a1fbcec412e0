"""One blueprint per surface of the service."""
