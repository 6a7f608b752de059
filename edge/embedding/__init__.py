"""Alignment and embedding (SFace)."""
