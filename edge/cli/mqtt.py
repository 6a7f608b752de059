"""``edge-face mqtt discovery [--remove]``: announce this device to Home Assistant, or withdraw it.

The daemon announces the device itself on every connect when ``[mqtt] discovery = true``; this
command is for doing it now (after changing ``include_label``, to check a broker's ACL) and for
removing the entities, which the daemon never does on its own: a device that is merely off must
stay in Home Assistant, shown unavailable. Turn ``discovery`` off before removing, or the
daemon's next connect announces the device again.
"""

from __future__ import annotations

import argparse
import json

from edge.config import Config

TIMEOUT_S = 10.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mqtt", help="MQTT integrations (Home Assistant discovery)")
    msub = p.add_subparsers(dest="mqtt_command", metavar="ACTION")
    msub.required = True
    disc = msub.add_parser("discovery",
                           help="publish (or --remove) this device's Home Assistant entities")
    disc.add_argument("--remove", action="store_true",
                      help="clear the retained configs, so Home Assistant deletes the entities")
    disc.add_argument("--timeout", type=_seconds, default=TIMEOUT_S, metavar="S",
                      help=f"give up after this many seconds (default {TIMEOUT_S:.0f})")
    disc.add_argument("--json", action="store_true", help="machine-readable output")
    disc.set_defaults(func=_discovery)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds in (0, 3600]")
    return value


def _discovery(args: argparse.Namespace, config: Config) -> int:
    from edge.events.discovery import describe, discovery_messages
    from edge.events.publisher import publish_retained

    messages = discovery_messages(config)
    # An empty retained payload is how MQTT (and Home Assistant) removes an entity.
    publish_retained(config.mqtt, f"edge-face-{config.device.id}-discovery",
                     [(m.topic, b"" if args.remove else m.payload) for m in messages],
                     timeout=args.timeout)
    action = "removed" if args.remove else "published"
    entities = describe(messages)
    if args.json:
        print(json.dumps({"action": action, "device_id": config.device.id,
                          "discovery_prefix": config.mqtt.discovery_prefix,
                          "entities": entities}, sort_keys=True))
    else:
        print(f"{action} {len(entities)} Home Assistant entities of {config.device.id} "
              f"under {config.mqtt.discovery_prefix}/")
        for e in entities:
            print(f"  {e['component']:<13} {e['name']:<16} {e['topic']}")
    return 0
