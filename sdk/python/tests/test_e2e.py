"""End-to-end tests of devicehub_device against the real devicehub binary
(DEVICEHUB_BIN) on random ports: every check goes through the hub's REST
API."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if not os.environ.get("DEVICEHUB_SDK_INSTALLED"):
    sys.path.insert(0, os.path.dirname(HERE))

from hubproc import Hub, die_with_parent, eventually  # noqa: E402

from devicehub_device import (Compression, DesiredProperties, DeviceClient, DeviceHubError,  # noqa: E402
                              ProvisioningOperation, SpotflowError)

EXAMPLE = os.path.join(os.path.dirname(HERE), "examples", "basic_usage.py")


def child_env():
    env = dict(os.environ)
    paths = [HERE]
    if not os.environ.get("DEVICEHUB_SDK_INSTALLED"):
        paths.append(os.path.dirname(HERE))
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    return env


class HubTestCase(unittest.TestCase):
    fixed_ports = False

    def setUp(self):
        self.hub = Hub(fixed_ports=self.fixed_ports).start()
        self.addCleanup(self.hub.cleanup)
        self.tmp = tempfile.mkdtemp(prefix="dh-pysdk-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.clients = []
        self.addCleanup(self._close_clients)

    def _close_clients(self):
        for c in self.clients:
            c.close()

    def db(self, name="device"):
        return os.path.join(self.tmp, name + ".db")

    def start_client(self, device_id, db, **kw):
        kw.setdefault("provisioning_token", None)
        kw.setdefault("min_backoff", 0.05)
        kw.setdefault("max_backoff", 0.5)
        c = DeviceClient.start(device_id=device_id, db=db, instance=self.hub.instance, **kw)
        self.clients.append(c)
        return c

    def provisioned(self, device_id, db, device_type="Sensor", **kw):
        """A client of a device provisioned with an auto-approving token."""
        shown = []
        return self.start_client(device_id, db, provisioning_token=self.hub.token(True, device_type),
                                 display_provisioning_operation_callback=shown.append, **kw)


class BasicUsageTest(HubTestCase):
    def test_seed_example_changed_only_in_import_and_instance(self):
        """The seed's basic-usage example (sdk/python/examples/basic_usage.py,
        which differs from the seed only in its import and its instance)
        run as a program: it prints the provisioning operation, the
        operator approves it, and its 60 messages are stored. The runner
        puts in the token and this hub's address for the placeholders, and
        shortens the example's time.sleep(5)."""
        with open(EXAMPLE) as f:
            src = f.read()
        self.assertIn("from devicehub_device import DeviceClient", src)
        token = self.hub.token()
        runner = (
            "import time\n"
            "_sleep = time.sleep\n"
            "time.sleep = lambda s: _sleep(0.01 if s == 5 else s)\n"
            "src = open(%r).read()\n"
            "src = src.replace('<Your Provisioning Token>', %r).replace('http://localhost:8080', %r)\n"
            "exec(compile(src, 'basic_usage.py', 'exec'), {'__name__': '__main__'})\n"
        ) % (EXAMPLE, token, self.hub.instance)
        p = subprocess.Popen([sys.executable, "-c", runner], cwd=self.tmp, env=child_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        line = p.stdout.readline()
        m = re.search(r"operation (\S+) is waiting for approval\. Verification code: (\S+)", line)
        self.assertIsNotNone(m, "first line %r; stderr %s" % (line, p.stderr.read() if p.poll() is not None else ""))
        ops = self.hub.api("GET", "/api/v1/provisioning/operations?status=pending")["operations"]
        self.assertIn((m.group(1), m.group(2)), [(o["id"], o["verification_code"]) for o in ops])
        self.hub.approve(m.group(1))
        out, err = p.communicate(timeout=90)
        self.assertEqual(p.returncode, 0, err)
        printed = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
        self.assertEqual(len(printed), 60)
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "spotflow.db")))
        rs = self.hub.readings("my-device", stream="default-stream-group.default-stream")
        self.assertEqual([r["values"]["temperatureCelsius"] for r in rs], [p["temperatureCelsius"] for p in printed])
        self.assertEqual(rs[0]["stream"], "default-stream-group.default-stream")


