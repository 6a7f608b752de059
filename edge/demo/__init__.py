"""The developer demo: sample clip, sample people, a local broker, the daemon, the events."""
