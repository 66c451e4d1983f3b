package events

// StorageLow: the free disk space of the hub's data directory fell below
// its floor (storage.min_free_bytes); device messages are refused until it
// recovers. It names no device.
const StorageLow Type = "storage_low"

// StorageRecovered: the free disk space is back above the floor; device
// messages are taken in again. It names no device.
const StorageRecovered Type = "storage_recovered"

// Storage is the argument of StorageLow and StorageRecovered.
type Storage struct {
	Dir        string `json:"dir"`
	FreeBytes  uint64 `json:"free_bytes"`
	FloorBytes uint64 `json:"floor_bytes"`
}
