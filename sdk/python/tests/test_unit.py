"""Tests of the SDK's parts that need no hub: messages, ids, the instance,
the local database."""

import gzip
import json
import os
import random
import shutil
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if not os.environ.get("DEVICEHUB_SDK_INSTALLED"):
    sys.path.insert(0, os.path.dirname(HERE))

from devicehub_device import Compression, DeviceClient, DeviceHubError, SpotflowError  # noqa: E402
from devicehub_device._client import parse_instance  # noqa: E402
from devicehub_device._message import compose_msg_id, compress, stream_name, with_msg_id  # noqa: E402
from devicehub_device._inbound import parse_command, parse_desired  # noqa: E402
from devicehub_device._provision import parse_time  # noqa: E402
from devicehub_device._store import KIND_DATA, Entry, Store  # noqa: E402


def gen():
    return "gen-1"


class PackageTest(unittest.TestCase):
    def test_the_package_under_test(self):
        import devicehub_device
        src = os.path.dirname(HERE)
        installed = not devicehub_device.__file__.startswith(src + os.sep)
        self.assertEqual(installed, bool(os.environ.get("DEVICEHUB_SDK_INSTALLED")), devicehub_device.__file__)


class MessageTest(unittest.TestCase):
    def test_with_msg_id(self):
        cases = [
            ('{"a": 1}', None, b'{"msg_id":"gen-1","a":1}', "gen-1"),
            (b'{"a": 1}', "x", b'{"msg_id":"x","a":1}', "x"),
            ('{"a": 1, "msg_id": "own"}', None, b'{"a":1,"msg_id":"own"}', "own"),
            ('{"a": 1, "msg_id": "own"}', "own", b'{"a":1,"msg_id":"own"}', "own"),
            ('[{"a": 1}, {"a": 2}]', "b", b'[{"msg_id":"b","a":1},{"msg_id":"b","a":2}]', "b"),
            ('{"t": "\u00e9"}', "u", '{"msg_id":"u","t":"\u00e9"}'.encode(), "u"),
        ]
        for payload, mid, want, want_id in cases:
            with self.subTest(payload=payload):
                got, got_id = with_msg_id(payload, mid, gen)
                self.assertEqual((got, got_id), (want, want_id))

    def test_with_msg_id_refuses(self):
        cases = [
            ("not json", "not valid JSON"),
            ("[]", "empty array"),
            ("[1]", "element 0"),
            ("3", "JSON object"),
            ('{"a": NaN}', "not valid JSON"),
            (b"\xff", "not valid JSON"),
            ('{"msg_id": "a"}', "carries msg_id"),  # with "b" given
            ('[{"msg_id": "a"}, {"msg_id": "b"}]', "conflicting"),
            ('{"x": 1}', "at most 128"),  # with a long id
            (42, "str or bytes"),
        ]
        for payload, why in cases:
            mid = "b" if why == "carries msg_id" else ("z" * 129 if why == "at most 128" else None)
            with self.subTest(payload=payload):
                with self.assertRaises(DeviceHubError) as cm:
                    with_msg_id(payload, mid, gen)
                self.assertIn(why, str(cm.exception))
                self.assertEqual(cm.exception.kind, "invalid_payload")
                self.assertIsInstance(cm.exception, SpotflowError)

    def test_compose_msg_id(self):
        self.assertEqual(compose_msg_id(None, None, None, None), None)
        self.assertEqual(compose_msg_id(None, "m/1", None, None), "m/1")
        self.assertEqual(compose_msg_id("b", "m", None, None), "b//m/")
        self.assertEqual(compose_msg_id("b", "m", "s", "c"), "b/s/m/c")
        self.assertTrue(compose_msg_id("b", None, None, None).startswith("b//"))
        for args in (("b/x", "m", None, None), ("", "m", None, None), (1, None, None, None)):
            with self.assertRaises(DeviceHubError):
                compose_msg_id(*args)

    def test_compress(self):
        small = b'{"a":1}'
        self.assertEqual(compress(Compression.FASTEST, small), (small, "application/json"))
        big = json.dumps({"text": "abc" * 1000}).encode()
        self.assertEqual(compress(Compression.UNCOMPRESSED, big), (big, "application/json"))
        for c in (Compression.FASTEST, Compression.SMALLEST_SIZE):
            out, ct = compress(c, big)
            self.assertEqual(ct, "application/json+gzip")
            self.assertEqual(gzip.decompress(out), big)
        noise = os.urandom(1000)
        self.assertEqual(compress(Compression.SMALLEST_SIZE, noise), (noise, "application/json"))

    def test_stream_name(self):
        self.assertEqual(stream_name(None, None), "")
        self.assertEqual(stream_name("g", None), "g")
        self.assertEqual(stream_name(None, "s"), "s")
        self.assertEqual(stream_name("default-stream-group", "default-stream"), "default-stream-group.default-stream")
        for bad in (("a/b", None), (None, "x" * 65), (None, "sp ace"), (None, "\u00e9")):
            with self.assertRaises(DeviceHubError):
                stream_name(*bad)


def mutations(seeds, n, seed=18):
    """n deterministic random mutations of the seeds (bytes): the fuzz
    corpus of the parsers below (Python's counterpart of a Go FuzzXxx)."""
    rnd = random.Random(seed)
    alphabet = b'{}[]",:0123456789.-eE+ \\tnulrsfa\x00\xff\xc3'
    for s in seeds:
        yield s
    for _ in range(n):
        b = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 4)):
            op = rnd.randint(0, 3)
            i = rnd.randint(0, len(b))
            if op == 0:
                b[i:i] = bytes([rnd.choice(alphabet)])
            elif op == 1 and b:
                del b[min(i, len(b) - 1)]
            elif op == 2 and b:
                b[min(i, len(b) - 1)] = rnd.choice(alphabet)
            else:
                j = rnd.randint(0, len(b))
                b[i:i] = b[min(i, j):max(i, j)]
        yield bytes(b)


