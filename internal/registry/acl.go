package registry

import "strings"

// TopicPrefix is what every topic of a device starts with, followed by its
// id and a slash.
const TopicPrefix = "devices/"

// TopicAllowed is the one access rule for device topics, used by the
// embedded broker and by the HTTP auth view of external brokers alike: a
// device may publish and subscribe only under devices/{id}/. It holds for
// topics and filters: a filter that starts with the literal prefix cannot
// match outside it, while one with a wildcard before the end of the prefix
// ("devices/+/data", "#") could, and is refused. A publish (write) to a
// topic with a wildcard is refused too: such a topic is not a topic.
func TopicAllowed(deviceID, topic string, write bool) bool {
	// A device id never holds a wildcard or a level separator; a client id
	// that does (an external broker may ask about any client) could widen
	// the prefix.
	if deviceID == "" || strings.ContainsAny(deviceID, "+#/") {
		return false
	}
	rest, ok := strings.CutPrefix(topic, TopicPrefix)
	if !ok {
		return false
	}
	rest, ok = strings.CutPrefix(rest, deviceID)
	if !ok || len(rest) < 2 || rest[0] != '/' {
		return false
	}
	if write && strings.ContainsAny(rest, "+#") {
		return false
	}
	return true
}

// DeviceIDFromTopic returns the device id of a topic under devices/{id}/
// (the second level, never empty), and false for any other topic.
func DeviceIDFromTopic(topic string) (string, bool) {
	rest, ok := strings.CutPrefix(topic, TopicPrefix)
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, "/")
	if !ok || id == "" {
		return "", false
	}
	return id, true
}

// ConnectIdentityOK reports whether an MQTT client's identity has the shape
// the hub requires before it looks at the password: the client id is the
// device id, and the username is the same.
func ConnectIdentityOK(clientID, username string) bool {
	return clientID != "" && clientID == username
}
