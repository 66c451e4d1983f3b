"""Messages as the hub takes them: a JSON object (or an array of objects)
carrying its msg_id, optionally gzip-compressed, cut into chunks when
large."""

import binascii
import gzip
import json
import os
from collections import OrderedDict

from ._errors import DeviceHubError

CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_GZIP = "application/json+gzip"
CONTENT_TYPE_BATCH = "application/vnd.devicehub.batch+json"

MAX_MSG_ID_LEN = 128  # the hub's limit (characters)
MAX_CHUNKS = 1024  # the hub's limit on the chunks of one message
MIN_COMPRESS = 256  # under this size compression is not worth its header
MAX_STREAM_LEN = 64  # bytes of a stream name


class Compression(object):
    """How a sender compresses its messages. The hub decodes gzip (and
    zstd, which Python's standard library lacks before 3.14), so:

    - ``UNCOMPRESSED``: sent as they are;
    - ``FASTEST``: gzip at level 1;
    - ``SMALLEST_SIZE``: gzip at level 9.

    A message is sent uncompressed when compression would not make it
    smaller (under 256 bytes, or incompressible)."""

    UNCOMPRESSED = 0
    FASTEST = 1
    SMALLEST_SIZE = 2

    _names = {0: "UNCOMPRESSED", 1: "FASTEST", 2: "SMALLEST_SIZE"}


def random_id(n):
    return binascii.hexlify(os.urandom(n)).decode()


def _reject_constant(name):
    raise ValueError("%s is not a JSON number the hub takes" % name)


def with_msg_id(payload, msg_id, gen):
    """Returns (payload with "msg_id" in each object, msg_id). An empty
    msg_id takes the one the payload carries, or gen() if it carries none."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise DeviceHubError("payload must be str or bytes, got %s" % type(payload).__name__, "invalid_payload", msg_id)
    try:
        doc = json.loads(bytes(payload).decode("utf-8"), object_pairs_hook=OrderedDict,
                         parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise DeviceHubError("payload is not valid JSON: %s" % e, "invalid_payload", msg_id)
    if isinstance(doc, dict):
        objs = [doc]
    elif isinstance(doc, list):
        if not doc:
            raise DeviceHubError("payload is an empty array", "invalid_payload", msg_id)
        for i, o in enumerate(doc):
            if not isinstance(o, dict):
                raise DeviceHubError("element %d of the payload is not a JSON object" % i, "invalid_payload", msg_id)
        objs = doc
    else:
        raise DeviceHubError("payload must be a JSON object or an array of objects (the hub stores readings:"
                             " field -> value)", "invalid_payload", msg_id)
    carried = None
    for o in objs:
        if "msg_id" in o:
            v = o["msg_id"]
            if not isinstance(v, str) or (carried is not None and v != carried):
                raise DeviceHubError("the payload carries conflicting msg_id values", "invalid_payload", msg_id)
            carried = v
    if msg_id and carried is not None and msg_id != carried:
        raise DeviceHubError("the payload carries msg_id %r, not %r" % (carried, msg_id), "invalid_payload", msg_id)
    if not msg_id:
        msg_id = carried if carried is not None else gen()
    if len(msg_id) > MAX_MSG_ID_LEN:
        raise DeviceHubError("msg_id of %d characters: at most %d" % (len(msg_id), MAX_MSG_ID_LEN),
                             "invalid_payload", msg_id)
    out = []
    for o in objs:
        if "msg_id" in o:
            out.append(o)
        else:
            n = OrderedDict([("msg_id", msg_id)])
            n.update(o)
            out.append(n)
    body = out[0] if isinstance(doc, dict) else out
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8"), msg_id


def compose_msg_id(batch_id, message_id, batch_slice_id, chunk_id):
    """The hub's msg_id for the seed's ids. message_id alone is the msg_id;
    with a batch, a slice or a chunk it is "batch/slice/message/chunk"
    (empty parts left empty), so that ids unique within a batch stay unique
    for the device. None when nothing is given (the SDK generates one)."""
    for name, v in (("batch_id", batch_id), ("message_id", message_id),
                    ("batch_slice_id", batch_slice_id), ("chunk_id", chunk_id)):
        if v is not None and not isinstance(v, str):
            raise DeviceHubError("%s must be a str, got %s" % (name, type(v).__name__), "invalid_payload")
        if v == "":
            raise DeviceHubError("%s must not be empty" % name, "invalid_payload")
    if batch_id is None and batch_slice_id is None and chunk_id is None:
        return message_id
    for name, v in (("batch_id", batch_id), ("message_id", message_id),
                    ("batch_slice_id", batch_slice_id), ("chunk_id", chunk_id)):
        if v is not None and "/" in v:
            raise DeviceHubError("%s %r: must not contain '/' when batches, slices or chunks are used" % (name, v),
                                 "invalid_payload")
    if message_id is None:
        message_id = random_id(8)
    return "/".join([batch_id or "", batch_slice_id or "", message_id, chunk_id or ""])


def compress(compression, payload):
    """Returns (payload, content type): gzip-compressed when asked for and
    smaller."""
    if compression == Compression.UNCOMPRESSED or len(payload) < MIN_COMPRESS:
        return payload, CONTENT_TYPE_JSON
    level = 1 if compression == Compression.FASTEST else 9
    out = gzip.compress(payload, compresslevel=level, mtime=0)
    if len(out) >= len(payload):
        return payload, CONTENT_TYPE_JSON
    return out, CONTENT_TYPE_GZIP


def stream_name(stream_group, stream):
    """The hub's stream for the seed's stream group and stream (see
    DeviceClient.create_stream_sender); "" is the default stream."""
    for name, v in (("stream_group", stream_group), ("stream", stream)):
        if v is not None and not isinstance(v, str):
            raise DeviceHubError("%s must be a str, got %s" % (name, type(v).__name__), "invalid_options")
    parts = [p for p in (stream_group, stream) if p]
    name = ".".join(parts)
    if len(name.encode()) > MAX_STREAM_LEN:
        raise DeviceHubError("stream %r: at most %d bytes" % (name, MAX_STREAM_LEN), "invalid_options")
    for ch in name:
        if not (ch.isascii() and (ch.isalnum() or ch in "._:-")):
            raise DeviceHubError("stream %r: only A-Z a-z 0-9 . _ : - are allowed" % (name,), "invalid_options")
    return name
