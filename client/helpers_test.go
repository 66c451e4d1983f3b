package client_test

import "github.com/devicehub/devicehub/internal/registry"

func apitestDevice(id string) registry.Device {
	return registry.Device{ID: id, Type: "WeatherStation", Status: "online"}
}
