package hub

import (
	"path/filepath"

	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/retention"
)

// retentionOptions hands the retention settings to the expirer.
func retentionOptions(c config.RetentionConfig) retention.Options {
	return retention.Options{
		Readings: c.Readings, ReadingsByType: c.ReadingsByType,
		MessagePayloads: c.MessagePayloads, Messages: c.Messages, Events: c.Events,
		Rollups: c.Rollups, Rollups1m: c.Rollups1m, Rollups1h: c.Rollups1h,
		Interval: c.Interval, Batch: c.Batch,
	}
}

// spaceDir is the directory whose filesystem fills as the hub stores: the
// SQLite database's, else the data directory's.
func spaceDir(cfg *config.Config) string {
	if cfg.Storage.Driver == "sqlite" && cfg.Storage.SQLite.Path != "" {
		return filepath.Dir(cfg.Storage.SQLite.Path)
	}
	return cfg.DataDir
}
