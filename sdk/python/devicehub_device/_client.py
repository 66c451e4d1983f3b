"""DeviceClient and StreamSender: the seed's API over devicehub's device
protocol (see the package documentation)."""

import json
import logging
import random
import threading
import time
import urllib.parse

from ._errors import DeviceHubError
from ._message import (CONTENT_TYPE_BATCH, CONTENT_TYPE_JSON, MAX_CHUNKS, Compression, compose_msg_id,
                       compress, random_id, stream_name, with_msg_id)
from ._mqtt import RC_BAD_CREDENTIALS, Connection, ConnectionLost
from ._inbound import parse_command, parse_desired
from ._provision import Provisioner, default_display, parse_time
from ._store import KIND_DATA, KIND_REPORTED, KIND_RESULT, Entry, Store, put_json_tx

log = logging.getLogger("devicehub_device")

DEFAULT_INSTANCE = "http://localhost:8080"

# MQTT v5 reason codes that ask to send again later.
TRANSIENT_RCS = (0x96, 0x97, 0x89)  # message rate too high, quota exceeded, server busy
RC_PACKET_TOO_LARGE = 0x95
RC_PAYLOAD_FORMAT_INVALID = 0x99

# Batching limits (as the Go SDK's): entries looked at per round, bytes per
# batch (under the hub's default payload limit of 64 KiB).
MAX_BATCH_RUN = 512
MAX_BATCH_RUN_BYTES = 512 << 10
MAX_BATCH_BYTES = 48 << 10
CHUNK_SIZE = 128 << 10
MAX_MESSAGE_BYTES = 16 << 20
KEEP_REJECTIONS = 1024


class DesiredProperties(object):
    """A version of the desired properties: ``version`` (int) and
    ``values`` (dict)."""

    def __init__(self, version, values):
        self.version = version
        self.values = values

    def __repr__(self):
        return "DesiredProperties(version=%r, values=%r)" % (self.version, self.values)


class Command(object):
    """A command from the hub, given to ``command_callback``: ``id`` (the
    hub's command id), ``name`` (the command), ``payload`` (any JSON value,
    decoded) and ``expires_at`` (RFC 3339, or None)."""

    def __init__(self, id, name, payload, expires_at):
        self.id = id
        self.name = name
        self.payload = payload
        self.expires_at = expires_at

    def __repr__(self):
        return "Command(id=%r, name=%r, payload=%r)" % (self.id, self.name, self.payload)


def parse_instance(instance):
    """(HTTP base URL, MQTT host, MQTT port, MQTT over TLS) of an instance
    (see _parse_instance); a malformed one raises DeviceHubError."""
    try:
        return _parse_instance(instance)
    except ValueError as e:
        raise DeviceHubError("instance %r: %s" % (instance, e), "invalid_options")


def _parse_instance(instance):
    """(HTTP base URL, MQTT host, MQTT port, MQTT over TLS) of an instance:
    "http://host:port" or "https://host[:port]" (a bare "host[:port]" is
    https), optionally with "?mqtt=[mqtt://|mqtts://]host:port" when the
    hub's MQTT listener is not on the same host at port 1883 (8883 with
    https)."""
    if instance is None:
        instance = DEFAULT_INSTANCE
    if not isinstance(instance, str) or not instance.strip():
        raise DeviceHubError("instance must be a URL or a host name, got %r" % (instance,), "invalid_options")
    s = instance.strip()
    if "://" not in s:
        s = "https://" + s
    u = urllib.parse.urlsplit(s)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise DeviceHubError("instance %r: must be http(s)://host[:port] or a host name" % instance, "invalid_options")
    try:
        u.port
    except ValueError:
        raise DeviceHubError("instance %r: bad port" % instance, "invalid_options")
    base = "%s://%s%s" % (u.scheme, u.netloc, u.path.rstrip("/"))
    tls = u.scheme == "https"
    host, port = u.hostname, 8883 if tls else 1883
    q = urllib.parse.parse_qs(u.query)
    if "mqtt" in q:
        m = q["mqtt"][-1]
        if "://" not in m:
            m = ("mqtts://" if tls else "mqtt://") + m
        mu = urllib.parse.urlsplit(m)
        if mu.scheme not in ("mqtt", "tcp", "mqtts", "tls", "ssl") or not mu.hostname:
            raise DeviceHubError("instance %r: mqtt= must be [mqtt://|mqtts://]host:port" % instance,
                                 "invalid_options")
        tls = mu.scheme in ("mqtts", "tls", "ssl")
        try:
            host, port = mu.hostname, mu.port or (8883 if tls else 1883)
        except ValueError:
            raise DeviceHubError("instance %r: bad MQTT port" % instance, "invalid_options")
    return base, host, port, tls


