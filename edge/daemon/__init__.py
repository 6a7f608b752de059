"""The long-running ``edge-face run`` process and what it needs to live under systemd."""
