"""The SDK's one exception type."""


class DeviceHubError(Exception):
    """Raised by any function, method or property of the SDK that cannot
    continue because of an error (the counterpart of the seed's
    ``SpotflowError``). Errors of the background communication are logged
    through the ``devicehub_device`` logger instead.

    ``kind`` classifies the error with the Go SDK's stable names:
    ``invalid_options``, ``invalid_payload``, ``message_too_large``,
    ``rejected``, ``provisioning_rejected``, ``provisioning_expired``,
    ``provisioning_failed``, ``credentials_revoked``, ``storage``,
    ``closed`` or ``other``. ``message_id`` is the msg_id concerned, if any.
    """

    def __init__(self, message, kind="other", message_id=None):
        super().__init__(message)
        self.kind = kind
        self.message_id = message_id


# The seed's name, for programs written against it.
SpotflowError = DeviceHubError
