"""What leaves the device: small JSON events, kept in a SQLite outbox until the broker acks them.

``schema`` builds and checks the payloads, ``topics`` names where they go, ``outbox`` makes them
survive outages and kill -9, ``publisher`` moves them to MQTT in order.
"""

from __future__ import annotations
