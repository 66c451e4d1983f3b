package config

import (
	"net/url"
	"regexp"
	"time"
)

// ClusterConfig turns on cluster mode (docs/CLUSTER.md): several nodes on
// one PostgreSQL database and a NATS JetStream cluster. It is off while
// NodeID and NATS are both empty.
type ClusterConfig struct {
	// NodeID names this node, unique in the cluster; it holds the node's
	// lease and is told in logs and metrics. DEVICEHUB_CLUSTER_NODE_ID.
	NodeID string `yaml:"node_id"`
	// NATS are the URLs of the NATS servers (one of each cluster member
	// is best; the client moves to another when one fails).
	NATS []string `yaml:"nats"`
	// LeaseTTL is how long a lease (a node's, or a single-owner job's)
	// lasts without renewal; Renew how often its holder renews it.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	Renew    time.Duration `yaml:"renew"`
	// Name names the cluster on NATS: the event stream is
	// DEVICEHUB_<name>_EVENTS on subject devicehub.<name>.events, so
	// several clusters can share NATS servers.
	Name string `yaml:"name"`
	// StreamReplicas of the event stream: 3 on a 3-server NATS cluster
	// (the stream then survives a server's loss), 1 on one server.
	StreamReplicas int `yaml:"stream_replicas"`
	// LogPoll is how often a node reads the event log for events NATS did
	// not bring (a NATS outage): events reach every node within it.
	LogPoll time.Duration `yaml:"log_poll"`
}

// Enabled reports whether the configuration asks for cluster mode.
func (c ClusterConfig) Enabled() bool { return c.NodeID != "" || len(c.NATS) > 0 }

func defaultCluster() ClusterConfig {
	return ClusterConfig{LeaseTTL: 8 * time.Second, Renew: 2 * time.Second, Name: "devicehub", StreamReplicas: 1, LogPoll: time.Second}
}

var clusterNameRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

var nodeIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func (c *Config) checkCluster() error {
	cl := c.Cluster
	if !cl.Enabled() {
		return nil
	}
	if c.Storage.Driver != "postgres" {
		return invalid("cluster", "cluster mode needs storage.driver: postgres (every node shares one database; a SQLite file belongs to one process), got storage.driver: %s", c.Storage.Driver)
	}
	if cl.NodeID == "" {
		return invalid("cluster.node_id", "required in cluster mode (a name unique in the cluster, e.g. node-a)")
	}
	if !nodeIDRe.MatchString(cl.NodeID) {
		return invalid("cluster.node_id", "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit, got %q", cl.NodeID)
	}
	if len(cl.NATS) == 0 {
		return invalid("cluster.nats", "required in cluster mode: the URLs of the NATS JetStream servers, e.g. [nats://10.0.0.1:4222]")
	}
	for i, u := range cl.NATS {
		p, err := url.Parse(u)
		if err != nil || p.Host == "" || (p.Scheme != "nats" && p.Scheme != "tls") {
			return invalid("cluster.nats", "entry %d: want a nats:// or tls:// URL with a host, got %q", i, u)
		}
	}
	if !clusterNameRe.MatchString(cl.Name) {
		return invalid("cluster.name", "must be 1-32 letters, digits, '_' or '-', got %q", cl.Name)
	}
	if cl.StreamReplicas < 1 || cl.StreamReplicas > 5 {
		return invalid("cluster.stream_replicas", "must be 1 to 5, got %d", cl.StreamReplicas)
	}
	if cl.LogPoll < 10*time.Millisecond {
		return invalid("cluster.log_poll", "must be at least 10ms, got %s", cl.LogPoll)
	}
	if cl.Renew < 100*time.Millisecond {
		return invalid("cluster.renew", "must be at least 100ms, got %s", cl.Renew)
	}
	if cl.LeaseTTL < 2*cl.Renew {
		return invalid("cluster.lease_ttl", "must be at least twice cluster.renew (%s), got %s", cl.Renew, cl.LeaseTTL)
	}
	return nil
}
