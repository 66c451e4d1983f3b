"""The real devicehub binary as a child process, on random ports, and its
REST API, for the end-to-end tests. DEVICEHUB_BIN names the binary (the Go
test sdk/python/python_test.go builds it and sets it)."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

SERVING = re.compile(r"devicehub serving.*mqtt=(\S+) http=(\S+)")

# Sensor declares no fields (it takes any reading), the commands the tests
# send and a large payload limit; Strict takes a temperature only.
CONFIG = """data_dir: {dir}
mqtt: {{addr: "{mqtt}"}}
http: {{addr: "{http}"}}
ingest: {{rate_limit: {{rate: 0, burst: 0}}}}
commit: {{linger: 0s}}
device_types:
  Sensor:
    commands: [reboot, set_interval]
    max_payload_bytes: 4194304
  Strict:
    fields:
      temperature: {{type: float}}
"""


def die_with_parent():
    """preexec_fn of the tests' child processes: on Linux they get SIGKILL
    when the test process dies, so that a killed test run leaves no hub
    behind."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def eventually(cond, timeout=30.0, what="condition"):
    """Polls cond every 20 ms until it returns a true value, which it
    returns; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %ss" % (what, timeout))
        time.sleep(0.02)


class Hub(object):
    """A devicehub serve process. fixed_ports: the same ports across
    restarts (for tests that stop and start the hub)."""

    def __init__(self, fixed_ports=False):
        self.bin = os.environ.get("DEVICEHUB_BIN", "")
        if not self.bin or not os.path.exists(self.bin):
            raise RuntimeError("DEVICEHUB_BIN must name the devicehub binary (go build ./cmd/devicehub)")
        self.dir = tempfile.mkdtemp(prefix="dh-pytest-")
        if fixed_ports:
            self.mqtt_want, self.http_want = "127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()
        else:
            self.mqtt_want = self.http_want = "127.0.0.1:0"
        self.proc = None
        self.log_lines = []
        self.admin = None

    def start(self):
        cfg = os.path.join(self.dir, "devicehub.yaml")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(dir=self.dir, mqtt=self.mqtt_want, http=self.http_want))
        self.proc = subprocess.Popen([self.bin, "serve", "--config", cfg], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent)
        found = {}
        ev = threading.Event()
        proc = self.proc

        def read():
            for line in proc.stderr:
                self.log_lines.append(line)
                m = SERVING.search(line)
                if m and not ev.is_set():
                    found["mqtt"], found["http"] = m.group(1), m.group(2)
                    ev.set()
            proc.stderr.close()
            ev.set()

        threading.Thread(target=read, daemon=True).start()
        if not ev.wait(60) or "http" not in found:
            self.kill()
            raise RuntimeError("devicehub did not serve:\n" + "".join(self.log_lines[-30:]))
        self.mqtt, self.http = found["mqtt"], found["http"]
        with open(os.path.join(self.dir, "admin.token")) as f:
            self.admin = f.read().strip()
        return self

    @property
    def instance(self):
        """The instance string the SDK takes for this hub."""
        return "http://%s?mqtt=%s" % (self.http, self.mqtt)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cleanup(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- REST ---------------------------------------------------------

    def api(self, method, path, body=None, expect=None):
        req = urllib.request.Request("http://%s%s" % (self.http, path), method=method)
        req.add_header("Authorization", "Bearer " + self.admin)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, data=data, timeout=30) as resp:
                code, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            code, raw = e.code, e.read()
        out = json.loads(raw) if raw else None
        if expect is not None and code != expect:
            raise AssertionError("%s %s: status %d, want %d: %s" % (method, path, code, expect, raw[:500]))
        if expect is None and code // 100 != 2:
            raise AssertionError("%s %s: status %d: %s" % (method, path, code, raw[:500]))
        return out

    def token(self, auto_approve=False, device_type="Sensor"):
        """A provisioning token's secret."""
        return self.api("POST", "/api/v1/provisioning/tokens",
                        {"device_type": device_type, "auto_approve": auto_approve})["token"]

    def approve(self, op_id, device_id=None):
        body = {"device_id": device_id} if device_id else {}
        return self.api("POST", "/api/v1/provisioning/operations/%s/approve" % op_id, body)

    def readings(self, device_id, stream=None):
        """Every reading of the device, oldest first."""
        out, cursor = [], ""
        while True:
            q = "?limit=10000"
            if stream:
                q += "&stream=" + stream
            if cursor:
                q += "&cursor=" + urllib.request.quote(cursor)
            page = self.api("GET", "/api/v1/devices/%s/readings%s" % (device_id, q))
            out.extend(page["readings"])
            cursor = page.get("next")
            if not cursor:
                break
        out.sort(key=lambda r: r["id"])
        return out

    def twin(self, device_id):
        return self.api("GET", "/api/v1/devices/%s/twin" % device_id)["twin"]

    def set_desired(self, device_id, values):
        # A write states the version it is based on (else 428).
        version = self.twin(device_id)["desired"]["version"]
        return self.api("PUT", "/api/v1/devices/%s/twin/desired" % device_id,
                        {"values": values, "version": version})["twin"]

    def send_command(self, device_id, command, payload=None):
        body = {"command": command}
        if payload is not None:
            body["payload"] = payload
        return self.api("POST", "/api/v1/devices/%s/commands" % device_id, body)["command"]

    def command(self, command_id):
        return self.api("GET", "/api/v1/commands/%s" % command_id)["command"]