class ProvisioningTest(HubTestCase):
    def test_approval_with_overridden_device_id(self):
        shown = []
        got = {}
        token = self.hub.token()

        def start():
            try:
                got["client"] = self.start_client("asked-for", self.db(), provisioning_token=token,
                                                  display_provisioning_operation_callback=shown.append,
                                                  provisioning_poll_interval=0.05)
            except Exception as e:  # reported below
                got["err"] = e

        t = threading.Thread(target=start)
        t.start()
        eventually(lambda: shown, 30, "operation shown")
        op = shown[0]
        self.assertIsInstance(op, ProvisioningOperation)
        self.assertTrue(op.id and op.verification_code and op.expiration_time)
        pending = self.hub.api("GET", "/api/v1/provisioning/operations/%s" % op.id)
        self.assertEqual(pending["requested_device_id"], "asked-for")
        self.hub.approve(op.id, device_id="overridden-1")
        t.join(30)
        self.assertNotIn("err", got)
        c = got["client"]
        self.assertEqual(c.device_id, "overridden-1")
        self.assertEqual(c.workspace_id, "http://" + self.hub.http)
        c.create_stream_sender().send_message('{"temperature": 20.5}')
        rs = self.hub.readings("overridden-1")
        self.assertEqual([r["values"] for r in rs], [{"temperature": 20.5}])
        # Started again, the device uses its stored credentials: no
        # provisioning, even with another id asked for.
        c.close()
        again = self.start_client("asked-for", self.db(), provisioning_token="dhp_not-used")
        self.assertEqual(again.device_id, "overridden-1")

    def test_rejected_and_bad_token(self):
        shown = []
        token = self.hub.token()
        got = {}

        def start():
            try:
                self.start_client("rej-1", self.db(), provisioning_token=token,
                                  display_provisioning_operation_callback=shown.append, provisioning_poll_interval=0.05)
            except DeviceHubError as e:
                got["err"] = e

        t = threading.Thread(target=start)
        t.start()
        eventually(lambda: shown, 30, "operation shown")
        self.hub.api("POST", "/api/v1/provisioning/operations/%s/reject" % shown[0].id, {"reason": "not ours"})
        t.join(30)
        self.assertEqual(got["err"].kind, "provisioning_rejected")
        with self.assertRaises(SpotflowError) as cm:
            self.start_client("x", self.db("other"), provisioning_token="dhp_not-a-token")
        self.assertEqual(cm.exception.kind, "provisioning_failed")
        self.assertIn("invalid_token", str(cm.exception))


class OfflineTest(HubTestCase):
    fixed_ports = True

    def test_offline_start_1000_messages_and_reported_properties(self):
        c = self.provisioned("off-1", self.db())
        c.close()
        self.hub.stop()
        # Offline: start returns at once from the stored credentials.
        t0 = time.monotonic()
        c = self.start_client("off-1", self.db())
        self.assertLess(time.monotonic() - t0, 5)
        s = c.create_stream_sender(stream="offline")
        for i in range(1000):
            s.enqueue_message(json.dumps({"seq": i}), message_id="m%d" % i)
        c.update_reported_properties({"firmware": "1.2.3", "interval": 10})
        c.update_reported_properties({"interval": 30})
        self.assertEqual(c.pending_messages_count, 1002)
        self.assertTrue(c.any_pending_reported_properties_updates)
        self.hub.start()
        c.wait_enqueued_messages_sent()
        self.assertEqual(c.pending_messages_count, 0)
        self.assertFalse(c.any_pending_reported_properties_updates)
        rs = self.hub.readings("off-1", stream="offline")
        self.assertEqual([r["values"]["seq"] for r in rs], list(range(1000)))
        reported = self.hub.twin("off-1")["reported"]
        self.assertEqual(reported["values"], {"firmware": "1.2.3", "interval": 30})


KILL_CHILD = r"""
import json, sys
from devicehub_device import DeviceClient
db, instance, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = DeviceClient.start(device_id="k9", provisioning_token=None, db=db, instance=instance, min_backoff=0.05, max_backoff=0.5)
s = c.create_stream_sender(stream="k9")
print("pending", c.pending_messages_count, flush=True)
if start < 0:
    c.wait_enqueued_messages_sent()
    print("drained", flush=True)
    sys.exit(0)
i = start
while True:
    s.enqueue_message(json.dumps({"seq": i}), message_id="m%d" % i)
    print(i, flush=True)
    i += 1
"""


