package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// Files a run writes into its output directory besides the charts.
const (
	ResultsFile = "results.json"
	ReportFile  = "report.md"
)

// ResultsFormat is the layout of results.json this devicehub writes and
// reads (Results.FormatVersion). Bump it when a field changes meaning or
// goes away; a reader refuses a layout it does not know rather than
// render it wrong.
const ResultsFormat = 1

// ErrBadResults is wrapped by every error of ParseResults: the data is not
// a results file this devicehub can render.
var ErrBadResults = errors.New("not a devicehub bench results file")

// ReadResults reads and checks the results file at path (a results.json).
// Its errors name the file.
func ReadResults(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	res, err := ParseResults(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return res, nil
}

// ParseResults decodes and checks the content of a results.json. Unknown
// fields are refused: a file with fields this devicehub does not know is
// of another layout, and its report would leave them out.
func ParseResults(b []byte) (*Results, error) {
	// The layout first: a file of another layout is refused for that,
	// not for the first field that differs.
	var probe struct {
		FormatVersion json.RawMessage `json:"format_version"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, badResults(b, err)
	}
	if len(probe.FormatVersion) > 0 {
		var v int
		if err := json.Unmarshal(probe.FormatVersion, &v); err != nil || v != ResultsFormat {
			return nil, fmt.Errorf("%w: format_version %s: this devicehub reads format %d (render it with the devicehub that wrote it)",
				ErrBadResults, probe.FormatVersion, ResultsFormat)
		}
	}
	// The probe has refused anything but one JSON value.
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var res Results
	if err := dec.Decode(&res); err != nil {
		return nil, badResults(b, err)
	}
	if err := res.check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadResults, err)
	}
	return &res, nil
}

// badResults wraps a decoding error with the line and column it is at.
func badResults(b []byte, err error) error {
	var off int64 = -1
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		off = syn.Offset
	case errors.As(err, &typ):
		off = typ.Offset
	}
	// Offset counts the bytes read when the error was found: the byte at
	// fault is the last of them.
	if off < 1 || off > int64(len(b)) {
		return fmt.Errorf("%w: %w", ErrBadResults, err)
	}
	at := int(off) - 1
	line := 1 + bytes.Count(b[:at], []byte("\n"))
	col := at - bytes.LastIndexByte(b[:at], '\n')
	return fmt.Errorf("%w: line %d, column %d: %w", ErrBadResults, line, col, err)
}

// check reports what a decoded file lacks that every run writes, or holds
// that no run writes.
func (r *Results) check() error {
	if r.Started.IsZero() || r.Finished.IsZero() {
		return errors.New("no started or finished time")
	}
	seen := map[string]bool{}
	for i, s := range r.Scenarios {
		switch {
		case s == nil:
			return fmt.Errorf("scenarios[%d]: null", i)
		case s.Name == "":
			return fmt.Errorf("scenarios[%d]: no name", i)
		case seen[s.Name]:
			return fmt.Errorf("scenarios[%d]: scenario %q twice", i, s.Name)
		}
		seen[s.Name] = true
		for j, run := range s.Runs {
			if run.System == "" {
				return fmt.Errorf("scenario %s: runs[%d]: no system", s.Name, j)
			}
		}
	}
	return nil
}

// Render writes the charts and ReportFile of res into dir: what a run
// writes after ResultsFile. A run renders the results file it has just
// written, read back with ReadResults, so that `devicehub bench report`
// renders any results file as its run did. A chart that cannot be
// written is noted in the report and returned.
func Render(res *Results, dir string) error {
	charts, cerr := res.writeCharts(dir)
	rep := res
	if cerr != nil {
		cp := *res
		cp.Notes = append(slices.Clip(res.Notes), cerr.Error())
		rep = &cp
	}
	f, err := os.Create(filepath.Join(dir, ReportFile))
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	werr := rep.Markdown(f, charts...)
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		return fmt.Errorf("write report: %w", werr)
	}
	return cerr
}

// writeAndRender is the end of a run: it writes res as ResultsFile into
// dir, reads that file back and renders it. The report thus comes from
// what the file holds, as `devicehub bench report` renders it, not from
// what only the run had in memory (a wall clock's monotonic reading, a
// time zone's name, a Go type behind Settings' any).
func writeAndRender(res *Results, dir string) error {
	if err := res.WriteJSON(dir); err != nil {
		return err
	}
	written, err := ReadResults(filepath.Join(dir, ResultsFile))
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	return Render(written, dir)
}
