package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// decodeNode lays the YAML node n over the value out points to, by the yaml
// tags of its structs, and names the full key path in every error. It is
// stricter than yaml.v3's own decoding: unknown and duplicate keys are
// errors, durations must be Go duration strings ("60s") and sizes may be
// written "256KiB".
func decodeNode(n *yaml.Node, out any, path string) error {
	w := &walker{}
	return w.value(n, reflect.ValueOf(out).Elem(), path)
}

// maxNodes bounds the nodes one decode visits, so that aliases cannot
// expand a small file into an enormous one ("billion laughs").
const maxNodes = 100000

// walker decodes nodes and counts them.
type walker struct{ nodes int }

var (
	durationType = reflect.TypeOf(time.Duration(0))
	sizeType     = reflect.TypeOf(Size(0))
)

func (w *walker) value(n *yaml.Node, v reflect.Value, path string) error {
	w.nodes++
	if w.nodes > maxNodes {
		return &keyError{key: orRoot(path), msg: fmt.Sprintf("more than %d values (aliases expanded)", maxNodes)}
	}
	if n.Kind == yaml.AliasNode {
		return w.value(n.Alias, v, path)
	}
	switch v.Type() {
	case durationType:
		s, err := scalar(n, path)
		if err != nil {
			return err
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return &keyError{key: path, msg: fmt.Sprintf("line %d: cannot parse %q as a duration (write e.g. \"60s\", \"5m\", \"1h\")", n.Line, s)}
		}
		v.SetInt(int64(d))
		return nil
	case sizeType:
		s, err := scalar(n, path)
		if err != nil {
			return err
		}
		sz, err := ParseSize(s)
		if err != nil {
			return &keyError{key: path, msg: fmt.Sprintf("line %d: %v", n.Line, err)}
		}
		v.SetInt(int64(sz))
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		return w.structure(n, v, path)
	case reflect.Map:
		return w.mapping(n, v, path)
	case reflect.Pointer:
		if isNull(n) {
			v.SetZero()
			return nil
		}
		p := reflect.New(v.Type().Elem())
		if err := w.value(n, p.Elem(), path); err != nil {
			return err
		}
		v.Set(p)
		return nil
	case reflect.Slice:
		if isNull(n) {
			v.SetZero()
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return &keyError{key: path, msg: fmt.Sprintf("line %d: must be a list", n.Line)}
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if err := w.value(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return &keyError{key: path, msg: fmt.Sprintf("line %d: must be a single value, not a %s", n.Line, kindName(n))}
	}
	p := reflect.New(v.Type())
	if err := n.Decode(p.Interface()); err != nil {
		return &keyError{key: path, msg: fmt.Sprintf("line %d: cannot use %q as %s", n.Line, n.Value, typeName(v.Type()))}
	}
	v.Set(p.Elem())
	return nil
}

func (w *walker) structure(n *yaml.Node, v reflect.Value, path string) error {
	if isNull(n) {
		return nil // an empty section keeps its defaults
	}
	if n.Kind != yaml.MappingNode {
		return &keyError{key: orRoot(path), msg: fmt.Sprintf("line %d: must be a mapping, not a %s", n.Line, kindName(n))}
	}
	fields := map[string]int{}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !t.Field(i).IsExported() {
			continue
		}
		fields[name] = i
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := join(path, k.Value)
		if seen[k.Value] {
			return &keyError{key: key, msg: fmt.Sprintf("line %d: duplicate key", k.Line)}
		}
		seen[k.Value] = true
		idx, ok := fields[k.Value]
		if !ok {
			return &keyError{key: key, msg: fmt.Sprintf("line %d: unknown key", k.Line)}
		}
		if err := w.value(val, v.Field(idx), key); err != nil {
			return err
		}
	}
	return nil
}

func (w *walker) mapping(n *yaml.Node, v reflect.Value, path string) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return &keyError{key: path, msg: fmt.Sprintf("line %d: must be a mapping, not a %s", n.Line, kindName(n))}
	}
	if v.Type().Key().Kind() != reflect.String {
		return &keyError{key: path, msg: "unsupported map key type"}
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			return &keyError{key: path, msg: fmt.Sprintf("line %d: keys must be non-empty names", k.Line)}
		}
		key := join(path, k.Value)
		if seen[k.Value] {
			return &keyError{key: key, msg: fmt.Sprintf("line %d: duplicate key", k.Line)}
		}
		seen[k.Value] = true
		elem := reflect.New(v.Type().Elem()).Elem()
		if err := w.value(val, elem, key); err != nil {
			return err
		}
		v.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), elem)
	}
	return nil
}

func scalar(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return "", &keyError{key: path, msg: fmt.Sprintf("line %d: must be a single value", n.Line)}
	}
	return n.Value, nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "value"
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Float64, reflect.Float32:
		return "a number"
	case reflect.Bool:
		return "a bool (true or false)"
	case reflect.String:
		return "a string"
	}
	return t.String()
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(path string) string {
	if path == "" {
		return "(root)"
	}
	return path
}

// Size is a number of bytes. In the file it is an integer or a string with a
// unit: B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024).
type Size int64

// Size units.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
)

// ParseSize parses "1024", "256KiB", "1 MiB" or "64KB".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("cannot parse %q as a size (write bytes, or e.g. \"256KiB\", \"1MiB\")", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	var mult int64
	switch strings.TrimSpace(t[i:]) {
	case "", "B":
		mult = 1
	case "KiB":
		mult = int64(KiB)
	case "MiB":
		mult = int64(MiB)
	case "GiB":
		mult = int64(GiB)
	case "KB", "kB":
		mult = 1000
	case "MB":
		mult = 1000 * 1000
	case "GB":
		mult = 1000 * 1000 * 1000
	default:
		return 0, fmt.Errorf("cannot parse %q as a size: unknown unit %q (B, KB, MB, GB, KiB, MiB, GiB)", s, strings.TrimSpace(t[i:]))
	}
	if n > (1<<63-1)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(n * mult), nil
}
