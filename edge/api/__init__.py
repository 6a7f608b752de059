"""The local admin API: FastAPI routes over the service layer, served inside the daemon.

Importing this package costs nothing: FastAPI and uvicorn are imported by ``edge.api.app`` and
``edge.api.server`` only when the API is enabled, and the CLI's ``token`` command uses
``edge.api.tokens`` alone.
"""
