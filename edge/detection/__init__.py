"""Face detection (YuNet) with rescue passes for hard frames."""
