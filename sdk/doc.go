// Package sdk is devicehub's device SDK for Go: a device program gives it
// the hub's address, a provisioning token (or credentials) and the path of
// a local database, and sends readings that are never lost.
//
//	c, err := sdk.Start(ctx, sdk.Options{
//		DeviceID:          "my-device",
//		ProvisioningToken: token,
//		DB:                "device.db",
//		Server:            "https://hub.example:8443",
//		OnProvisioning:    func(op sdk.ProvisioningOperation) { fmt.Println(op.VerificationCode) },
//		OnCommand:         func(cmd sdk.Command) sdk.Result { return sdk.Result{Status: "succeeded"} },
//	})
//	defer c.Close()
//	s := c.StreamSender("outdoor")
//	s.Enqueue([]byte(`{"temperature": 21.5}`)) // returns once it is on disk
//
// # Store and forward
//
// Every outgoing message (readings, reported properties, command results)
// is first written to the outbox in the local bbolt database, fsynced, and
// only then does Enqueue return. A background sender publishes the outbox
// in order over MQTT v5 (QoS 1, one message in flight, so the hub stores
// them in order) and deletes a message only after the hub's PUBACK, which
// the hub sends only once the message is stored. Each message carries a
// msg_id, given or generated at enqueue and stored with it, so a message
// resent after a crash or a lost PUBACK is stored once by the hub. A
// message the hub refuses for good (validation, size) is removed and
// reported through Options.OnError and Send; one refused for its rate is
// sent again after a backoff. Reconnects use exponential backoff with full
// jitter.
//
// Inbound commands and desired properties are stored before they are
// acknowledged, and a command leaves the database only after OnCommand
// returned, in the transaction that queues its result.
//
// # Configuration
//
// With Options.OnConfig the SDK follows the configurations the hub renders
// for the device: it subscribes to devices/{id}/config (a retained notice
// {"checksum", "url", "backend"}), stores each notice before acknowledging
// it, downloads the configuration from the notice's URL with the device's
// api_key, checks its SHA-256, calls OnConfig and reports
// {"checksum", "status": "applied" | "error", "error"} on
// devices/{id}/config/status through the outbox, so a report made while
// offline is sent on reconnect.
//
// # Wire protocol
//
// Compression: a compressed message has the MQTT v5 content type
// "application/json+zstd" or "application/json+gzip" (the base type, then
// "+" and the encoding). The hub decompresses it (bounded by the device
// type's payload limit) before anything else; any other encoding is
// refused with invalid_payload.
//
// Batches: a backlog of single-reading JSON messages is sent as batches:
// one MQTT message of content type "application/vnd.devicehub.batch+json"
// whose payload is a JSON array of the messages, each keeping its own
// msg_id. The hub stores each element as its own message and acknowledges
// the batch once all are stored; it refuses the whole batch if one element
// is bad, and the SDK then sends those messages one by one. Set
// Options.DisableBatching for brokers other than devicehub.
//
// Chunking: a message larger than Options.ChunkSize is sent as chunks on
// {topic}/chunks/{chunk_id}/{index}/{count}, where {topic} is the
// message's own topic (devices/{id}/data or devices/{id}/data/{stream}),
// index counts from 0 and every chunk has the message's content type. The
// hub holds chunks in memory (bounded) and acknowledges each one when it
// holds it; the last chunk (index count-1, sent last) is acknowledged only
// once the whole message is stored, or not at all if the hub lost earlier
// chunks (it then closes the connection and the SDK sends every chunk
// again). So the SDK deletes a chunked message from its outbox only when
// the last chunk is acknowledged, and after any reconnect it sends the
// message again from its first chunk.
package sdk
