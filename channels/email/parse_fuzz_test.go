package email

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds Parse arbitrary bytes, seeded with every fixture. Parse
// must not panic (its own recover turns a panic into a note, which fails
// here), and must always return an email with a ProviderID, valid UTF-8 and
// notes of the known forms.
//
//	go test -fuzz=FuzzParse -fuzztime=60s ./channels/email/
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "mail", "*.eml"))
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	for _, s := range []string{
		"",
		"From: a@b\r\n\r\n",
		"Content-Type: multipart/alternative; boundary=x\r\n\r\n--x\r\nContent-Type: text/html\r\n\r\n<p>a</p>\r\n--x--",
		"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\nStatus: 5.1.1\r\n--x\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <a@b>\r\n--x--",
		"Subject: =?x-unknown?q?abc?=\r\nContent-Type: text/plain; charset=utf-7\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		in := Parse(raw, 0, ParseOptions{MaxSize: 1 << 20, Ours: []string{"practice@example.org"}})
		for _, n := range in.Notes {
			if strings.Contains(n, "internal error") {
				t.Fatalf("Parse panicked: %q", in.Notes)
			}
		}
		checkShape(t, in)
		if again := Parse(raw, 0, ParseOptions{MaxSize: 1 << 20}); again.ProviderID != in.ProviderID {
			t.Fatalf("ProviderID not stable: %q then %q", in.ProviderID, again.ProviderID)
		}
	})
}
