package web

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// parseTemplates parses every page template with the layout: one template
// set per page, so that each page's blocks are its own.
func parseTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"ts":       fmtTime,
		"tsp":      func(t *time.Time) string { return fmtTimePtr(t) },
		"iso":      func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
		"isop":     func(t *time.Time) string { return isoPtr(t) },
		"json":     toJSON,
		"join":     strings.Join,
		"value":    fmtValue,
		"sortKeys": sortedKeys,
		"list":     func(s ...string) []string { return s },
		"bytes":    fmtBytes,
		"clip":     clip,
		"pct": func(n, total int64) string {
			if total == 0 {
				return "0"
			}
			return fmt.Sprintf("%.1f", 100*float64(n)/float64(total))
		},
	}
	base, err := template.New("layout").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("parse layout: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", n, err)
		}
		pages[name] = t
	}
	return pages, nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return fmtTime(*t)
}

func isoPtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func toJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func fmtValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "—"
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e15 {
			return fmt.Sprintf("%.0f", x)
		}
		return fmt.Sprintf("%.4g", x)
	case string:
		return x
	case bool:
		return fmt.Sprint(x)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// fmtBytes formats a size in bytes, kB, MB or GB (powers of 1000).
func fmtBytes(n int64) string {
	switch {
	case n < 1000:
		return fmt.Sprintf("%d B", n)
	case n < 1000_000:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	case n < 1000_000_000:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%.2f GB", float64(n)/1e9)
}

// clip shortens s to about n bytes (on a rune boundary) and says how long
// it was: a device page lists 50 messages, and a batch of readings may be
// 64 KiB each.
func clip(n int, s string) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "… (" + fmtBytes(int64(len(s))) + ")"
}
