"""devicehub's device SDK for Python, with the API of the seed's
``spotflow_device``: change the import and the instance, and a program
written for it works against devicehub.

    from devicehub_device import DeviceClient

    client = DeviceClient.start(device_id="my-device", provisioning_token="dhp_...",
                                db="devicehub.db", instance="http://hub.local:8080")
    sender = client.create_stream_sender(stream="environment")
    sender.enqueue_message('{"temperatureCelsius": 21.5}')  # returns once on disk

It speaks devicehub's device protocol exactly as the Go SDK (package sdk)
does: provisioning over HTTP, then MQTT v5 with QoS 1, one message in
flight, a msg_id in every message, batches of a backlog
(application/vnd.devicehub.batch+json), chunks of large messages, gzip
compression, commands and the twin. See sdk/python/README.md.
"""

from ._client import Command, DesiredProperties, DeviceClient, StreamSender
from ._errors import DeviceHubError, SpotflowError
from ._message import Compression
from ._provision import ProvisioningOperation

__all__ = [
    "Command",
    "Compression",
    "DesiredProperties",
    "DeviceClient",
    "DeviceHubError",
    "ProvisioningOperation",
    "SpotflowError",
    "StreamSender",
]

__version__ = "0.1.0"
