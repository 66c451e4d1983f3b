"""One MQTT v5 connection to the hub over paho-mqtt, 1.6 (Debian 12) or
2.x, with what the SDK needs and paho does not give the same way in both:
the reason code of every PUBACK, and a connection that never reconnects by
itself (the SDK reconnects, with a new connection, so that paho never
resends from its own memory)."""

import ssl
import struct
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

PAHO_V2 = hasattr(mqtt, "CallbackAPIVersion")

RC_BAD_CREDENTIALS = 0x86
RC_NOT_AUTHORIZED = 0x87


def rc_value(rc):
    """The numeric value of a reason code (an int or paho's object)."""
    if rc is None:
        return 0
    if isinstance(rc, int):
        return rc
    return getattr(rc, "value", 0)


def _reason_string(props):
    return getattr(props, "ReasonString", "") if props is not None else ""


if PAHO_V2:
    class _Paho(mqtt.Client):
        def __init__(self, client_id):
            super().__init__(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                             reconnect_on_failure=False)
else:
    class _Paho(mqtt.Client):
        """paho 1.6 drops the reason code of a PUBACK: this keeps it."""

        def __init__(self, client_id):
            super().__init__(client_id=client_id, protocol=mqtt.MQTTv5, reconnect_on_failure=False)
            self.dh_puback = {}  # mid -> (reason code, reason string)

        def _handle_pubackcomp(self, cmd):
            # paho 1.6's own handler parses the reason code with an
            # assertion that fails for some codes (and then drops it): this
            # is that handler, keeping the code and the reason string.
            pkt = self._in_packet.get("packet", b"")
            if len(pkt) < 2:
                return mqtt.MQTT_ERR_PROTOCOL
            mid, = struct.unpack("!H", pkt[:2])
            rc, reason = 0, ""
            if len(pkt) > 2:
                rc = pkt[2]
            if len(pkt) > 3:
                try:
                    props = Properties(PacketTypes.PUBACK)
                    props.unpack(pkt[3:])
                    reason = _reason_string(props)
                except Exception:  # a malformed property is no reason to drop the ack
                    reason = ""
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received %s (Mid: %d, reason code %#x)", cmd, mid, rc)
            with self._out_message_mutex:
                if mid in self._out_messages:
                    self.dh_puback[mid] = (rc, reason)
                    return self._do_on_publish(mid)
            return mqtt.MQTT_ERR_SUCCESS


class ConnectionLost(Exception):
    pass


class Connection(object):
    """A connection to the hub; create it, connect(), then publish and
    subscribe; it is dead once down is set."""

    def __init__(self, client_id, username, password, host, port, use_tls, keepalive, on_message, log):
        self.log = log
        self.down = threading.Event()
        self._cond = threading.Condition()
        self._acks = {}  # mid -> (reason code, reason string)
        self._subacks = {}  # mid -> [reason codes]
        self._connack = None
        self._host, self._port, self._keepalive = host, port, keepalive
        self._on_message = on_message
        c = _Paho(client_id)
        c.username_pw_set(username, password)
        if use_tls:
            c.tls_set_context(ssl.create_default_context())
        c.enable_logger(log)
        if PAHO_V2:
            c.on_connect = lambda cl, ud, flags, rc, props: self._connected(rc_value(rc), _reason_string(props))
            c.on_disconnect = lambda cl, ud, flags, rc, props: self._disconnected(rc_value(rc))
            c.on_publish = lambda cl, ud, mid, rc, props: self._published(mid, rc_value(rc), _reason_string(props))
            c.on_subscribe = lambda cl, ud, mid, rcs, props: self._subscribed(mid, [rc_value(r) for r in rcs])
        else:
            c.on_connect = lambda cl, ud, flags, rc, props=None: self._connected(rc_value(rc), _reason_string(props))
            c.on_disconnect = lambda cl, ud, rc, props=None: self._disconnected(rc_value(rc))
            c.on_publish = lambda cl, ud, mid: self._published(mid, *cl.dh_puback.pop(mid, (0, "")))
            c.on_subscribe = lambda cl, ud, mid, rcs, props=None: self._subscribed(mid, [rc_value(r) for r in rcs])
        c.on_message = lambda cl, ud, msg: self._on_message(msg)
        self._c = c

    # --- callbacks (paho's network thread) ----------------------------

    def _connected(self, rc, reason):
        with self._cond:
            self._connack = (rc, reason)
            self._cond.notify_all()

    def _disconnected(self, rc):
        self.down.set()
        with self._cond:
            self._cond.notify_all()

    def _published(self, mid, rc, reason):
        with self._cond:
            self._acks[mid] = (rc, reason)
            self._cond.notify_all()

    def _subscribed(self, mid, rcs):
        with self._cond:
            self._subacks[mid] = rcs
            self._cond.notify_all()

    # --- calls (the SDK's sender thread) ------------------------------

    def connect(self, timeout):
        """Connects with a clean start; returns (reason code, reason string)
        of the CONNACK; raises OSError or ConnectionLost."""
        self._c.connect(self._host, self._port, keepalive=self._keepalive, clean_start=True)
        self._c.loop_start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._connack is not None or self.down.is_set(), timeout):
                self.close()
                raise ConnectionLost("no CONNACK within %ss" % timeout)
            if self._connack is None:
                raise ConnectionLost("connection closed before the CONNACK")
            return self._connack

    def _wait(self, table, mid, timeout):
        with self._cond:
            ok = self._cond.wait_for(lambda: mid in table or self.down.is_set(), timeout)
            if mid in table:
                return table.pop(mid)
        if not ok:
            raise ConnectionLost("no answer within %ss" % timeout)
        raise ConnectionLost("connection lost")

    def subscribe(self, topics, timeout):
        """Subscribes at QoS 1; returns the SUBACK's reason codes."""
        rc, mid = self._c.subscribe([(t, 1) for t in topics])
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionLost("subscribe: %s" % mqtt.error_string(rc))
        return self._wait(self._subacks, mid, timeout)

    def publish(self, topic, payload, content_type, timeout):
        """Publishes at QoS 1 and waits for the PUBACK; returns its
        (reason code, reason string); raises ConnectionLost without one."""
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = content_type
        info = self._c.publish(topic, payload, qos=1, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionLost("publish: %s" % mqtt.error_string(info.rc))
        return self._wait(self._acks, info.mid, timeout)

    def close(self):
        try:
            self._c.disconnect()
        except Exception:
            pass
        try:
            self._c.loop_stop()
        except Exception:
            pass
        self.down.set()
        with self._cond:
            self._cond.notify_all()
