package provisioning

// KeyDigest is the plain digest of a hardware key (what databases before
// the keyed scheme hold).
var KeyDigest = keyDigest

// LegacyBinding binds key's plain digest to the device of the change it
// is added to, as hubs before the keyed scheme did.
func LegacyBinding(key string) *Approval { return &Approval{RegistrationKey: keyDigest(key)} }
