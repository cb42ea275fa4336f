"""The ZMTP 3.1 handshake of a SUB peer with the NULL mechanism (rfc.zeromq.org/spec/37, the
protocol libzmq speaks), sans I/O: the bytes a subscriber sends first, and the publisher's
greeting and READY read from whatever has arrived. The native lane (`_lane.c`) reads the
frames that follow.

Sent, byte for byte what libzmq 4.3's SUB sends: our greeting (signature, version 3.1,
mechanism ``NULL``, as-server 0) alone, then — once the publisher's greeting is in — our
``READY`` command (``Socket-Type: SUB``) and the subscription (a SUBSCRIBE command to a 3.1
publisher, the message ``\\x01 + topic`` to a 3.0 one). Expected back: a
greeting of version 3.x with the ``NULL`` mechanism, then a ``READY`` whose ``Socket-Type`` is
``PUB`` or ``XPUB``; anything else is a `ZmtpError` naming what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

SIGNATURE_HEAD, SIGNATURE_TAIL = 0xFF, 0x7F
GREETING_SIZE = 64
_MECHANISM = b"NULL".ljust(20, b"\x00")
_COMMAND, _LONG = 0x04, 0x02
PUBLISHERS = frozenset({b"PUB", b"XPUB"})
MAX_READY = 1 << 16  # a READY command's body; more is not a publisher we understand


class ZmtpError(ValueError):
    """The peer does not speak ZMTP 3 as a NULL-mechanism publisher."""


def greeting() -> bytes:
    """Our greeting: sent first, alone (libzmq 4.3 drops a connection whose READY arrives with
    the greeting, before its own greeting went out)."""
    # as libzmq's own SUB sends it: padding 0...01 (the length field a ZMTP 1.0 peer would
    # read), version 3.1
    return (
        bytes((SIGNATURE_HEAD,))
        + (1).to_bytes(8, "big")
        + bytes((SIGNATURE_TAIL, 3, 1))
        + _MECHANISM
        + bytes(32)
    )


def ready(topic: bytes, minor: int) -> bytes:
    """READY and the subscription to `topic`, once the publisher's greeting (of ZMTP 3.`minor`)
    is in: as libzmq does, a SUBSCRIBE command to a 3.1 publisher, the 3.0 message
    ``\\x01 + topic`` to a 3.0 one."""
    hello = _command(b"READY", _property(b"Socket-Type", b"SUB"))
    if minor >= 1:
        return hello + _command(b"SUBSCRIBE", topic)
    return hello + _message(b"\x01" + topic)


def greeting_minor(data: bytes) -> int:
    """The minor version of a whole greeting (`read_greeting` true)."""
    return data[11]


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the publisher said: its ZMTP minor version and socket type; `rest` the stream's
    first bytes after its READY (frames for the lane)."""

    minor: int
    socket_type: bytes
    rest: bytes


def read_greeting(data: bytes) -> bool:
    """Whether `data` (everything received so far) holds the publisher's whole greeting; a
    `ZmtpError` as soon as it shows it is not one we speak to."""
    if data and data[0] != SIGNATURE_HEAD:
        raise ZmtpError("not a ZMTP peer: its first byte is not 0xFF")
    if len(data) >= 10 and data[9] != SIGNATURE_TAIL:
        raise ZmtpError("not a ZMTP 3 peer: byte 10 of its greeting is not 0x7F")
    if len(data) >= 11 and data[10] < 3:
        raise ZmtpError(f"ZMTP version {data[10]} (3 is needed)")
    if len(data) < GREETING_SIZE:
        return False
    mechanism = data[12:32].rstrip(b"\x00")
    if mechanism != b"NULL":
        raise ZmtpError(
            f"the publisher asks for the {mechanism.decode(errors='replace')} mechanism; "
            "KV-event publishers run without security (NULL)"
        )
    return True


def read_handshake(data: bytes) -> Handshake | None:
    """The publisher's handshake, once `data` (everything received so far, its greeting first)
    holds its READY too; None while it does not yet."""
    if not read_greeting(data):
        return None
    frame = _frame(data, GREETING_SIZE)
    if frame is None:
        return None
    flags, body, end = frame
    if not flags & _COMMAND:
        raise ZmtpError("the publisher's first frame after its greeting is not a command")
    name, properties = _parse_command(body)
    if name == b"ERROR":
        reason = body[7 : 7 + body[6]] if len(body) > 6 else b""
        raise ZmtpError(f"the publisher refused: {reason.decode(errors='replace')}")
    if name != b"READY":
        raise ZmtpError(f"expected READY from the publisher, got {name!r}")
    socket_type = properties.get(b"socket-type", b"")
    if socket_type not in PUBLISHERS:
        raise ZmtpError(f"the peer is a {socket_type.decode(errors='replace')} socket, not a PUB")
    return Handshake(data[11], socket_type, data[end:])


def _frame(data: bytes, at: int) -> tuple[int, bytes, int] | None:
    if len(data) < at + 2:
        return None
    flags = data[at]
    if flags & _LONG:
        if len(data) < at + 9:
            return None
        size, head = int.from_bytes(data[at + 1 : at + 9], "big"), 9
    else:
        size, head = data[at + 1], 2
    if size > MAX_READY:
        raise ZmtpError(f"a handshake frame of {size} bytes")
    if len(data) < at + head + size:
        return None
    return flags, data[at + head : at + head + size], at + head + size


def _parse_command(body: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    if not body or len(body) < 1 + body[0]:
        raise ZmtpError("a command frame without a name")
    name, at = body[1 : 1 + body[0]], 1 + body[0]
    properties: dict[bytes, bytes] = {}
    if name != b"READY":
        return name, properties
    while at < len(body):
        key_size = body[at]
        key = body[at + 1 : at + 1 + key_size]
        at += 1 + key_size
        if at + 4 > len(body):
            raise ZmtpError("a READY property without its value")
        value_size = int.from_bytes(body[at : at + 4], "big")
        value = body[at + 4 : at + 4 + value_size]
        if len(value) != value_size:
            raise ZmtpError("a READY property value cut short")
        properties[key.lower()] = value
        at += 4 + value_size
    return name, properties


def _property(name: bytes, value: bytes) -> bytes:
    return bytes((len(name),)) + name + len(value).to_bytes(4, "big") + value


def _command(name: bytes, body: bytes) -> bytes:
    payload = bytes((len(name),)) + name + body
    return _head(_COMMAND, len(payload)) + payload


def _message(body: bytes) -> bytes:
    return _head(0, len(body)) + body


def _head(flags: int, size: int) -> bytes:
    if size < 256:
        return bytes((flags, size))
    return bytes((flags | _LONG,)) + size.to_bytes(8, "big")