class Kill9Test(HubTestCase):
    def test_kill9_mid_stream_five_times(self):
        """Every message enqueue_message returned for (the child printed
        its seq after the call returned) is stored exactly once, in order,
        although the child is killed with SIGKILL five times while it
        enqueues and sends."""
        c = self.provisioned("k9", self.db())
        c.close()
        returned = []
        resumed = []  # messages each child found waiting in the database
        nxt = 0
        rnd = random.Random(18)
        for round_ in range(5):
            p = subprocess.Popen([sys.executable, "-c", KILL_CHILD, self.db(), self.hub.instance, str(nxt)],
                                 env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 preexec_fn=die_with_parent)
            want = rnd.randint(300, 900)
            first_line = p.stdout.readline()
            if not first_line.startswith("pending "):
                self.fail("child: %r %s" % (first_line, p.stderr.read()))
            resumed.append(int(first_line.split()[1]))
            got = 0
            while got < want:
                line = p.stdout.readline()
                if not line:
                    self.fail("child exited: %s" % p.stderr.read())
                returned.append(int(line))
                got += 1
            # Kill while the sender is at work: once the hub stored some
            # of this round's messages.
            first = returned[-want]
            eventually(lambda: any(r["values"]["seq"] >= first for r in self.hub.readings("k9")[-50:]),
                       30, "round %d sending" % round_)
            os.kill(p.pid, signal.SIGKILL)
            rest, _ = p.communicate()
            returned.extend(int(l) for l in rest.split())  # printed before the kill
            nxt = returned[-1] + 1
        p = subprocess.run([sys.executable, "-c", KILL_CHILD, self.db(), self.hub.instance, "-1"],
                           env=child_env(), capture_output=True, text=True, timeout=120, preexec_fn=die_with_parent)
        self.assertEqual(p.stdout.split()[-1], "drained", p.stderr)
        resumed.append(int(p.stdout.split()[1]))
        # The kills interrupted the sending: children resumed a backlog.
        self.assertGreater(sum(resumed), 0, resumed)
        seqs = [r["values"]["seq"] for r in self.hub.readings("k9", stream="k9")]
        self.assertEqual(len(seqs), len(set(seqs)), "a message was stored twice")
        self.assertEqual(seqs, sorted(seqs), "messages stored out of order")
        missing = set(returned) - set(seqs)
        self.assertFalse(missing, "returned but not stored: %s" % sorted(missing)[:20])
        self.assertGreater(len(returned), 1500)


class TwinAndCommandsTest(HubTestCase):
    def test_desired_properties_after_offline_period(self):
        seen = []
        c = self.provisioned("tw-1", self.db(), desired_properties_updated_callback=seen.append)
        self.assertIsNone(c.get_desired_properties_if_newer())
        self.assertEqual(c.get_desired_properties().version, 0)
        self.hub.set_desired("tw-1", {"interval": 10})
        eventually(lambda: seen and seen[-1].version == 1, 30, "version 1 delivered")
        self.assertIsInstance(seen[-1], DesiredProperties)
        self.assertEqual(seen[-1].values, {"interval": 10})
        c.close()
        # Offline: three more versions.
        for v in (20, 30, 40):
            self.hub.set_desired("tw-1", {"interval": v})
        seen.clear()
        c = self.start_client("tw-1", self.db(), desired_properties_updated_callback=seen.append)
        eventually(lambda: seen and seen[-1].version == 4, 30, "version 4 delivered")
        # The callback got the current version at start (the stored one)
        # and then only the latest: never the versions in between.
        self.assertEqual([d.version for d in seen if d.version not in (1, 4)], [])
        self.assertEqual(seen[-1].values, {"interval": 40})
        self.assertEqual(c.get_desired_properties().version, 4)
        self.assertIsNone(c.get_desired_properties_if_newer(4))
        self.assertEqual(c.get_desired_properties_if_newer(1).values, {"interval": 40})

    def test_commands_callback(self):
        got = []

        def on_command(cmd):
            got.append(cmd)
            if cmd.name == "reboot":
                raise RuntimeError("not now")
            return {"interval": cmd.payload["seconds"]}

        # A command sent while the device is offline is published once it
        # connected (and subscribed).
        self.provisioned("cmd-1", self.db()).close()
        sent = self.hub.send_command("cmd-1", "set_interval", {"seconds": 15})
        self.start_client("cmd-1", self.db(), command_callback=on_command)
        done = eventually(lambda: self.answered(sent["id"]), 30, "command answered")
        self.assertEqual(done["status"], "succeeded")
        self.assertEqual(done["result"], {"interval": 15})
        self.assertEqual((got[0].id, got[0].name, got[0].payload), (sent["id"], "set_interval", {"seconds": 15}))
        # One sent while it is online; a callback that raises fails it.
        eventually(lambda: self.hub.api("GET", "/api/v1/devices/cmd-1")["device"]["connected"], 30, "connected")
        sent = self.hub.send_command("cmd-1", "reboot")
        # (The hub publishes again every 30 s what a device did not answer.)
        done = eventually(lambda: self.answered(sent["id"]), 45, "command answered")
        self.assertEqual(done["status"], "failed")
        self.assertEqual(done["result"], {"error": "not now"})
        self.assertEqual(len(got), 2)

    def answered(self, command_id):
        c = self.hub.command(command_id)
        return c if c["status"] in ("succeeded", "failed") else None


