package deviceconfig

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/template"

	"gopkg.in/yaml.v3"
)

// Backend encodes a rendered configuration in the format a device
// consumes. Encode must be deterministic: the checksum is taken of its
// bytes, so that it changes exactly when what the device applies changes.
type Backend interface {
	Name() string
	ContentType() string
	Encode(cfg map[string]any, dev DeviceInfo) ([]byte, error)
}

// DefaultBackend is the backend of a device that names none.
const DefaultBackend = "json"

// Backends is the set of backends a hub knows, by name.
type Backends struct {
	m map[string]Backend
}

// NewBackends returns json, yaml and env, and extra.
func NewBackends(extra ...Backend) (*Backends, error) {
	b := &Backends{m: map[string]Backend{}}
	for _, x := range append([]Backend{jsonBackend{}, yamlBackend{}, envBackend{}}, extra...) {
		if _, dup := b.m[x.Name()]; dup {
			return nil, fmt.Errorf("%w: backend %q defined twice", ErrInvalid, x.Name())
		}
		b.m[x.Name()] = x
	}
	return b, nil
}

// Get returns the backend called name ("" is the default).
func (b *Backends) Get(name string) (Backend, error) {
	if name == "" {
		name = DefaultBackend
	}
	x, ok := b.m[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q (known: %s)", ErrUnknownBackend, name, strings.Join(b.Names(), ", "))
	}
	return x, nil
}

// Names lists the backends' names, sorted.
func (b *Backends) Names() []string { return slices.Sorted(maps.Keys(b.m)) }

type jsonBackend struct{}

func (jsonBackend) Name() string        { return "json" }
func (jsonBackend) ContentType() string { return "application/json" }

// Encode writes indented JSON with sorted keys (encoding/json sorts map
// keys), without HTML escaping, ending in a newline.
func (jsonBackend) Encode(cfg map[string]any, _ DeviceInfo) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(cfg); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type yamlBackend struct{}

func (yamlBackend) Name() string        { return "yaml" }
func (yamlBackend) ContentType() string { return "application/yaml" }

// Encode writes YAML (yaml.v3 sorts map keys).
func (yamlBackend) Encode(cfg map[string]any, _ DeviceInfo) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(plainNumbers(cfg)); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// plainNumbers turns json.Numbers into int64 or float64, which the YAML
// encoder writes as numbers (it would quote a json.Number, a string type).
func plainNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = plainNumbers(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = plainNumbers(e)
		}
		return s
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		if f, err := x.Float64(); err == nil {
			return f
		}
		return string(x)
	}
	return v
}

type envBackend struct{}

func (envBackend) Name() string        { return "env" }
func (envBackend) ContentType() string { return "text/plain; charset=utf-8" }

// Encode writes one KEY="value" line per leaf, sorted by key: the path of
// the leaf joined with "_", upper-cased, every byte that is not a letter,
// a digit or "_" turned into "_"; array elements by index. Two leaves that
// end up with the same key are an error naming both.
func (envBackend) Encode(cfg map[string]any, _ DeviceInfo) ([]byte, error) {
	lines := map[string]string{}
	from := map[string]string{}
	var walk func(v any, key, path string) error
	walk = func(v any, key, path string) error {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if err := walk(e, joinEnv(key, k), path+"/"+k); err != nil {
					return err
				}
			}
			return nil
		case []any:
			for i, e := range x {
				if err := walk(e, joinEnv(key, strconv.Itoa(i)), fmt.Sprintf("%s/%d", path, i)); err != nil {
					return err
				}
			}
			return nil
		}
		if key == "" {
			return fmt.Errorf("env: a value without a name")
		}
		if p, dup := from[key]; dup {
			return fmt.Errorf("env: %s and %s both become %s", p, path, key)
		}
		from[key] = path
		lines[key] = envValue(v)
		return nil
	}
	if err := walk(cfg, "", ""); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(lines)) {
		buf.WriteString(k)
		buf.WriteByte('=')
		buf.WriteString(lines[k])
		buf.WriteByte('\n')
	}
	return buf.Bytes(), nil
}

func joinEnv(prefix, k string) string {
	var b strings.Builder
	if prefix != "" {
		b.WriteString(prefix)
		b.WriteByte('_')
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case 'a' <= c && c <= 'z':
			b.WriteByte(c - 'a' + 'A')
		case 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_':
			b.WriteByte(c)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// envValue quotes a leaf for a dotenv file: double quotes, with \, ", $
// and ` escaped and newlines as \n.
func envValue(v any) string {
	var s string
	switch x := v.(type) {
	case nil:
		s = ""
	case string:
		s = x
	case bool:
		s = strconv.FormatBool(x)
	case json.Number:
		s = x.String()
	case float64:
		s = strconv.FormatFloat(x, 'f', -1, 64)
	default:
		s = fmt.Sprint(x)
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`, "`", "\\`", "\n", `\n`, "\r", `\r`)
	return `"` + r.Replace(s) + `"`
}

// TextTemplate is a backend written as a Go text/template: it is executed
// with .Config (the rendered configuration) and .Device (id, name, type,
// group, management IP). A missing map key is an error.
type TextTemplate struct {
	name, contentType string
	t                 *template.Template
}

// NewTextTemplate parses a text/template backend.
func NewTextTemplate(name, contentType, text string) (*TextTemplate, error) {
	if !varName.MatchString(name) {
		return nil, fmt.Errorf("%w: backend name %q: must match %s", ErrInvalid, name, varName)
	}
	t, err := template.New(name).Option("missingkey=error").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
	}).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%w: backend %s: %v", ErrInvalid, name, err)
	}
	if contentType == "" {
		contentType = "text/plain; charset=utf-8"
	}
	return &TextTemplate{name: name, contentType: contentType, t: t}, nil
}

// LoadTextTemplate reads a text/template backend from a file; the backend
// is named after the file without its extension.
func LoadTextTemplate(path string) (*TextTemplate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("backend template: %w", err)
	}
	name := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	return NewTextTemplate(name, "", string(b))
}

// Name is the backend's name.
func (t *TextTemplate) Name() string { return t.name }

// ContentType is what the device is told it downloads.
func (t *TextTemplate) ContentType() string { return t.contentType }

// Encode executes the template.
func (t *TextTemplate) Encode(cfg map[string]any, dev DeviceInfo) ([]byte, error) {
	var buf bytes.Buffer
	if err := t.t.Execute(&buf, map[string]any{"Config": cfg, "Device": dev}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
