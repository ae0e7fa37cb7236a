package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/therapistinbox/gateway/policies"
)

// maxClassifyLine is the longest input line classify reads (1 MB): a long
// email on one JSON line fits.
const maxClassifyLine = 1 << 20

// errBadLines ends classify with status 1 once every line was answered.
var errBadLines = errors.New("classify: some lines were not valid input; see their \"error\" fields")

// cmdClassify runs the safety triage over messages and writes one JSON
// verdict per input line, in order, so a therapist can try lexicon
// changes before they go live. It reads the files named, or stdin.
func cmdClassify(_ context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("classify", flag.ContinueOnError)
	jsonl := fs.Bool("jsonl", false, `read one JSON object per line: {"id": ..., "channel": "sms"|"email", "subject": ..., "text": ...}; without it, one message per line of plain text`)
	config := fs.String("config", "", "use this configuration file's [triage] settings and urgent keyword (default: the built-in lexicon and URGENT)")
	var lexicons stringsFlag
	fs.Var(&lexicons, "lexicon", "an extra lexicon file to try (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tr, err := classifyTriage(*config, lexicons)
	if err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return classify(tr, os.Stdin, stdout, *jsonl)
	}
	var bad bool
	for _, name := range fs.Args() {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("classify: %w", err)
		}
		err = classify(tr, f, stdout, *jsonl)
		f.Close()
		switch {
		case errors.Is(err, errBadLines):
			bad = true
		case err != nil:
			return err
		}
	}
	if bad {
		return errBadLines
	}
	return nil
}

// stringsFlag is a repeatable string flag.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

// classifyTriage builds the triage the way serve does when given a config
// (its urgent keyword, [triage.extra] and triage.lexicon_files), else from
// the built-in lexicon with the keyword URGENT; extra lexicon files come on
// top.
func classifyTriage(configPath string, extra []string) (*policies.Triage, error) {
	c := Defaults()
	c.Practice.UrgentKeyword = "URGENT"
	if configPath != "" {
		loaded, err := LoadConfig(configPath)
		if err != nil {
			return nil, err
		}
		c = *loaded
	}
	c.Triage.LexiconFiles = append(append([]string(nil), c.Triage.LexiconFiles...), extra...)
	return c.NewTriage()
}

// classifyInput is one line of --jsonl input.
type classifyInput struct {
	ID      json.RawMessage `json:"id"`
	Channel string          `json:"channel"`
	Subject string          `json:"subject"`
	Text    string          `json:"text"`
}

// classifyOutput is one line of output. ID is echoed as given (string or
// number); for plain text it is the 1-based line number.
type classifyOutput struct {
	ID         json.RawMessage `json:"id"`
	Urgent     bool            `json:"urgent"`
	Category   string          `json:"category"`
	Evidence   []string        `json:"evidence"`
	Confidence float64         `json:"confidence"`
	Error      string          `json:"error,omitempty"`
}

// classify reads r line by line and writes one verdict per line to w. A
// line that cannot be read as input gets an object with "error" and the
// rest go on; the result is then errBadLines.
func classify(tr *policies.Triage, r io.Reader, w io.Writer, jsonl bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), maxClassifyLine)
	bw := bufio.NewWriterSize(w, 64*1024)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	bad := false
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		out := classifyOutput{ID: json.RawMessage(fmt.Sprint(n)), Evidence: []string{}}
		if jsonl {
			in, err := readClassifyLine(line)
			if in.ID != nil {
				out.ID = in.ID
			}
			if err != nil {
				bad = true
				out.Error = err.Error()
				if err := enc.Encode(out); err != nil {
					return fmt.Errorf("classify: %w", err)
				}
				continue
			}
			out.setVerdict(tr.Classify(in.Subject, in.Text))
		} else {
			out.setVerdict(tr.Classify("", string(line)))
		}
		if err := enc.Encode(out); err != nil {
			return fmt.Errorf("classify: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		bw.Flush()
		return fmt.Errorf("classify: reading input: %w (lines are limited to %d bytes)", err, maxClassifyLine)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("classify: %w", err)
	}
	if bad {
		return errBadLines
	}
	return nil
}

// readClassifyLine parses one --jsonl line. The error never quotes the
// line: it may hold a client's words.
func readClassifyLine(line []byte) (classifyInput, error) {
	var in classifyInput
	if len(bytes.TrimSpace(line)) == 0 {
		return in, errors.New("empty line; write one JSON object per line")
	}
	if err := json.Unmarshal(line, &in); err != nil {
		// Keep the id if the line is an object with a usable one.
		var partial struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal(line, &partial) == nil && validID(partial.ID) {
			in.ID = partial.ID
		}
		return in, fmt.Errorf("not a JSON object with string fields id, channel, subject, text: %v", jsonProblem(err))
	}
	if !validID(in.ID) {
		id := in.ID
		in.ID = nil
		if id != nil {
			return in, errors.New(`"id" must be a string or a number`)
		}
	}
	switch in.Channel {
	case "", "sms", "email":
	default:
		return in, fmt.Errorf(`"channel" is %q; write "sms" or "email"`, in.Channel)
	}
	return in, nil
}

func validID(id json.RawMessage) bool {
	if len(id) == 0 {
		return false
	}
	var v any
	if json.Unmarshal(id, &v) != nil {
		return false
	}
	switch v.(type) {
	case string, float64:
		return true
	}
	return false
}

// jsonProblem describes a decoding error without echoing input values.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q should be a %s", typ.Field, typ.Type)
	}
	return "invalid JSON"
}

func (o *classifyOutput) setVerdict(v policies.Verdict) {
	o.Urgent, o.Category, o.Evidence, o.Confidence = v.Urgent, v.Category, v.Evidence, v.Confidence
	if o.Evidence == nil {
		o.Evidence = []string{}
	}
}
