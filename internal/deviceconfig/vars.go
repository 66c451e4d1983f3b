package deviceconfig

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// A placeholder is {{ name }}: two opening braces, optional blanks, a
// variable name, optional blanks, two closing braces. Braces that do not
// open a placeholder ("{", "}", "}}") are literal text; "{{" that does not
// continue as a placeholder is an error, so that a typo is never sent to a
// device as text.

// segment is a part of a parsed string: literal text, or a variable when
// name is set.
type segment struct {
	lit  string
	name string
}

// PlaceholderError is a malformed placeholder: where it starts and why.
type PlaceholderError struct {
	Offset int
	Reason string
}

func (e *PlaceholderError) Error() string {
	return fmt.Sprintf("malformed placeholder at byte %d: %s", e.Offset, e.Reason)
}

// parseString splits s into literal text and variables.
func parseString(s string) ([]segment, error) {
	if !strings.Contains(s, "{{") {
		return []segment{{lit: s}}, nil
	}
	var out []segment
	rest, off := s, 0
	for {
		i := strings.Index(rest, "{{")
		if i < 0 {
			if rest != "" {
				out = append(out, segment{lit: rest})
			}
			return out, nil
		}
		if i > 0 {
			out = append(out, segment{lit: rest[:i]})
		}
		start := off + i
		p := rest[i+2:]
		p = strings.TrimLeft(p, " \t")
		n := 0
		for n < len(p) && isNameByte(p[n], n == 0) {
			n++
		}
		if n == 0 {
			return nil, &PlaceholderError{Offset: start, Reason: "expected a variable name after {{"}
		}
		if n > 64 {
			return nil, &PlaceholderError{Offset: start, Reason: "variable name longer than 64 bytes"}
		}
		name := p[:n]
		p = strings.TrimLeft(p[n:], " \t")
		if !strings.HasPrefix(p, "}}") {
			return nil, &PlaceholderError{Offset: start, Reason: fmt.Sprintf("expected }} after variable %q", name)}
		}
		out = append(out, segment{name: name})
		consumed := len(rest) - len(p) + 2
		off += consumed
		rest = rest[consumed:]
	}
}

func isNameByte(c byte, first bool) bool {
	switch {
	case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		return true
	case '0' <= c && c <= '9':
		return !first
	}
	return false
}

// Placeholders returns the variable names s uses, in order of first use.
func Placeholders(s string) ([]string, error) {
	segs, err := parseString(s)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, sg := range segs {
		if sg.name != "" && !slices.Contains(names, sg.name) {
			names = append(names, sg.name)
		}
	}
	return names, nil
}

// DocumentVars returns the sorted variable names used anywhere in doc (in
// keys and string values).
func DocumentVars(doc any) ([]string, error) {
	set := map[string]struct{}{}
	err := walkStrings(doc, "", func(path, s string) error {
		names, err := Placeholders(s)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, n := range names {
			set[n] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return slices.Sorted(maps.Keys(set)), nil
}

// checkPlaceholders reports the first malformed placeholder of doc.
func checkPlaceholders(doc any, what string) error {
	if _, err := DocumentVars(doc); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, what, err)
	}
	return nil
}

// walkStrings calls fn with every key and string value of doc and its path.
func walkStrings(doc any, path string, fn func(path, s string) error) error {
	switch v := doc.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			p := path + "/" + k
			if err := fn(p, k); err != nil {
				return err
			}
			if err := walkStrings(v[k], p, fn); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range v {
			if err := walkStrings(e, fmt.Sprintf("%s/%d", path, i), fn); err != nil {
				return err
			}
		}
	case string:
		return fn(path, v)
	}
	return nil
}

// substitute renders s with vars; names not in vars are added to missing
// and left empty.
func substitute(s string, vars map[string]string, missing map[string]struct{}) (string, error) {
	segs, err := parseString(s)
	if err != nil {
		return "", err
	}
	if len(segs) == 1 && segs[0].name == "" {
		return segs[0].lit, nil
	}
	var b strings.Builder
	for _, sg := range segs {
		if sg.name == "" {
			b.WriteString(sg.lit)
			continue
		}
		v, ok := vars[sg.name]
		if !ok {
			missing[sg.name] = struct{}{}
			continue
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

// substituteDoc returns a copy of doc with every key and string value
// rendered with vars.
func substituteDoc(doc any, path string, vars map[string]string, missing map[string]struct{}) (any, error) {
	switch v := doc.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			p := path + "/" + k
			nk, err := substitute(k, vars, missing)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			ne, err := substituteDoc(e, p, vars, missing)
			if err != nil {
				return nil, err
			}
			if _, dup := out[nk]; dup {
				return nil, fmt.Errorf("%s: key %q appears twice once rendered", p, nk)
			}
			out[nk] = ne
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			ne, err := substituteDoc(e, fmt.Sprintf("%s/%d", path, i), vars, missing)
			if err != nil {
				return nil, err
			}
			out[i] = ne
		}
		return out, nil
	case string:
		s, err := substitute(v, vars, missing)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return s, nil
	}
	return doc, nil
}
