package config

import (
	"slices"
	"sort"
	"time"

	"github.com/devicehub/devicehub/internal/devicetype"
)

// RetentionConfig is how long the hub keeps what it stores
// (internal/retention). Zero keeps forever, the default.
type RetentionConfig struct {
	// Readings is how long readings are kept, for device types that
	// readings_by_type does not name.
	Readings time.Duration `yaml:"readings"`
	// ReadingsByType overrides readings per device type (0: forever).
	ReadingsByType map[string]time.Duration `yaml:"readings_by_type"`
	// MessagePayloads is how long the message log keeps payloads; after
	// it a record keeps its metadata only.
	MessagePayloads time.Duration `yaml:"message_payloads"`
	// Messages is how long message log records are kept at all; keep it
	// longer than devices may resend a message (msg_id duplicates are
	// recognised only while their record is kept).
	Messages time.Duration `yaml:"messages"`
	// Events is how long the event log is kept; a monitor or subscriber
	// further behind than that misses the expired events.
	Events time.Duration `yaml:"events"`
	// Rollups sums the numeric fields of readings up per minute and per
	// hour (count, sum, min, max, last) behind the write path; raw
	// readings are then expired only once summed up. Rollups1m and
	// Rollups1h are how long those are kept (0: forever).
	Rollups   bool          `yaml:"rollups"`
	Rollups1m time.Duration `yaml:"rollups_1m"`
	Rollups1h time.Duration `yaml:"rollups_1h"`
	// Interval between expiry passes; Batch is the most rows one of its
	// transactions changes.
	Interval time.Duration `yaml:"interval"`
	Batch    int           `yaml:"batch"`
	// CompactAfter is the age at which readings move from rows into
	// compressed blocks (stores that keep blocks: SQLite), checked every
	// CompactInterval.
	CompactAfter    time.Duration `yaml:"compact_after"`
	CompactInterval time.Duration `yaml:"compact_interval"`
}

func defaultRetention() RetentionConfig {
	return RetentionConfig{Interval: time.Minute, Batch: 1000, CompactAfter: time.Hour, CompactInterval: 10 * time.Minute}
}

func (c *Config) checkRetention() error {
	r := c.Retention
	for _, kv := range []struct {
		key string
		v   time.Duration
	}{{"retention.readings", r.Readings}, {"retention.message_payloads", r.MessagePayloads}, {"retention.messages", r.Messages}, {"retention.events", r.Events},
		{"retention.rollups_1m", r.Rollups1m}, {"retention.rollups_1h", r.Rollups1h},
		{"retention.compact_after", r.CompactAfter}, {"retention.compact_interval", r.CompactInterval}} {
		if kv.v < 0 {
			return invalid(kv.key, "must not be negative (0 keeps forever)")
		}
	}
	if !r.Rollups && (r.Rollups1m > 0 || r.Rollups1h > 0) {
		return invalid("retention.rollups", "must be true when retention.rollups_1m or rollups_1h is set")
	}
	if r.Messages > 0 && r.MessagePayloads > r.Messages {
		return invalid("retention.message_payloads", "must not exceed retention.messages")
	}
	names := make([]string, 0, len(r.ReadingsByType))
	for name := range r.ReadingsByType {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if r.ReadingsByType[name] < 0 {
			return invalid("retention.readings_by_type."+name, "must not be negative (0 keeps forever)")
		}
		if !slices.ContainsFunc(c.DeviceTypes, func(t devicetype.Type) bool { return t.Name == name }) {
			return invalid("retention.readings_by_type."+name, "no device type %q is declared", name)
		}
	}
	if r.Interval < time.Second {
		return invalid("retention.interval", "must be at least 1s")
	}
	return atLeast("retention.batch", int64(r.Batch), 1)
}
