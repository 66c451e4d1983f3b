"""The provisioning flow against the hub's HTTP API, as the Go SDK runs it:

    POST /api/v1/provisioning/operations {"token", "device_id"}
      -> {"id", "verification_code", "expires_at", "secret"}
    GET  /api/v1/provisioning/operations/{id}   Authorization: Bearer <secret>
      -> {"status": "pending" | "approved" | "rejected" | "expired",
          "device_id", "device_type", "credentials": {...}}

The credentials come once, so they are stored in the transaction that
forgets the operation; an operation the hub no longer knows (404/410) is
replaced by a new one.
"""

import datetime
import json
import time
import urllib.error
import urllib.parse
import urllib.request

from ._errors import DeviceHubError

MAX_RESPONSE = 64 << 10


class ProvisioningOperation(object):
    """The summary of an ongoing provisioning operation, given to
    ``display_provisioning_operation_callback``."""

    def __init__(self, id, verification_code, expiration_time):
        self._id = id
        self._verification_code = verification_code
        self._expiration_time = expiration_time

    @property
    def id(self):
        """(Read-only) The ID of this provisioning operation."""
        return self._id

    @property
    def verification_code(self):
        """(Read-only) The verification code of this provisioning operation."""
        return self._verification_code

    @property
    def expiration_time(self):
        """(Read-only) When the operation stops being valid (RFC 3339)."""
        return self._expiration_time

    def __repr__(self):
        return "ProvisioningOperation(id=%r, verification_code=%r, expiration_time=%r)" % (
            self._id, self._verification_code, self._expiration_time)


def default_display(op):
    print("Provisioning operation %s is waiting for approval. Verification code: %s (expires %s)"
          % (op.id, op.verification_code, op.expiration_time), flush=True)


def parse_time(s):
    """Seconds since the epoch of an RFC 3339 time; None if unparsable."""
    if not s or not isinstance(s, str):
        return None
    try:
        t = s.replace("Z", "+00:00")
        if "." in t:  # fromisoformat before 3.11 takes 3 or 6 fraction digits only
            head, rest = t.split(".", 1)
            digits = "".join(ch for ch in rest if ch.isdigit())
            tz = rest[len(digits):]
            t = head + "." + (digits + "000000")[:6] + tz
        return datetime.datetime.fromisoformat(t).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def api_message(body):
    try:
        e = json.loads(body)
        if isinstance(e, dict):
            err = e.get("error")
            if isinstance(err, dict) and err.get("message"):
                return "%s (%s)" % (err.get("message"), err.get("code", ""))
            if isinstance(err, str):
                return err
            if e.get("detail"):
                return str(e.get("detail"))
            if e.get("message"):
                return str(e["message"])
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace")


class TransientError(Exception):
    pass


