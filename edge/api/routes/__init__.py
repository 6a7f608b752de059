"""One module per resource; each exposes ``router``, included by ``edge.api.app``."""