class FuzzTest(unittest.TestCase):
    """The parsers of outside input, on mutated seeds: they answer or say
    why, and raise nothing else."""

    def test_fuzz_desired(self):
        seeds = [b'{"version": 3, "values": {"interval": 10}}', b'{"version": 1e400}', b'{"version": true}',
                 b'[1]', b'', b'{"version": 2, "values": null}', b'{"version": -1}']
        for p in mutations(seeds, 3000):
            got = parse_desired(p)
            if got is None or isinstance(got, str):
                continue
            version, values = got
            self.assertIsInstance(version, int, p)
            self.assertFalse(isinstance(version, bool), p)
            self.assertGreaterEqual(version, 0, p)
            self.assertIsInstance(values, dict, p)
        self.assertEqual(parse_desired(seeds[0]), (3, {"interval": 10}))
        self.assertIn("version", parse_desired(seeds[1]))

    def test_fuzz_command(self):
        seeds = [b'{"command": "reboot", "payload": {"a": [1, 2]}, "expires_at": "2026-12-02T18:46:17.691269Z"}',
                 b'{"command": 5}', b'{"command": "x", "expires_at": 7}', b'"x"']
        for p in mutations(seeds, 3000):
            got = parse_command(p)
            if isinstance(got, str):
                self.assertTrue(got.startswith("malformed command"), got)
                continue
            name, _, exp = got
            self.assertIsInstance(name, str)
            parse_time(exp)  # never raises
        self.assertEqual(parse_command(seeds[0])[:2], ("reboot", {"a": [1, 2]}))

    def test_fuzz_with_msg_id(self):
        seeds = [b'{"temperature": 21.5}', b'[{"a": 1}, {"b": "x", "msg_id": "m"}]', b'{"msg_id": "m", "ts": 1}']
        for p in mutations(seeds, 3000):
            try:
                out, mid = with_msg_id(p, None, gen)
            except DeviceHubError as e:
                self.assertEqual(e.kind, "invalid_payload")
                continue
            doc = json.loads(out)
            for o in doc if isinstance(doc, list) else [doc]:
                self.assertEqual(o["msg_id"], mid, p)

    def test_fuzz_time_and_instance(self):
        for p in mutations([b"2026-12-02T18:46:17.691269Z", b"2026-12-02T18:46:17+02:00", b"http://h:1?mqtt=m:2"], 2000):
            s = p.decode("utf-8", "replace")
            parse_time(s)
            try:
                parse_instance(s)
            except DeviceHubError as e:
                self.assertEqual(e.kind, "invalid_options")


class InstanceTest(unittest.TestCase):
    def test_parse_instance(self):
        cases = [
            (None, ("http://localhost:8080", "localhost", 1883, False)),
            ("http://hub:8080", ("http://hub:8080", "hub", 1883, False)),
            ("https://hub.example", ("https://hub.example", "hub.example", 8883, True)),
            ("hub.example", ("https://hub.example", "hub.example", 8883, True)),
            ("http://127.0.0.1:1?mqtt=127.0.0.1:2", ("http://127.0.0.1:1", "127.0.0.1", 2, False)),
            ("http://h:1/?mqtt=mqtts://m:3", ("http://h:1", "m", 3, True)),
            ("https://h?mqtt=mqtt://m", ("https://h", "m", 1883, False)),
        ]
        for inst, want in cases:
            with self.subTest(instance=inst):
                self.assertEqual(parse_instance(inst), want)
        for bad in ("", "ftp://x", "http://", "http://h:x", "http://h?mqtt=ws://m:1", 5):
            with self.subTest(instance=bad):
                with self.assertRaises(DeviceHubError) as cm:
                    parse_instance(bad)
                self.assertEqual(cm.exception.kind, "invalid_options")


class StoreTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_db_must_end_in_db(self):
        with self.assertRaises(DeviceHubError) as cm:
            DeviceClient.start("d", "t", os.path.join(self.tmp, "x.sqlite"))
        self.assertIn(".db", str(cm.exception))

    def test_no_credentials_no_token(self):
        with self.assertRaises(DeviceHubError) as cm:
            DeviceClient.start("d", None, os.path.join(self.tmp, "x.db"))
        self.assertEqual(cm.exception.kind, "invalid_options")
        self.assertIn("provisioning_token", str(cm.exception))

    def test_one_process_at_a_time(self):
        path = os.path.join(self.tmp, "x.db")
        s = Store(path)
        self.addCleanup(s.close)
        with self.assertRaises(DeviceHubError) as cm:
            Store(path)
        self.assertIn("in use", str(cm.exception))

    def test_outbox_keeps_order_across_reopen(self):
        path = os.path.join(self.tmp, "x.db")
        s = Store(path)
        s.append([Entry(KIND_DATA, "t", "application/json", "m%d" % i, b"{}") for i in range(5)])
        s.delete([1, 2])
        s.close()
        s = Store(path)
        self.addCleanup(s.close)
        self.assertEqual([e.msg_id for e in s.run_after(0, 10)], ["m2", "m3", "m4"])
        s.append([Entry(KIND_DATA, "t", "application/json", "m5", b"{}")])
        self.assertEqual(s.outbox_state(), (4, 0, 3, 6))


if __name__ == "__main__":
    unittest.main()