class Provisioner(object):
    def __init__(self, base_url, token, device_id, store, display, log, poll_interval=2.0,
                 min_backoff=0.2, max_backoff=60.0, ssl_context=None):
        self.base = base_url.rstrip("/")
        self.token = token
        self.device_id = device_id
        self.store = store
        self.display = display
        self.log = log
        self.poll = poll_interval
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.ssl_context = ssl_context

    def _http(self, method, path, bearer=None, body=None):
        data = None
        req = urllib.request.Request(self.base + path, method=method)
        req.add_header("Accept", "application/json")
        if body is not None:
            data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        if bearer:
            req.add_header("Authorization", "Bearer " + bearer)
        try:
            with urllib.request.urlopen(req, data=data, timeout=30, context=self.ssl_context) as resp:
                return resp.status, resp.read(MAX_RESPONSE)
        except urllib.error.HTTPError as e:
            return e.code, e.read(MAX_RESPONSE)
        except (OSError, urllib.error.URLError) as e:
            raise TransientError("%s %s: %s" % (method, path, e))

    def _create(self):
        code, body = self._http("POST", "/api/v1/provisioning/operations",
                                body={"token": self.token, "device_id": self.device_id or ""})
        if code in (401, 403):
            raise DeviceHubError("the hub refused the provisioning token (%d): %s" % (code, api_message(body)),
                                 "provisioning_failed")
        if 400 <= code < 500 and code not in (408, 429):
            raise DeviceHubError("create provisioning operation: status %d: %s" % (code, api_message(body)),
                                 "provisioning_failed")
        if code // 100 != 2:
            raise TransientError("create provisioning operation: status %d: %s" % (code, api_message(body)))
        try:
            op = json.loads(body)
            if not op.get("id") or not op.get("secret"):
                raise ValueError("no id or secret")
        except (ValueError, AttributeError) as e:
            raise DeviceHubError("malformed provisioning operation from the hub: %s" % e, "provisioning_failed")
        return {"id": op["id"], "verification_code": op.get("verification_code", ""),
                "expires_at": op.get("expires_at", ""), "secret": op["secret"]}

    def _poll(self, op):
        code, body = self._http("GET", "/api/v1/provisioning/operations/" + urllib.parse.quote(op["id"], safe=""),
                                bearer=op["secret"])
        if code in (404, 410):
            return "gone", None
        if code in (401, 403):
            raise DeviceHubError("the hub refused the operation secret (%d): %s" % (code, api_message(body)),
                                 "provisioning_failed")
        if code // 100 != 2:
            raise TransientError("poll provisioning operation: status %d: %s" % (code, api_message(body)))
        try:
            out = json.loads(body)
        except ValueError as e:
            raise TransientError("poll provisioning operation: %s" % e)
        status = str(out.get("status", "")).lower()
        cr = out.get("credentials")
        if isinstance(cr, dict):
            cr = dict(cr)
            cr["device_id"] = cr.get("device_id") or out.get("device_id", "")
        else:
            cr = None
        if status == "approved" and cr is None:
            raise DeviceHubError("approved operation without credentials (fetched before?)", "provisioning_failed")
        return status, cr

    def _sleep_backoff(self, failures):
        import random
        hi = min(self.max_backoff, self.min_backoff * (2 ** (failures - 1)))
        time.sleep(self.min_backoff + random.random() * max(0.0, hi - self.min_backoff))

    def run(self):
        """Returns credentials once an operator approved the operation."""
        op = self.store.get_json("provisioning_op")
        failures = 0
        shown = None
        while True:
            exp = parse_time(op.get("expires_at")) if op else None
            if op is None or (exp is not None and time.time() > exp + 60):
                try:
                    op = self._create()
                except TransientError as e:
                    failures += 1
                    self.log.warning("create provisioning operation: %s", e)
                    self._sleep_backoff(failures)
                    op = None
                    continue
                self.store.put_json("provisioning_op", op)
            if shown != op["id"]:
                shown = op["id"]
                self.display(ProvisioningOperation(op["id"], op["verification_code"], op["expires_at"]))
            try:
                status, cr = self._poll(op)
            except TransientError as e:
                failures += 1
                self.log.warning("poll provisioning operation %s: %s", op["id"], e)
                self._sleep_backoff(failures)
                continue
            failures = 0
            if status == "gone":
                self.log.warning("provisioning operation %s unknown to the hub, starting a new one", op["id"])
                self.store.delete_key("provisioning_op")
                op = None
                continue
            if status == "approved":
                return cr
            if status in ("rejected", "expired"):
                self.store.delete_key("provisioning_op")
                raise DeviceHubError("provisioning operation %s %s" % (op["id"], status), "provisioning_" + status)
            exp = parse_time(op.get("expires_at"))
            if exp is not None and time.time() > exp + 60:
                self.store.delete_key("provisioning_op")
                raise DeviceHubError("provisioning operation %s expired at %s" % (op["id"], op["expires_at"]),
                                     "provisioning_expired")
            time.sleep(self.poll)
