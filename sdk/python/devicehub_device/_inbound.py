"""Parsers of what the hub sends a device: desired properties and
commands. Neither raises: a malformed message is reported, never allowed
to break the connection that brought it."""

import json


def parse_desired(payload):
    """(version, values) of a desired properties message
    {"version": N, "values": {...}}, None for an empty (cleared retained)
    message, or a str saying why it is malformed."""
    if not bytes(payload).strip():
        return None
    try:
        d = json.loads(bytes(payload).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        return "not JSON: %s" % e
    if not isinstance(d, dict):
        return "not a JSON object"
    version = d.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        return "version %r is not a non-negative integer" % (version,)
    values = d.get("values")
    if values is None:
        values = {}
    if not isinstance(values, dict):
        return "values is not an object"
    return version, values


def parse_command(payload):
    """(name, payload, expires_at) of a command message {"command": "...",
    "payload": ..., "expires_at": "RFC 3339"}, or a str saying why it is
    malformed."""
    try:
        body = json.loads(bytes(payload).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        return "malformed command: not JSON: %s" % e
    if not isinstance(body, dict):
        return "malformed command: not a JSON object"
    name = body.get("command")
    if not isinstance(name, str):
        return "malformed command: command is not a string"
    exp = body.get("expires_at")
    if exp is not None and not isinstance(exp, str):
        return "malformed command: expires_at is not a string"
    return name, body.get("payload"), exp
