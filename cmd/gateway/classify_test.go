package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runClassify runs "gateway classify args... FILE" with input written to
// FILE, and returns the output lines and the error.
func runClassify(t testing.TB, input string, args ...string) ([]string, error) {
	t.Helper()
	in := filepath.Join(t.TempDir(), "in.txt")
	if err := os.WriteFile(in, []byte(input), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := run(context.Background(), append(append([]string{"classify"}, args...), in), &out)
	text := strings.TrimSuffix(out.String(), "\n")
	if text == "" {
		return nil, err
	}
	return strings.Split(text, "\n"), err
}

func TestClassifyCommand(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		input string
		want  []string // output lines, exactly
		bad   bool     // exit status 1 expected
	}{
		{
			name:  "plain text, one message per line",
			input: "I want to die\ncan we move Tuesday?\nURGENT call me\n",
			want: []string{
				`{"id":1,"urgent":true,"category":"suicide","evidence":["want to die"],"confidence":0.95}`,
				`{"id":2,"urgent":false,"category":"","evidence":[],"confidence":0}`,
				`{"id":3,"urgent":true,"category":"client-marked-urgent","evidence":["urgent"],"confidence":1}`,
			},
		},
		{
			name: "jsonl keeps ids and passes the subject",
			args: []string{"--jsonl"},
			input: `{"id":"a1","channel":"sms","text":"he hit me again"}` + "\n" +
				`{"id":7,"channel":"email","subject":"URGENT","text":"please call"}` + "\n" +
				`{"id":"c3","channel":"email","subject":"Thursday","text":"Thanks, see you then."}` + "\n",
			want: []string{
				`{"id":"a1","urgent":true,"category":"abuse","evidence":["he hit me"],"confidence":0.96}`,
				`{"id":7,"urgent":true,"category":"client-marked-urgent","evidence":["urgent"],"confidence":1}`,
				`{"id":"c3","urgent":false,"category":"","evidence":[],"confidence":0}`,
			},
		},
		{
			name: "a bad line is answered and the rest go on",
			args: []string{"--jsonl"},
			input: `{"id":"x1","text":` + "\n" +
				`not json at all` + "\n" +
				`{"id":"x3","text":"kms"}` + "\n" +
				`{"id":"x4","channel":"fax","text":"hello"}` + "\n" +
				`{"id":{"nested":1},"text":"hello"}` + "\n",
			want: []string{
				`{"id":1,"urgent":false,"category":"","evidence":[],"confidence":0,"error":"not a JSON object with string fields id, channel, subject, text: syntax error at byte 18"}`,
				`{"id":2,"urgent":false,"category":"","evidence":[],"confidence":0,"error":"not a JSON object with string fields id, channel, subject, text: syntax error at byte 2"}`,
				`{"id":"x3","urgent":true,"category":"suicide","evidence":["kms"],"confidence":0.9}`,
				`{"id":"x4","urgent":false,"category":"","evidence":[],"confidence":0,"error":"\"channel\" is \"fax\"; write \"sms\" or \"email\""}`,
				`{"id":5,"urgent":false,"category":"","evidence":[],"confidence":0,"error":"\"id\" must be a string or a number"}`,
			},
			bad: true,
		},
		{
			name:  "id recovered from a line with a wrong field type",
			args:  []string{"--jsonl"},
			input: `{"id":"y1","text":42}` + "\n",
			want: []string{
				`{"id":"y1","urgent":false,"category":"","evidence":[],"confidence":0,"error":"not a JSON object with string fields id, channel, subject, text: field \"text\" should be a string"}`,
			},
			bad: true,
		},
		{
			name:  "empty plain-text line is routine",
			input: "\n",
			want:  []string{`{"id":1,"urgent":false,"category":"","evidence":[],"confidence":0}`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runClassify(t, tt.input, tt.args...)
			if tt.bad != (err != nil) || (err != nil && !errors.Is(err, errBadLines)) {
				t.Fatalf("err = %v, want bad lines: %v", err, tt.bad)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("output:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestClassifyCommandLexicon(t *testing.T) {
	dir := t.TempDir()
	lex := filepath.Join(dir, "practice.txt")
	os.WriteFile(lex, []byte("rule red-balloon self-harm 0.9\n  match: red (balloon|balloons)\n  example: red balloons tonight\n"), 0o600)
	got, err := runClassify(t, "thinking about red balloons tonight\n", "--lexicon", lex)
	if err != nil || len(got) != 1 || !strings.Contains(got[0], `"category":"self-harm"`) {
		t.Fatalf("%v %q", err, got)
	}
	// Without the file the phrase means nothing.
	if got, _ := runClassify(t, "thinking about red balloons tonight\n"); !strings.Contains(got[0], `"urgent":false`) {
		t.Fatalf("%q", got)
	}

	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte("# mine\nrule oops sadness 0.9\n  match: x\n"), 0o600)
	_, err = runClassify(t, "hi\n", "--lexicon", bad)
	if err == nil || !strings.Contains(err.Error(), "triage.lexicon_files[0] ("+bad+") line 2") || !strings.Contains(err.Error(), `unknown category "sadness"`) {
		t.Fatalf("error %v does not name the file, line and problem", err)
	}
	_, err = runClassify(t, "hi\n", "--lexicon", filepath.Join(dir, "missing.txt"))
	if err == nil || !strings.Contains(err.Error(), "triage.lexicon_files[0]") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestClassifyCommandConfig(t *testing.T) {
	for k, v := range map[string]string{
		"GATEWAY_TWILIO_AUTH_TOKEN": confTwilioToken, "GATEWAY_SMTP_PASSWORD": confSMTPPass,
		"GATEWAY_IMAP_PASSWORD": confIMAPPass, "GATEWAY_ADMIN_TOKEN": confAdminToken,
	} {
		t.Setenv(k, v)
	}
	dir := t.TempDir()
	lex := filepath.Join(dir, "practice.txt")
	os.WriteFile(lex, []byte("rule code-word acute-crisis 0.9\n  match: pineapple protocol\n  example: pineapple protocol now\n"), 0o600)
	text := strings.Replace(confText{}.String(), "[practice]\n", "[practice]\nurgent_keyword = \"ASAP\"\n", 1) +
		fmt.Sprintf("\n[triage]\nlexicon_files = [%q]\n\n[triage.extra]\nsuicide = [\"catch the last train\"]\n", lex)
	conf := filepath.Join(dir, "gateway.conf")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := runClassify(t, "asap please\nurgent please\npineapple protocol now\ngonna catch the last train\n", "-config", conf)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{`"client-marked-urgent"`, `"urgent":false`, `"acute-crisis"`, `"suicide"`} {
		if !strings.Contains(got[i], want) {
			t.Errorf("line %d = %s, want %s", i+1, got[i], want)
		}
	}

	// A bad lexicon file in the config fails validation, naming the key.
	os.WriteFile(lex, []byte("rule code-word acute-crisis 0.9\n  match: @nofamily\n"), 0o600)
	_, err = runClassify(t, "hi\n", "-config", conf)
	if err == nil || !strings.Contains(err.Error(), "triage.lexicon_files[0] ("+lex+") line 2: unknown family @nofamily") {
		t.Fatalf("err = %v", err)
	}
}

func TestClassifyOutputIsJSON(t *testing.T) {
	got, err := runClassify(t, "I'm going to k1ll myself\n\"quoted\" <b>tags</b> & more\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range got {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		for _, k := range []string{"id", "urgent", "category", "evidence", "confidence"} {
			if _, ok := v[k]; !ok {
				t.Fatalf("%s lacks %q", l, k)
			}
		}
	}
}

// BenchmarkClassifyCommand measures messages per second end to end
// through the command: read JSONL, classify, write JSON.
func BenchmarkClassifyCommand(b *testing.B) {
	lines := []string{
		`{"id":"1","channel":"sms","text":"can we move Tuesday to 3pm? traffic is killing me"}`,
		`{"id":"2","channel":"sms","text":"i cant keep myself safe tonight. been counting my pills"}`,
		`{"id":"3","channel":"email","subject":"Rescheduling","text":"Hello, could we move next week's appointment to Thursday afternoon? The bus timetable changed and I would otherwise be late. I've been doing the breathing exercises most days and the sleep diary is attached.\n\nThanks,\nPeregrine"}`,
		`{"id":"4","channel":"sms","text":"me quiero morir, ya no puedo más"}`,
		`{"id":"5","channel":"email","subject":"update","text":"Hi Dr. Okafor,\n\nJust a heads up for Thursday. My car is in the shop again so I'll take the bus. Work has been a lot, we're short two people and I've been covering the front counter. I did set the boundary with Carla about not texting me on my days off.\n\nI went back to burning on Sunday night, with the lighter, on my upper arm. Only once.\n\nSee you Thursday,\nJordan"}`,
	}
	var in strings.Builder
	const perRun = 1000
	for i := range perRun {
		in.WriteString(lines[i%len(lines)])
		in.WriteByte('\n')
	}
	path := filepath.Join(b.TempDir(), "in.jsonl")
	os.WriteFile(path, []byte(in.String()), 0o600)
	tr, err := classifyTriage("", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := classify(tr, f, discard{}, true); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	b.ReportMetric(float64(b.N*perRun)/b.Elapsed().Seconds(), "msgs/s")
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
