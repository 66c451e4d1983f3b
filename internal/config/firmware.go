package config

import "time"

// FirmwareConfig configures firmware updates (internal/firmware).
type FirmwareConfig struct {
	// Dir holds the artifact files ("": data_dir/firmware). Nodes of a
	// cluster point it at one shared directory.
	Dir string `yaml:"dir"`
	// KeyFile is the hub's ed25519 signing key, created on first use with
	// mode 0600 ("": data_dir/firmware-signing.key).
	KeyFile string `yaml:"key_file"`
	// URL is the base of the download URL told to devices; the artifact id
	// is appended ("": /api/v1/device/firmware/, which devices resolve
	// against the hub's address).
	URL string `yaml:"url"`
	// MaxArtifactBytes bounds an uploaded file.
	MaxArtifactBytes Size `yaml:"max_artifact_bytes"`
	// Tick is how often the rollout scheduler looks at the rollouts;
	// RefreshEvery how often a rollout that takes late joiners lists its
	// target again.
	Tick         time.Duration `yaml:"tick"`
	RefreshEvery time.Duration `yaml:"refresh_every"`
	// A pending device's notice is published again ConnectDelay after it
	// connects and every NoticeResend until it reports progress.
	ConnectDelay time.Duration `yaml:"connect_delay"`
	NoticeResend time.Duration `yaml:"notice_resend"`
	// Defaults of rollouts that name none.
	StepTimeout  time.Duration `yaml:"step_timeout"`
	TotalTimeout time.Duration `yaml:"total_timeout"`
	HealthWindow time.Duration `yaml:"health_window"`
	Settle       time.Duration `yaml:"settle"`
}

func defaultFirmware() FirmwareConfig {
	return FirmwareConfig{MaxArtifactBytes: 1 << 30, Tick: time.Second, RefreshEvery: 30 * time.Second,
		ConnectDelay: time.Second, NoticeResend: 30 * time.Second,
		StepTimeout: 10 * time.Minute, TotalTimeout: time.Hour, HealthWindow: 10 * time.Minute, Settle: time.Minute}
}

func (c *Config) checkFirmware() error {
	f := c.Firmware
	if err := atLeast("firmware.max_artifact_bytes", int64(f.MaxArtifactBytes), 1); err != nil {
		return err
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"firmware.tick", f.Tick}, {"firmware.refresh_every", f.RefreshEvery},
		{"firmware.connect_delay", f.ConnectDelay}, {"firmware.notice_resend", f.NoticeResend}, {"firmware.step_timeout", f.StepTimeout},
		{"firmware.total_timeout", f.TotalTimeout}, {"firmware.health_window", f.HealthWindow}, {"firmware.settle", f.Settle}} {
		if d.v < time.Millisecond {
			return invalid(d.key, "must be at least 1ms, got %s", d.v)
		}
	}
	return nil
}
