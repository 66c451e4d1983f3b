// Package python holds devicehub's Python device SDK (devicehub_device,
// see README.md); this Go test runs its Python test suite against the
// real devicehub binary, so that `go test ./...` (and CI) runs it.
package python

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPythonSDK builds the devicehub binary, installs the SDK with pip
// (into a temporary directory, from a copy of this directory) when pip and
// setuptools are there, and runs `python3 -m unittest` on tests/ with
// DEVICEHUB_BIN set. It skips, saying why, without a python3 that has
// paho-mqtt (Debian: apt-get install python3-paho-mqtt).
func TestPythonSDK(t *testing.T) {
	if testing.Short() {
		t.Skip("Python SDK end-to-end tests: skipped with -short")
	}
	py, why := findPython()
	if py == "" {
		t.Skipf("Python SDK tests skipped: %s (install python3 and python3-paho-mqtt, or set DEVICEHUB_PYTHON)", why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()

	bin := filepath.Join(dir, "devicehub")
	// The go that runs this test is first on PATH under `go test`.
	gobin := "go"
	build := exec.CommandContext(ctx, gobin, "build", "-o", bin, "github.com/devicehub/devicehub/cmd/devicehub")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/devicehub: %v\n%s", err, out)
	}

	env := append(os.Environ(), "DEVICEHUB_BIN="+bin, "PYTHONDONTWRITEBYTECODE=1")
	if site, err := pipInstall(ctx, py, dir); err != nil {
		t.Logf("testing the source tree: pip install is not available here (%v)", err)
	} else {
		t.Logf("testing the package as `pip install ./sdk/python` installed it")
		env = append(env, "PYTHONPATH="+site, "DEVICEHUB_SDK_INSTALLED=1")
	}

	// From tests/, so that the source tree does not shadow the installed
	// package.
	cmd := exec.CommandContext(ctx, py, "-m", "unittest", "discover", "-v", "-s", ".", "-t", ".")
	cmd.Dir, cmd.Env = "tests", env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	ran := regexp.MustCompile(`Ran (\d+) tests? in`).FindString(out.String())
	if err != nil {
		t.Fatalf("python3 -m unittest (%s): %v\n%s", py, err, out.String())
	}
	if ran == "" || strings.Contains(out.String(), "skipped=") {
		t.Fatalf("python3 -m unittest ran no test or skipped some:\n%s", out.String())
	}
	t.Logf("%s: %s %.1fs", py, ran, time.Since(start).Seconds())
	if testing.Verbose() {
		t.Log(out.String())
	}
}

// findPython returns a python3 that imports paho.mqtt and sqlite3:
// DEVICEHUB_PYTHON, python3 on PATH or /usr/bin/python3 (where Debian's
// python3-paho-mqtt is), or "" and why not.
func findPython() (string, string) {
	var cands []string
	if p := os.Getenv("DEVICEHUB_PYTHON"); p != "" {
		cands = append(cands, p)
	}
	if p, err := exec.LookPath("python3"); err == nil {
		cands = append(cands, p)
	}
	cands = append(cands, "/usr/bin/python3")
	var whys []string
	for _, p := range cands {
		out, err := exec.Command(p, "-c", "import sys, sqlite3, paho.mqtt.client; assert sys.version_info >= (3, 8)").CombinedOutput()
		if err == nil {
			return p, ""
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		whys = append(whys, p+": "+lines[len(lines)-1])
	}
	return "", strings.Join(whys, "; ")
}

// pipInstall installs a copy of this directory with pip into dir/site
// (no network: no build isolation, no dependencies) and returns the
// site directory.
func pipInstall(ctx context.Context, py, dir string) (string, error) {
	if out, err := exec.CommandContext(ctx, py, "-c", "import setuptools, pip").CombinedOutput(); err != nil {
		return "", errors.New(strings.TrimSpace(string(out)))
	}
	src := filepath.Join(dir, "src")
	if err := copyTree(".", src); err != nil {
		return "", err
	}
	site := filepath.Join(dir, "site")
	cmd := exec.CommandContext(ctx, py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
		"--no-index", "--disable-pip-version-check", "--target", site, src)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", errors.New(strings.TrimSpace(string(out)))
	}
	return site, nil
}

// copyTree copies the package's files (not tests, Go files or caches).
func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() && path != from && (name == "tests" || name == "build" || name == "__pycache__" || strings.HasSuffix(name, ".egg-info")) {
			return filepath.SkipDir
		}
		if d.IsDir() || strings.HasSuffix(name, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
}
