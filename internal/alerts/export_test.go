package alerts

// Crash makes a service's Run stop without saving its cursor, as a crash
// would.
func Crash(o *Options) { o.crash = true }
