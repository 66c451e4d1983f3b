package events

// The signals of configuration management (seed 001), with the seed's
// arguments. The device id of an event is the device whose configuration
// it is about; group_templates_changed has no device (its group is in its
// arguments).
const (
	// ConfigModified: a device's rendered configuration changed (never
	// when the device is created), whatever its status was.
	ConfigModified Type = "config_modified"
	// ConfigStatusChanged: the status of a device's configuration changed.
	ConfigStatusChanged Type = "config_status_changed"
	// ConfigBackendChanged: an existing configuration's backend changed.
	ConfigBackendChanged Type = "config_backend_changed"
	// ChecksumRequested: a device asked for its configuration's checksum
	// and is about to get it.
	ChecksumRequested Type = "checksum_requested"
	// ConfigDownloadRequested: a device asked for its configuration and is
	// about to get it.
	ConfigDownloadRequested Type = "config_download_requested"
	// IsWorkingChanged: the hub's management channel to the device turned
	// working or not.
	IsWorkingChanged Type = "is_working_changed"
	// GroupTemplatesChanged: an existing group's template list changed.
	GroupTemplatesChanged Type = "group_templates_changed"
	// ConfigDeactivating: an operator deactivated a device's configuration.
	ConfigDeactivating Type = "config_deactivating"
	// ConfigDeactivated: the device applied the empty configuration.
	ConfigDeactivated Type = "config_deactivated"
	// ConfigTemplatesChanged: a configuration template was created,
	// changed or deleted, or a group's configuration (its templates or
	// variables) was set. It names no device. Every node of a cluster
	// reads the templates and group configurations again when it sees it.
	ConfigTemplatesChanged Type = "config_templates_changed"
)

// Actions of config_modified.
const (
	ActionConfigChanged          = "config_changed"           // the device's own backend, variables or overrides
	ActionRelatedTemplateChanged = "related_template_changed" // a template it uses was edited, or its group's variables
	ActionM2MTemplatesChanged    = "m2m_templates_changed"    // its (or its group's) templates were added, removed or reordered
)

// ConfigModifiedArgs is the argument of ConfigModified.
type ConfigModifiedArgs struct {
	PreviousStatus string `json:"previous_status"`
	Action         string `json:"action"`
	Checksum       string `json:"checksum"`
	OldChecksum    string `json:"old_checksum"`
}

// ConfigStatusArgs is the argument of ConfigStatusChanged.
type ConfigStatusArgs struct {
	Status    string `json:"status"`
	OldStatus string `json:"old_status"`
	Checksum  string `json:"checksum"`
	Error     string `json:"error,omitempty"`
}

// ConfigBackendArgs is the argument of ConfigBackendChanged.
type ConfigBackendArgs struct {
	Backend    string `json:"backend"`
	OldBackend string `json:"old_backend"`
}

// ConfigRequestArgs is the argument of ChecksumRequested and
// ConfigDownloadRequested: what was answered and to whom (the seed's
// request, without its credentials).
type ConfigRequestArgs struct {
	Checksum   string `json:"checksum"`
	Transport  string `json:"transport"`
	RemoteAddr string `json:"remote_addr,omitempty"`
	UserAgent  string `json:"user_agent,omitempty"`
}

// IsWorkingArgs is the argument of IsWorkingChanged. The old values are
// null for a device whose channel had no state yet.
type IsWorkingArgs struct {
	IsWorking        bool    `json:"is_working"`
	OldIsWorking     *bool   `json:"old_is_working"`
	FailureReason    string  `json:"failure_reason"`
	OldFailureReason *string `json:"old_failure_reason"`
}

// GroupTemplatesArgs is the argument of GroupTemplatesChanged: the
// group's template ids now and before, in order.
type GroupTemplatesArgs struct {
	GroupID      string   `json:"group_id"`
	Templates    []string `json:"templates"`
	OldTemplates []string `json:"old_templates"`
}

// ConfigDeactivationArgs is the argument of ConfigDeactivating and
// ConfigDeactivated.
type ConfigDeactivationArgs struct {
	Checksum string `json:"checksum"`
}

// TemplatesChangedArgs is the argument of ConfigTemplatesChanged: the
// template or the group whose configuration changed.
type TemplatesChangedArgs struct {
	Template string `json:"template,omitempty"`
	Group    string `json:"group,omitempty"`
	Deleted  bool   `json:"deleted,omitempty"`
}

func configArgs(t Type) any {
	switch t {
	case ConfigModified:
		return &ConfigModifiedArgs{}
	case ConfigStatusChanged:
		return &ConfigStatusArgs{}
	case ConfigBackendChanged:
		return &ConfigBackendArgs{}
	case ChecksumRequested, ConfigDownloadRequested:
		return &ConfigRequestArgs{}
	case IsWorkingChanged:
		return &IsWorkingArgs{}
	case GroupTemplatesChanged:
		return &GroupTemplatesArgs{}
	case ConfigDeactivating, ConfigDeactivated:
		return &ConfigDeactivationArgs{}
	case ConfigTemplatesChanged:
		return &TemplatesChangedArgs{}
	}
	return nil
}