class MessagesTest(HubTestCase):
    def test_ids_compression_chunks_and_refusals(self):
        c = self.provisioned("msg-1", self.db())
        s = c.create_stream_sender(stream="m", compression=Compression.SMALLEST_SIZE)
        big = {"text": "x" * 300000}  # compresses well; over 128 KiB raw
        s.send_message(json.dumps(big), message_id="big")
        fast = c.create_stream_sender(stream="m", compression=Compression.FASTEST)
        fast.send_message(json.dumps({"note": "y" * 1000}), batch_id="b1", message_id="m1", chunk_id="c1")
        fast.enqueue_batch_completion("b1")
        fast.enqueue_message_completion("b1", "m1")
        # Too large even compressed as random text: chunked on the wire.
        noise = os.urandom(100000).hex()
        s.send_message(json.dumps({"noise": noise}))
        c.wait_enqueued_messages_sent()
        rs = self.hub.readings("msg-1", stream="m")
        self.assertEqual(len(rs), 5)
        self.assertEqual(rs[0]["values"]["text"], big["text"])
        self.assertEqual(rs[2]["values"], {"batch_completed": "b1"})
        self.assertEqual(rs[3]["values"], {"message_completed": "m1", "batch_id": "b1"})
        self.assertEqual(rs[4]["values"]["noise"], noise)
        msgs = self.hub.api("GET", "/api/v1/devices/msg-1/messages?limit=1000")["messages"]
        ids = {m["msg_id"] for m in msgs if m["accepted"]}
        self.assertTrue({"big", "b1//m1/c1", "b1/complete", "b1/m1/complete"} <= ids, ids)
        # What the hub cannot take is refused at once, with a clear error.
        for bad, why in (("not json", "not valid JSON"), ("[1, 2]", "not a JSON object"),
                         ('"text"', "JSON object"), ("[]", "empty array")):
            with self.assertRaises(DeviceHubError) as cm:
                s.enqueue_message(bad)
            self.assertIn(why, str(cm.exception))
            self.assertEqual(cm.exception.kind, "invalid_payload")
        with self.assertRaises(DeviceHubError):
            c.create_stream_sender(stream="no/slash")
        self.assertEqual(c.pending_messages_count, 0)

    def test_refused_message_is_reported_and_the_rest_goes_on(self):
        c = self.provisioned("strict-1", self.db(), device_type="Strict")
        s = c.create_stream_sender()
        s.enqueue_message('{"temperature": 1.5}')
        with self.assertRaises(DeviceHubError) as cm:
            s.send_message('{"humidity": 40}', message_id="bad-1")
        self.assertEqual(cm.exception.kind, "invalid_payload")  # PUBACK 0x99, as the Go SDK maps it
        self.assertEqual(cm.exception.message_id, "bad-1")
        self.assertIn("humidity", str(cm.exception))
        # A refused element makes the hub refuse a whole batch: the backlog
        # is then sent one by one, and only the bad message is lost.
        c.close()
        # Offline (an address where no hub listens), so that they wait in
        # the outbox together.
        off = DeviceClient.start(device_id=None, provisioning_token=None, db=self.db(),
                                 instance="http://127.0.0.1:9?mqtt=127.0.0.1:9")
        for i in range(20):
            off.create_stream_sender().enqueue_message('{"humidity": 1}' if i == 7 else '{"temperature": %d}' % i)
        self.assertEqual(off.pending_messages_count, 20)
        off.close()
        c = self.start_client("strict-1", self.db())
        c.wait_enqueued_messages_sent()
        temps = [r["values"]["temperature"] for r in self.hub.readings("strict-1")]
        self.assertEqual(temps, [1.5] + [i for i in range(20) if i != 7])


if __name__ == "__main__":
    unittest.main()