def _backoff(min_b, max_b, n):
    """Exponential backoff with full jitter, as the Go SDK's."""
    if n <= 0:
        return 0.0
    hi = min(max_b, min_b * (2 ** min(n - 1, 30)))
    if hi <= min_b:
        return min_b
    return min_b + random.random() * (hi - min_b)


class DeviceClient(object):
    """A client connected to the hub. Create it with DeviceClient.start.

    It stores all outgoing communication in the local database file and
    sends it from a background thread, in order, deleting each message only
    after the hub's PUBACK (which the hub sends once the message is
    stored). Incoming commands and desired properties are stored before
    they are acknowledged. All methods are thread-safe."""

    def __init__(self, *args, **kwargs):
        if not kwargs.pop("_internal", False):
            raise DeviceHubError("create a DeviceClient with DeviceClient.start", "invalid_options")

    # --- start --------------------------------------------------------

    @staticmethod
    def start(device_id, provisioning_token, db, instance=None, display_provisioning_operation_callback=None,
              desired_properties_updated_callback=None, command_callback=None, min_backoff=0.2, max_backoff=60.0,
              provisioning_poll_interval=2.0):
        """Starts communicating with the hub.

        - device_id: the device id to ask for (the operator may override it
          at approval; see ``device_id``); may be None.
        - provisioning_token: the hub's provisioning token
          (``devicehub provisioning tokens create``).
        - db: the local SQLite file (must end in ".db"), created if missing:
          credentials and the outgoing and incoming queues.
        - instance: the hub, "http(s)://host:port" (default
          http://localhost:8080), with "?mqtt=host:port" when its MQTT
          listener is elsewhere than the same host at port 1883 (8883 with
          https).
        - display_provisioning_operation_callback: shows the operation
          waiting for approval (default: print its id and verification
          code).
        - desired_properties_updated_callback: called from a separate thread
          right after start with the current desired properties (if the
          device knows any) and then with each newer version received;
          intermediate versions may be skipped.
        - command_callback (devicehub's addition): handles a Command and
          returns its result (any JSON value, or None); raising an
          exception fails the command with its message. Called from the same
          separate thread, one command at a time, in order; a command stays
          in db until the callback returned, so after a crash it runs again.

        If db holds credentials, start returns at once, even offline;
        otherwise it provisions with the token and waits for an operator's
        approval.
        """
        c = DeviceClient(_internal=True)
        c._init(device_id, provisioning_token, db, instance, display_provisioning_operation_callback,
                desired_properties_updated_callback, command_callback, min_backoff, max_backoff,
                provisioning_poll_interval)
        return c

    def _init(self, device_id, token, db, instance, display, on_desired, on_command, min_backoff, max_backoff,
              poll_interval):
        self._base, self._mqtt_host, self._mqtt_port, self._mqtt_tls = parse_instance(instance)
        if device_id is not None and not isinstance(device_id, str):
            raise DeviceHubError("device_id must be a str or None", "invalid_options")
        self._on_desired = on_desired
        self._on_command = on_command
        self._min_backoff, self._max_backoff = float(min_backoff), float(max(max_backoff, min_backoff))
        self._publish_timeout = 30.0
        self._keepalive = 30
        self._store = Store(db)
        ok = False
        try:
            creds = self._credentials(device_id, token, display or default_display, poll_interval)
            self._creds = creds
            self._device_id = creds["device_id"]
            self._prefix = "devices/%s/" % self._device_id
            self._msg_prefix = random_id(6)
            self._msg_counter = 0
            self._mu = threading.Condition()
            msgs, rep, first, last = self._store.outbox_state()
            self._pending, self._pending_reported, self._last_seq = msgs, rep, last
            self._done_through = first - 1 if first > 0 else last
            self._rejections = {}
            self._rejection_order = []
            self._fatal = None
            self._closed = False
            d = self._store.get_json("desired")
            self._desired = DesiredProperties(d["version"], d["values"]) if d else None
            self._wake = threading.Event()
            self._in_wake = threading.Event()
            self._stop = threading.Event()
            self._conn = None
            self._sender = threading.Thread(target=self._run, name="devicehub-sender", daemon=True)
            self._dispatcher = threading.Thread(target=self._dispatch, name="devicehub-dispatch", daemon=True)
            self._sender.start()
            self._dispatcher.start()
            ok = True
            log.info("device client started: device_id=%s pending=%d", self._device_id, msgs)
        finally:
            if not ok:
                self._store.close()

    def _credentials(self, device_id, token, display, poll_interval):
        cr = self._store.get_json("credentials")
        revoked = self._store.get_json("revoked")
        if cr and not revoked and cr.get("device_id") and cr.get("mqtt_username") and cr.get("mqtt_password"):
            if cr.get("instance") not in (None, self._base):
                log.warning("the credentials in the database are from %s, not %s", cr.get("instance"), self._base)
            return cr
        if not token:
            if revoked:
                raise DeviceHubError("the hub refused the stored credentials; provision the device again",
                                     "credentials_revoked")
            raise DeviceHubError("no credentials in the database: provisioning_token is required", "invalid_options")
        p = Provisioner(self._base, token, device_id, self._store, display, log, poll_interval,
                        self._min_backoff, self._max_backoff)
        cr = p.run()
        if not (cr.get("device_id") and cr.get("mqtt_username") and cr.get("mqtt_password")):
            raise DeviceHubError("the hub approved the operation without complete credentials", "provisioning_failed")
        cr = {"device_id": cr["device_id"], "mqtt_username": cr["mqtt_username"],
              "mqtt_password": cr["mqtt_password"], "api_key": cr.get("api_key", ""), "instance": self._base}

        def fn(c):
            c.execute("DELETE FROM meta WHERE key IN ('provisioning_op', 'revoked')")
            put_json_tx(c, "credentials", cr)
        self._store.write(fn)
        log.info("device provisioned: device_id=%s", cr["device_id"])
        return cr

    # --- properties ---------------------------------------------------

    @property
    def device_id(self):
        """(Read-only) The device id: the one the operator approved, which
        may differ from the one asked for in start."""
        return self._device_id

    @property
    def workspace_id(self):
        """(Read-only) devicehub has no workspaces: one hub is one
        workspace, so this is the hub's base URL (the instance)."""
        return self._base

    @property
    def pending_messages_count(self):
        """The number of messages stored in the local database and not yet
        acknowledged by the hub (a chunked message counts once)."""
        with self._mu:
            return self._pending

    @property
    def any_pending_reported_properties_updates(self):
        """(Read-only) Whether some reported properties updates are not yet
        acknowledged by the hub."""
        with self._mu:
            return self._pending_reported > 0

    # --- sending ------------------------------------------------------

    def create_stream_sender(self, stream_group=None, stream=None, compression=Compression.UNCOMPRESSED):
        """Creates a StreamSender of messages to a stream.

        devicehub has streams but no stream groups: the stream is
        "{stream_group}.{stream}" when both are given, either one alone
        when only one is, and the device's default stream (topic
        devices/{id}/data) when neither is. It must be at most 64 of
        A-Z a-z 0-9 . _ : -."""
        if compression not in (Compression.UNCOMPRESSED, Compression.FASTEST, Compression.SMALLEST_SIZE):
            raise DeviceHubError("compression must be a Compression value, got %r" % (compression,),
                                 "invalid_options")
        name = stream_name(stream_group, stream)
        topic = self._prefix + "data" + ("/" + name if name else "")
        return StreamSender(self, topic, name, compression)

    def _next_msg_id(self):
        with self._mu:
            self._msg_counter += 1
            return "%s-%d" % (self._msg_prefix, self._msg_counter)

    def _enqueue(self, entry):
        """Stores entry (chunked when large) and wakes the sender; returns
        the seq of its last row."""
        self._check_usable("enqueue")
        entries = [entry]
        if len(entry.payload) > CHUNK_SIZE:
            n = (len(entry.payload) + CHUNK_SIZE - 1) // CHUNK_SIZE
            if n > MAX_CHUNKS:
                raise DeviceHubError("%d chunks: at most %d" % (n, MAX_CHUNKS), "message_too_large", entry.msg_id)
            cid = random_id(8)
            entries = [Entry(entry.kind, "%s/chunks/%s/%d/%d" % (entry.topic, cid, i, n), entry.content_type,
                             entry.msg_id, entry.payload[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE], i, n)
                       for i in range(n)]
        try:
            self._store.append(entries)
        except Exception as e:
            raise DeviceHubError("store message: %s" % e, "storage", entry.msg_id)
        with self._mu:
            self._pending += 1
            if entry.kind == KIND_REPORTED:
                self._pending_reported += 1
            self._last_seq = max(self._last_seq, entries[-1].seq)
        self._wake.set()
        return entries[-1].seq

    def _check_usable(self, op):
        with self._mu:
            if self._fatal is not None:
                raise self._fatal
            if self._closed:
                raise DeviceHubError("%s: the client is closed" % op, "closed")

    def _wait_seq(self, seq, op, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._mu:
            while self._done_through < seq:
                if self._fatal is not None:
                    raise self._fatal
                if self._closed:
                    raise DeviceHubError("%s: the client is closed" % op, "closed")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise DeviceHubError("%s: not sent within %ss" % (op, timeout), "other")
                self._mu.wait(left if left is not None else 1.0)
            return self._rejections.get(seq)

    def wait_enqueued_messages_sent(self):
        """Blocks until every message enqueued before the call was sent to
        (acknowledged or refused by) the hub."""
        with self._mu:
            target = self._last_seq
        self._wait_seq(target, "wait enqueued messages sent")

    def update_reported_properties(self, properties):
        """Enqueues a patch of the reported properties: stored in the local
        database before it returns, sent to devices/{id}/twin/reported when
        possible, in order with the other messages."""
        if not isinstance(properties, dict):
            raise DeviceHubError("properties must be a dict", "invalid_payload")
        try:
            b = json.dumps(properties, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise DeviceHubError("reported properties are not JSON: %s" % e, "invalid_payload")
        payload, mid = with_msg_id(b, None, self._next_msg_id)
        self._enqueue(Entry(KIND_REPORTED, self._prefix + "twin/reported", CONTENT_TYPE_JSON, mid, payload))

    # --- desired properties -------------------------------------------

    def get_desired_properties(self):
        """The latest desired properties known (version 0 and no values
        before the hub sent any)."""
        with self._mu:
            d = self._desired
        if d is None:
            return DesiredProperties(0, {})
        return DesiredProperties(d.version, dict(d.values))

    def get_desired_properties_if_newer(self, version=None):
        """The latest desired properties if their version is above version
        (or version is None), else None."""
        with self._mu:
            d = self._desired
        if d is None or (version is not None and d.version <= version):
            return None
        return DesiredProperties(d.version, dict(d.values))

    # --- close --------------------------------------------------------

    def close(self):
        """Stops the background threads and closes the database. Messages
        not yet acknowledged stay in it for the next start."""
        with self._mu:
            if self._closed:
                return
            self._closed = True
            self._mu.notify_all()
        self._stop.set()
        self._wake.set()
        self._in_wake.set()
        conn = self._conn
        if conn is not None:
            conn.close()
        self._sender.join(30)
        if threading.current_thread() is not self._dispatcher:
            self._dispatcher.join(30)
        self._store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- the sender thread --------------------------------------------

    def _run(self):
        failures = 0
        while not self._stop.is_set():
            conn = Connection(self._device_id, self._creds["mqtt_username"], self._creds["mqtt_password"],
                              self._mqtt_host, self._mqtt_port, self._mqtt_tls, self._keepalive, self._received, log)
            try:
                rc, reason = conn.connect(10.0)
            except (OSError, ConnectionLost) as e:
                conn.close()
                failures += 1
                log.debug("connect to %s:%d failed: %s", self._mqtt_host, self._mqtt_port, e)
                self._stop.wait(_backoff(self._min_backoff, self._max_backoff, failures))
                continue
            if rc == RC_BAD_CREDENTIALS:
                conn.close()
                self._revoked(reason)
                return
            if rc >= 0x80:
                conn.close()
                failures += 1
                log.warning("the hub refused the connection: reason code %#x %s", rc, reason)
                self._stop.wait(_backoff(self._min_backoff, self._max_backoff, failures))
                continue
            self._conn = conn
            if self._stop.is_set():
                conn.close()
                break
            log.info("connected to the hub at %s:%d", self._mqtt_host, self._mqtt_port)
            try:
                rcs = conn.subscribe([self._prefix + "commands/+", self._prefix + "twin/desired"], self._publish_timeout)
                if any(r >= 0x80 for r in rcs):
                    raise ConnectionLost("subscription refused: %s" % ", ".join("%#x" % r for r in rcs))
                failures = 0
                self._drain(conn)
            except ConnectionLost as e:
                if not self._stop.is_set():
                    log.info("connection to the hub lost: %s", e)
                failures += 1
            except Exception:
                log.exception("sender failed; reconnecting")
                failures += 1
            finally:
                self._conn = None
                conn.close()
            if not self._stop.is_set():
                self._stop.wait(_backoff(self._min_backoff, self._max_backoff, failures))

    def _revoked(self, reason):
        try:
            self._store.put_json("revoked", True)
        except Exception as e:
            log.error("store credentials revoked: %s", e)
        err = DeviceHubError("the hub no longer accepts the device's credentials (%s); provision it again"
                             % (reason or "bad user name or password"), "credentials_revoked")
        log.error("%s", err)
        with self._mu:
            self._fatal = err
            self._mu.notify_all()

    def _finished(self, entries, rejection=None):
        """Records that the messages ending at these rows left the outbox."""
        with self._mu:
            for e in entries:
                self._pending -= 1
                if e.kind == KIND_REPORTED:
                    self._pending_reported -= 1
                self._done_through = max(self._done_through, e.seq)
                if rejection is not None:
                    self._rejections[e.seq] = rejection
                    self._rejection_order.append(e.seq)
                    if len(self._rejection_order) > KEEP_REJECTIONS:
                        self._rejections.pop(self._rejection_order.pop(0), None)
            self._mu.notify_all()

    def _drain(self, conn):
        """Sends the outbox in order, one MQTT message in flight, deleting
        each message after its PUBACK, until the connection goes down
        (ConnectionLost) or the client stops. A backlog of single-reading
        messages goes in batches; a chunked message is deleted when its last
        chunk is acknowledged, so a lost connection resends it whole."""
        cursor = 0  # last row sent on this connection and kept (chunks)
        chunk_seqs = []
        no_batch = 0  # rows up to this one go alone (a batch was refused)
        while not self._stop.is_set():
            if conn.down.is_set():
                raise ConnectionLost("connection lost")
            if not chunk_seqs:
                run = []
                size = 0
                for e in self._store.run_after(cursor, MAX_BATCH_RUN):
                    if not (e.seq > no_batch and _batchable(e)) or (run and size + len(e.payload) > MAX_BATCH_RUN_BYTES):
                        break
                    size += len(e.payload)
                    run.append(e)
                if len(run) > 1:
                    outcome = self._send_batches(conn, run)
                    if outcome == "refused":
                        no_batch, cursor = run[-1].seq, 0
                    else:
                        cursor = run[-1].seq
                    continue
            e = self._store.next_after(cursor)
            if e is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            rc, reason = conn.publish(e.topic, e.payload, e.content_type, self._publish_timeout)
            if rc < 0x80:
                if not e.final():
                    cursor = e.seq
                    chunk_seqs.append(e.seq)
                    continue
                self._store.delete(chunk_seqs + [e.seq])
                cursor, chunk_seqs = e.seq, []
                self._finished([e])
            elif rc in TRANSIENT_RCS:
                log.debug("the hub asks to slow down (reason code %#x)", rc)
                raise ConnectionLost("the hub asks to slow down (reason code %#x)" % rc)
            else:
                seqs = chunk_seqs + [e.seq]
                if e.chunk_count > 0:  # the rest of a refused chunked message goes too
                    seqs += [e.seq + i - e.chunk_index for i in range(e.chunk_index + 1, e.chunk_count)]
                self._store.delete(seqs)
                last = Entry(e.kind, e.topic, e.content_type, e.msg_id, b"", seq=seqs[-1])
                cursor, chunk_seqs = last.seq, []
                kind = {RC_PACKET_TOO_LARGE: "message_too_large",
                        RC_PAYLOAD_FORMAT_INVALID: "invalid_payload"}.get(rc, "rejected")
                err = DeviceHubError("the hub refused message %s (reason code %#x): %s" % (e.msg_id, rc, reason),
                                     kind, e.msg_id)
                log.warning("%s", err)
                self._finished([last], err)

    def _send_batches(self, conn, run):
        """Sends run (consecutive batchable rows) as batches per topic, in
        order; deletes the run once every batch is acknowledged."""
        topics = []
        by_topic = {}
        for e in run:
            if e.topic not in by_topic:
                topics.append(e.topic)
                by_topic[e.topic] = []
            by_topic[e.topic].append(e)
        for topic in topics:
            es = by_topic[topic]
            while es:
                n, size = 0, 2
                while n < len(es) and (n == 0 or size + len(es[n].payload) + 1 <= MAX_BATCH_BYTES):
                    size += len(es[n].payload) + 1
                    n += 1
                if n == 1:
                    payload, ct = es[0].payload, CONTENT_TYPE_JSON
                else:
                    payload, ct = b"[" + b",".join(x.payload for x in es[:n]) + b"]", CONTENT_TYPE_BATCH
                rc, reason = conn.publish(topic, payload, ct, self._publish_timeout)
                if rc in TRANSIENT_RCS:
                    raise ConnectionLost("the hub asks to slow down (reason code %#x)" % rc)
                if rc >= 0x80:
                    log.info("batch of %d messages refused (%#x %s), sending them one by one", n, rc, reason)
                    return "refused"
                es = es[n:]
        self._store.delete([e.seq for e in run])
        self._finished(run)
        return "ok"

    # --- inbound (paho's network thread) -----------------------------

    def _received(self, msg):
        """Stores a command or desired properties before paho acknowledges
        the message (it sends the PUBACK when this returns)."""
        topic = msg.topic
        if not topic.startswith(self._prefix):
            return
        rest = topic[len(self._prefix):]
        try:
            if rest == "twin/desired":
                self._store_desired(msg.payload)
            elif rest.startswith("commands/") and rest.count("/") == 1:
                if self._store.add_inbound(topic, rest[len("commands/"):], bytes(msg.payload)):
                    self._in_wake.set()
        except Exception as e:
            # Not stored: the hub resends commands and the retained twin on
            # the next connection.
            log.error("store inbound message on %s: %s", topic, e)
            conn = self._conn
            if conn is not None:
                threading.Thread(target=conn.close, daemon=True).start()

    def _store_desired(self, payload):
        d = parse_desired(payload)
        if d is None:
            return  # a cleared retained message
        if isinstance(d, str):
            log.warning("ignoring malformed desired properties: %s", d)
            return
        version, values = d
        with self._mu:
            if self._desired is not None and version <= self._desired.version:
                return
        self._store.put_json("desired", {"version": version, "values": values})
        with self._mu:
            if self._desired is None or version > self._desired.version:
                self._desired = DesiredProperties(version, values)
        self._in_wake.set()

    # --- the dispatcher thread ----------------------------------------

    def _dispatch(self):
        delivered = None  # the version last given to the callback by this client
        while not self._stop.is_set():
            with self._mu:
                d = self._desired
            if d is not None and (delivered is None or d.version > delivered) and self._on_desired is not None:
                try:
                    self._on_desired(DesiredProperties(d.version, dict(d.values)))
                except Exception:
                    log.exception("desired_properties_updated_callback failed")
                delivered = d.version
            try:
                nxt = self._store.next_inbound()
            except Exception as e:
                log.error("read inbox: %s", e)
                nxt = None
            if nxt is not None:
                self._handle_command(*nxt)
                continue
            self._in_wake.wait(1.0)
            self._in_wake.clear()

    def _handle_command(self, seq, topic, command_id, payload):
        status, result = "succeeded", None
        parsed = parse_command(payload)
        if isinstance(parsed, str):
            status, result = "failed", {"error": parsed}
        else:
            name, cmd_payload, expires_at = parsed
            exp = parse_time(expires_at)
            if exp is not None and time.time() > exp:
                status, result = "failed", {"error": "expired before it was handled"}
            elif self._on_command is None:
                status, result = "failed", {"error": "no command handler"}
            else:
                try:
                    result = self._on_command(Command(command_id, name, cmd_payload, expires_at))
                except Exception as e:
                    log.warning("command_callback failed for command %s: %s", command_id, e)
                    status, result = "failed", {"error": str(e) or type(e).__name__}
        out = {"status": status}
        if result is not None:
            out["result"] = result
        try:
            b = json.dumps(out, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            b = json.dumps({"status": "failed", "result": {"error": "result is not JSON: %s" % e}}).encode()
        entry = Entry(KIND_RESULT, topic + "/result", CONTENT_TYPE_JSON, "cmd-" + command_id, b)
        try:
            self._store.finish_inbound(seq, command_id, [entry])
        except Exception as e:
            log.error("finish command %s: %s", command_id, e)
            self._stop.wait(1.0)
            return
        with self._mu:
            self._pending += 1
            self._last_seq = max(self._last_seq, entry.seq)
        self._wake.set()


def _batchable(e):
    """A plain JSON data message of one reading may go in a batch."""
    return (e.kind == KIND_DATA and e.chunk_count == 0 and e.content_type == CONTENT_TYPE_JSON
            and e.payload[:1] == b"{")


class StreamSender(object):
    """A sender of messages to one stream; create it with
    DeviceClient.create_stream_sender.

    A message's payload (str or bytes) must be a JSON object of
    field -> value (a reading, with an optional "ts") or an array of them:
    that is what the hub stores. Each message carries a msg_id: message_id
    when given (with batch_id, batch_slice_id or chunk_id:
    "batch/slice/message/chunk"), else the payload's own msg_id, else a
    generated one; it is stored with the message, so a resend after a crash
    or a lost PUBACK is stored once."""

    def __init__(self, client, topic, stream, compression):
        self._c = client
        self._topic = topic
        self.stream = stream
        self._compression = compression

    def _entry(self, payload, batch_id, message_id, batch_slice_id, chunk_id):
        mid = compose_msg_id(batch_id, message_id, batch_slice_id, chunk_id)
        p, mid = with_msg_id(payload, mid, self._c._next_msg_id)
        p, ct = compress(self._compression, p)
        if len(p) > MAX_MESSAGE_BYTES:
            raise DeviceHubError("message of %d bytes: at most %d" % (len(p), MAX_MESSAGE_BYTES),
                                 "message_too_large", mid)
        return Entry(KIND_DATA, self._topic, ct, mid, p)

    def enqueue_message(self, payload, batch_id=None, message_id=None, batch_slice_id=None, chunk_id=None):
        """Stores a message in the local database (fsynced) and returns; a
        background thread sends it, in order. See
        DeviceClient.pending_messages_count."""
        self._c._enqueue(self._entry(payload, batch_id, message_id, batch_slice_id, chunk_id))

    def send_message(self, payload, batch_id=None, message_id=None, batch_slice_id=None, chunk_id=None):
        """Sends a message and blocks until the hub acknowledged it (and
        every message enqueued before it). Raises DeviceHubError if the hub
        refused it."""
        e = self._entry(payload, batch_id, message_id, batch_slice_id, chunk_id)
        seq = self._c._enqueue(e)
        rej = self._c._wait_seq(seq, "send message")
        if rej is not None:
            raise rej

    def enqueue_batch_completion(self, batch_id):
        """Enqueues the completion of a batch. devicehub has no batches: it
        is a reading {"batch_completed": batch_id} on the stream, msg_id
        "{batch_id}/complete", in order with the batch's messages."""
        if not isinstance(batch_id, str) or not batch_id:
            raise DeviceHubError("batch_id must be a non-empty str", "invalid_payload")
        payload = json.dumps({"batch_completed": batch_id}).encode()
        self._c._enqueue(self._entry(payload, None, batch_id + "/complete", None, None))

    def enqueue_message_completion(self, batch_id, message_id):
        """Enqueues the completion of a chunked message: a reading
        {"message_completed": message_id, "batch_id": batch_id} on the
        stream, msg_id "{batch_id}/{message_id}/complete"."""
        for name, v in (("batch_id", batch_id), ("message_id", message_id)):
            if not isinstance(v, str) or not v:
                raise DeviceHubError("%s must be a non-empty str" % name, "invalid_payload")
        payload = json.dumps({"message_completed": message_id, "batch_id": batch_id}).encode()
        self._c._enqueue(self._entry(payload, None, "%s/%s/complete" % (batch_id, message_id), None, None))
