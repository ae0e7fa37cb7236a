package email

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // REQUIRED: decodes ISO-8859-*, Windows-125x, ... (PROTOCOLS.md §7)
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"github.com/k3a/html2text"

	"github.com/therapistinbox/gateway/gateway/envelope"
	"github.com/therapistinbox/gateway/policies"
)

// Parsing limits.
const (
	// DefaultMaxSize is the largest message read in full when
	// ParseOptions.MaxSize is zero: 10 MB (bytes).
	DefaultMaxSize = 10 << 20

	maxHeaderBytes   = 1 << 20   // bytes of header read; the rest is dropped with a note
	maxFallbackBytes = 256 << 10 // bytes of an unreadable body kept as its text
	maxReportBytes   = 256 << 10 // bytes of a delivery-status or returned-header part read
	maxDepth         = 20        // nested multiparts
	maxParts         = 1000      // MIME parts of one message
	maxRefs          = 50        // References kept: the first and the last 49
	maxSubject       = 1000      // runes
	maxName          = 200       // runes, for display names and file names
)

// ParseOptions tune how raw mail becomes an inbound message.
type ParseOptions struct {
	// MaxSize is the largest message read in full (default 10 MB). A
	// larger one is still recorded, from its header, with a note.
	MaxSize int64
	// Ours are the practice's own addresses: mail from them is never
	// acknowledged (loop protection).
	Ours []string
}

// Parse turns one raw RFC 5322 message into an inbound message. It never
// fails: what cannot be read becomes a note on the message. size is the
// message's full size when raw holds only its header (0 when raw is the
// whole message).
//
// The body is the message's inline text/plain parts (of each
// multipart/alternative, the plain one), or its HTML parts converted to
// text when it has no plain text, decoded from their transfer encoding and
// charset. Text is that body with quoted history and signatures trimmed
// (TrimReply); Original is the full body when trimming removed something.
// Every other part is listed in Attachments. Automatic mail (auto-replies,
// lists, bounces: policies.AutomatedMail) is marked Automated, and a
// delivery failure report names the Message-ID of the message it reports in
// BounceOf. Notes never hold client content.
func Parse(raw []byte, size int64, opts ParseOptions) envelope.Inbound {
	return parseSafely(raw, size, opts, (*parser).parse)
}

// parseSafely runs parse with a recover around it.
func parseSafely(raw []byte, size int64, opts ParseOptions,
	parse func(p *parser, raw []byte, size int64, in *envelope.Inbound)) (in envelope.Inbound) {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	p := &parser{opts: opts}
	// The last line of defence: a bug or a library panic on hostile input
	// must not stop the watcher or lose the message.
	defer func() {
		if r := recover(); r != nil {
			in.Channel = envelope.Email
			if in.ProviderID == "" {
				sum := sha256.Sum256(raw)
				in.ProviderID = envelope.ProviderID("sha256:" + hex.EncodeToString(sum[:]))
			}
			for _, f := range []*string{&in.From, &in.FromName, &in.To, &in.Subject, &in.Text, &in.Original} {
				*f = strings.ToValidUTF8(*f, "\uFFFD")
			}
			in.Notes = appendNote(p.notes, "broken MIME: internal error while reading; open the mailbox to read it")
		}
	}()
	parse(p, raw, size, &in)
	return in
}

// parser holds what one Parse call has learned so far.
type parser struct {
	opts        ParseOptions
	in          *envelope.Inbound
	notes       []string
	parts       int
	broken      bool
	attachments []envelope.Attachment
	dsn         dsn
	embedded    [][]byte // headers of attached messages, for non-standard bounces
}

// dsn is what the delivery-status parts of a report said (RFC 3464).
type dsn struct {
	seen     bool   // a message/delivery-status part was read
	failed   bool   // some recipient has Action: failed
	delayed  bool   // some recipient has Action: delayed
	status   string // the first failed recipient's Status, "5.1.1"
	returned string // Message-ID of the returned message, no brackets
}

// content is the body text found in a part: plain and HTML pieces in order.
type content struct{ plain, html []string }

func (c *content) add(o content) {
	c.plain = append(c.plain, o.plain...)
	c.html = append(c.html, o.html...)
}

func (c content) hasPlain() bool { return hasText(c.plain) }
func (c content) hasHTML() bool  { return hasText(c.html) }

func hasText(ss []string) bool {
	for _, s := range ss {
		if strings.TrimSpace(s) != "" {
			return true
		}
	}
	return false
}

// walk carries what a part needs to know about its ancestors.
type walk struct {
	depth  int
	report bool // inside multipart/report
}

func (p *parser) note(s string) {
	p.notes = appendNote(p.notes, s)
}

func appendNote(notes []string, s string) []string {
	for _, n := range notes {
		if n == s {
			return notes
		}
	}
	return append(notes, s)
}

func (p *parser) brokenf(reason string) {
	p.broken = true
	p.note("broken MIME: " + reason)
}

func (p *parser) parse(raw []byte, size int64, in *envelope.Inbound) {
	p.in = in
	in.Channel = envelope.Email

	hdr, body := splitHeader(raw)
	h, tail, ok := p.readHeader(hdr, true)
	switch {
	case !ok:
		// Not a header at all: keep everything as the body.
		p.brokenf("no header")
		body = raw
	case tail != nil:
		body = joinBody(tail, body)
	}
	mh := mail.Header{Header: message.Header{Header: h}}

	in.Subject = clip(headerText(mh.Get("Subject")), maxSubject)
	from, name := p.sender(mh)
	in.From, in.FromName = from, name
	in.To = p.recipient(mh)
	in.RelayToken = p.relayToken(mh)
	in.AuthFailed = authFailed(mh)
	rawDate := strings.TrimSpace(mh.Get("Date"))
	if rawDate != "" {
		if d, err := mh.Date(); err == nil {
			in.ReceivedAt = d
		} else {
			p.note("unreadable Date header")
		}
	}
	id := messageID(mh.Get("Message-Id"))
	if id != "" {
		in.MessageID = "<" + id + ">"
		in.ProviderID = envelope.ProviderID(id) // set early: a panic below keeps it
	}
	in.References = references(mh.Get("References"), mh.Get("In-Reply-To"))

	full := int64(len(raw))
	if size > full {
		full = size
	}
	var text string
	if full > p.opts.MaxSize || size > int64(len(raw)) {
		p.note(fmt.Sprintf("over the size limit (%d MB); open the mailbox to read it", (full+(1<<20)-1)>>20))
	} else {
		text = p.body(h, body)
	}

	if id == "" {
		in.ProviderID = contentID(rawDate, from, text)
	}
	in.Text, in.Original = text, ""
	if t, cut := TrimReply(text); cut {
		in.Text, in.Original = t, text
	}
	in.Attachments = p.attachments

	reason := policies.AutomatedMail(h.Map(), from, p.opts.Ours)
	p.bounce(mh, text, reason)
	if p.dsn.seen {
		// A plain bounce quotes our own message below a marker; that is
		// not what the mail system said.
		if i := copyMarkerRE.FindStringIndex(in.Text); i != nil && strings.TrimSpace(in.Text[:i[0]]) != "" {
			in.Text, in.Original = strings.TrimSpace(in.Text[:i[0]]), text
		}
	}
	if reason != "" || p.dsn.seen {
		in.Automated = true
		if reason == "" {
			reason = "delivery report"
		}
		p.note("automatic mail (" + reason + "): not acknowledged")
	}
	in.Notes = p.notes
}

// splitHeader splits raw at the first blank line. Without one, all of raw
// is header (a truncated message, or a header-only fetch).
func splitHeader(raw []byte) (hdr, body []byte) {
	for i := 0; i < len(raw); {
		j := bytes.IndexByte(raw[i:], '\n')
		if j < 0 {
			break
		}
		line := raw[i : i+j]
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			return raw[:i], raw[i+j+1:]
		}
		i += j + 1
	}
	return raw, nil
}

// readHeader reads a header block, skipping lines that are neither fields
// nor continuations (noting them), so that one broken line does not cost
// the rest. Such lines after the last field are returned as tail: a body
// that was not separated from the header by a blank line. ok is false
// when nothing in hdr looked like a header field.
func (p *parser) readHeader(hdr []byte, top bool) (h textproto.Header, tail []byte, ok bool) {
	if len(hdr) > maxHeaderBytes {
		hdr = hdr[:maxHeaderBytes]
		if i := bytes.LastIndexByte(hdr, '\n'); i > 0 {
			hdr = hdr[:i]
		}
		p.brokenf("header too large")
	}
	lines := bytes.Split(hdr, []byte("\n"))
	good := make([]bool, len(lines))
	last := -1    // the last line that belongs to a field
	keep := false // the last field was kept, so a continuation belongs to it
	for n, line := range lines {
		line = bytes.TrimRight(line, "\r")
		lines[n] = line
		switch {
		case len(bytes.TrimSpace(line)) == 0:
			continue
		case n == 0 && top && bytes.HasPrefix(line, []byte("From ")):
			continue // mbox "From " separator
		case line[0] == ' ' || line[0] == '\t':
			good[n] = keep
		default:
			i := bytes.IndexByte(line, ':')
			good[n] = i > 0 && validKey(bytes.TrimRight(line[:i], " \t"))
			keep = good[n]
		}
		if good[n] {
			last = n
		}
	}
	if last < 0 && len(bytes.TrimSpace(hdr)) > 0 {
		return h, nil, false
	}
	var clean bytes.Buffer
	clean.Grow(len(hdr) + 4)
	bad := false
	for n, line := range lines[:last+1] {
		if good[n] {
			clean.Write(line)
			clean.WriteString("\r\n")
		} else if len(bytes.TrimSpace(line)) > 0 && !(n == 0 && top && bytes.HasPrefix(line, []byte("From "))) {
			bad = true
		}
	}
	if bad {
		p.brokenf("malformed header line")
	}
	if rest := bytes.Join(lines[last+1:], []byte("\n")); len(bytes.TrimSpace(rest)) > 0 {
		p.brokenf("no blank line after the header")
		tail = rest
	}
	clean.WriteString("\r\n")
	h, err := textproto.ReadHeader(bufio.NewReader(&clean))
	if err != nil {
		p.brokenf("malformed header line")
	}
	return h, tail, true
}

// joinBody puts body lines that came before the blank line back in front
// of the body.
func joinBody(tail, body []byte) []byte {
	if body == nil {
		return tail
	}
	out := make([]byte, 0, len(tail)+1+len(body))
	out = append(append(append(out, tail...), '\n'), body...)
	return out
}

func validKey(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for _, c := range k {
		if c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

// sender returns the From address and display name, falling back to a best
// effort on a broken From, then to Sender and Return-Path.
func (p *parser) sender(h mail.Header) (addr, name string) {
	for i, key := range []string{"From", "Sender", "Return-Path"} {
		v := h.Get(key)
		if strings.TrimSpace(v) == "" {
			continue
		}
		addr, name, ok := parseAddress(v)
		if addr == "" {
			continue
		}
		switch {
		case i > 0:
			p.note("no From header; sender taken from " + key)
		case !ok:
			p.note("unreadable From header; sender read by best effort")
		}
		return addr, name
	}
	if h.Get("From") != "" {
		p.note("unreadable From header; no sender address")
	} else {
		p.note("no sender address")
	}
	return "", ""
}

var (
	// An address inside angle brackets, or a bare one.
	angleAddrRE = regexp.MustCompile(`<\s*([^<>\s"(),;:\\]+@[^<>\s"(),;:\\]+?)\s*>`)
	bareAddrRE  = regexp.MustCompile(`[^<>\s"'(),;:\\\[\]]+@[^<>\s"'(),;:\\\[\]]+`)
)

// parseAddress reads the first address of an address-list header. ok is
// false when the header had to be read by best effort.
func parseAddress(v string) (addr, name string, ok bool) {
	if as, err := mail.ParseAddressList(v); err == nil && len(as) > 0 && as[0].Address != "" {
		return cleanAddr(as[0].Address), clip(headerText(as[0].Name), maxName), true
	}
	if m := angleAddrRE.FindStringSubmatchIndex(v); m != nil {
		addr = v[m[2]:m[3]]
		name = strings.Trim(strings.TrimSpace(v[:m[0]]), `"' `)
	} else if m := bareAddrRE.FindString(v); m != "" {
		addr = m
	}
	return cleanAddr(addr), clip(headerText(name), maxName), false
}

func cleanAddr(a string) string {
	a = strings.Trim(strings.ToValidUTF8(a, ""), " \t<>")
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return -1
		}
		return r
	}, a)
}

// recipient returns the practice address the message was sent to: one of
// ours among To, Cc, Delivered-To and X-Original-To, else the first To.
func (p *parser) recipient(h mail.Header) string {
	first := ""
	for _, key := range []string{"To", "Cc", "Delivered-To", "X-Original-To"} {
		for _, v := range h.Values(key) {
			as, err := mail.ParseAddressList(v)
			if err != nil {
				as = nil
				for _, m := range bareAddrRE.FindAllString(v, -1) {
					as = append(as, &mail.Address{Address: m})
				}
			}
			for _, a := range as {
				addr := cleanAddr(a.Address)
				if addr == "" {
					continue
				}
				if first == "" && key == "To" {
					first = addr
				}
				for _, o := range p.opts.Ours {
					if strings.EqualFold(strings.TrimSpace(o), addr) {
						return addr
					}
				}
			}
		}
	}
	return first
}

// relayToken returns the token of a per-client reply address
// (practice+r-<token>@example.org) among the recipients, or "". Only
// plus-addresses of our own addresses count when Ours is set.
func (p *parser) relayToken(h mail.Header) string {
	for _, key := range []string{"To", "Cc", "Delivered-To", "X-Original-To"} {
		for _, v := range h.Values(key) {
			for _, m := range bareAddrRE.FindAllString(v, -1) {
				addr := strings.ToLower(cleanAddr(m))
				at := strings.LastIndexByte(addr, '@')
				i := strings.Index(addr, "+r-")
				if at < 0 || i < 0 || i > at {
					continue
				}
				base := addr[:i] + addr[at:]
				if len(p.opts.Ours) > 0 && !slices.ContainsFunc(p.opts.Ours, func(o string) bool {
					return strings.EqualFold(strings.TrimSpace(o), base)
				}) {
					continue
				}
				if tok := addr[i+3 : at]; tok != "" {
					return tok
				}
			}
		}
	}
	return ""
}

var authFailRE = regexp.MustCompile(`(?i)\b(dmarc|dkim|spf)\s*=\s*fail\b`)

// authFailed names the first sender check that an Authentication-Results
// header (RFC 8601) reports as failed ("dmarc=fail"), or "". Any such
// header counts, so a forged "pass" cannot hide a real "fail".
func authFailed(h mail.Header) string {
	for _, v := range h.Values("Authentication-Results") {
		if m := authFailRE.FindStringSubmatch(v); m != nil {
			return strings.ToLower(m[1]) + "=fail"
		}
	}
	return ""
}

var msgIDRE = regexp.MustCompile(`<\s*([^<>\s]+?)\s*>`)

// messageID returns the id in a Message-ID value, without angle brackets;
// "" when there is none.
func messageID(v string) string {
	var id string
	if m := msgIDRE.FindStringSubmatch(v); m != nil {
		id = m[1]
	} else if f := strings.Fields(v); len(f) > 0 {
		id = strings.Trim(f[0], "<>")
	}
	id = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) || unicode.IsSpace(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(id, ""))
	if len(id) > 995 { // RFC 5322 line limit; longer is not a real id
		return ""
	}
	return id
}

// references returns the msg-ids of References followed by In-Reply-To
// (unless it is already last), with angle brackets.
func references(refs, inReplyTo string) []string {
	var out []string
	for _, m := range msgIDRE.FindAllStringSubmatch(refs, -1) {
		if id := messageID(m[0]); id != "" {
			out = append(out, "<"+id+">")
		}
	}
	if id := messageID(inReplyTo); id != "" && msgIDRE.MatchString(inReplyTo) {
		if len(out) == 0 || out[len(out)-1] != "<"+id+">" {
			out = append(out, "<"+id+">")
		}
	}
	if len(out) > maxRefs {
		out = append(out[:1], out[len(out)-maxRefs+1:]...)
	}
	return out
}

// contentID is the ProviderID of a message without a Message-ID: stable
// across fetches of the same message.
func contentID(date, from, body string) envelope.ProviderID {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		b.WriteString(strings.TrimRightFunc(l, unicode.IsSpace))
		b.WriteByte('\n')
	}
	sum := sha256.New()
	fmt.Fprintf(sum, "%s\x00%s\x00", strings.TrimSpace(date), strings.ToLower(from))
	io.WriteString(sum, b.String())
	return envelope.ProviderID("sha256:" + hex.EncodeToString(sum.Sum(nil)))
}

// body walks the MIME tree and returns the body text.
func (p *parser) body(h textproto.Header, raw []byte) string {
	c := p.entity(h, raw, walk{})
	var pieces []string
	switch {
	case c.hasPlain():
		pieces = c.plain
	case c.hasHTML():
		for _, s := range c.html {
			pieces = append(pieces, htmlToText(s))
		}
	}
	text := strings.TrimSpace(strings.Join(nonBlank(pieces), "\n\n"))
	if text == "" && p.broken && len(p.attachments) == 0 {
		// Whatever could be read: the raw body, made readable UTF-8.
		if len(raw) > maxFallbackBytes {
			raw = raw[:maxFallbackBytes]
			p.note("text over the size limit was cut")
		}
		text = strings.TrimSpace(normalise(decodeBytes(raw, "")))
	}
	return text
}

func nonBlank(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// entity reads one MIME entity (a whole message or a part).
func (p *parser) entity(h textproto.Header, raw []byte, w walk) content {
	p.parts++
	if p.parts > maxParts {
		if p.parts == maxParts+1 {
			p.brokenf("too many parts")
		}
		return content{}
	}
	typ, params := p.contentType(h)
	if strings.HasPrefix(typ, "multipart/") {
		if w.depth >= maxDepth {
			p.brokenf("nested too deeply")
			return content{}
		}
		return p.multipart(typ, params, raw, w)
	}
	return p.leaf(h, typ, params, raw, w)
}

var mediaTypeRE = regexp.MustCompile(`^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+$`)

// contentType returns the media type and parameters, lower-cased, with
// text/plain as the default (RFC 2045 §5.2) for a missing or unreadable
// Content-Type.
func (p *parser) contentType(h textproto.Header) (string, map[string]string) {
	v := h.Get("Content-Type")
	if strings.TrimSpace(v) == "" {
		return "text/plain", map[string]string{}
	}
	typ, params := parseParams(v)
	if !mediaTypeRE.MatchString(typ) {
		p.brokenf("unreadable Content-Type")
		return "text/plain", map[string]string{}
	}
	return typ, params
}

// parseParams parses "type; key=value; ..." strictly (mime.ParseMediaType,
// which also joins RFC 2231 continuations), then leniently for what that
// could not read: real mail has unquoted spaces, duplicate parameters and
// RFC 2231 values in charsets other than UTF-8.
func parseParams(v string) (string, map[string]string) {
	t, params, err := mime.ParseMediaType(v)
	if params == nil {
		params = map[string]string{}
	}
	for k, pv := range params {
		params[k] = headerText(pv) // RFC 2047 words in parameters, as mailers send them
	}
	segs := strings.Split(v, ";")
	if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) || t == "" {
		t = segs[0]
	}
	for _, seg := range segs[1:] {
		k, pv, ok := strings.Cut(seg, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		pv = strings.Trim(strings.TrimSpace(pv), `"'`)
		if strings.HasSuffix(k, "*") { // RFC 2231 extended value: charset'lang'text
			k = strings.TrimSuffix(k, "*")
			pv = decode2231(pv)
		}
		if _, dup := params[k]; !dup && k != "" {
			params[k] = headerText(pv)
		}
	}
	return strings.ToLower(strings.TrimSpace(t)), params
}

// decode2231 decodes an RFC 2231 value "charset'language'percent-text".
func decode2231(v string) string {
	cs, rest, ok := strings.Cut(v, "'")
	if !ok {
		return v
	}
	if _, rest, ok = strings.Cut(rest, "'"); !ok {
		return v
	}
	b, err := url.PathUnescape(rest)
	if err != nil {
		return rest
	}
	if cs = strings.ToLower(cs); cs != "" && cs != "utf-8" && cs != "us-ascii" && message.CharsetReader != nil {
		if r, err := message.CharsetReader(cs, strings.NewReader(b)); err == nil {
			if d, err := io.ReadAll(r); err == nil {
				return string(d)
			}
		}
	}
	return b
}

// multipart splits a multipart body and walks its parts.
func (p *parser) multipart(typ string, params map[string]string, raw []byte, w walk) content {
	parts, closed := splitMultipart(raw, params["boundary"])
	if len(parts) == 0 {
		if b := guessBoundary(raw); b != "" {
			parts, closed = splitMultipart(raw, b)
			if len(parts) > 0 {
				p.brokenf("wrong multipart boundary")
			}
		}
	}
	if len(parts) == 0 {
		p.brokenf("multipart without parts")
		return content{}
	}
	if !closed {
		p.brokenf("truncated multipart")
	}
	sub := walk{depth: w.depth + 1, report: w.report || typ == "multipart/report"}
	var all content
	var alts []content
	for _, part := range parts {
		hdr, body := splitHeader(part) // a part that starts with a blank line has no header
		h, tail, ok := p.readHeader(hdr, false)
		switch {
		case !ok:
			p.brokenf("malformed part header")
			h, body = textproto.Header{}, part
		case tail != nil:
			body = joinBody(tail, body)
		}
		c := p.entity(h, body, sub)
		if typ == "multipart/alternative" {
			alts = append(alts, c)
		} else {
			all.add(c)
		}
	}
	if typ != "multipart/alternative" {
		return all
	}
	// RFC 2046 §5.1.4: alternatives of one content. Prefer plain text; of
	// the HTML ones take the last (the richest).
	for _, c := range alts {
		if c.hasPlain() {
			return c
		}
	}
	for i := len(alts) - 1; i >= 0; i-- {
		if alts[i].hasHTML() {
			return alts[i]
		}
	}
	return content{}
}

// splitMultipart returns the parts between "--boundary" lines (RFC 2046
// §5.1.1) and whether the closing "--boundary--" line was seen. It is
// lenient: white space after a delimiter is ignored and a missing close
// keeps what came before it.
func splitMultipart(raw []byte, boundary string) (parts [][]byte, closed bool) {
	if boundary == "" {
		return nil, false
	}
	delim := []byte("--" + boundary)
	start := -1 // start of the current part
	for i := 0; i < len(raw); {
		end := bytes.IndexByte(raw[i:], '\n')
		next := len(raw)
		if end >= 0 {
			next = i + end + 1
			end += i
		} else {
			end = len(raw)
		}
		line := bytes.TrimRight(raw[i:end], " \t\r")
		if bytes.HasPrefix(line, delim) {
			rest := line[len(delim):]
			isClose := bytes.Equal(rest, []byte("--"))
			if len(rest) == 0 || isClose {
				if start >= 0 {
					parts = append(parts, trimPartEnd(raw[start:i]))
				}
				if isClose {
					return parts, true
				}
				start = next
			}
		}
		i = next
	}
	if start >= 0 && start <= len(raw) {
		parts = append(parts, raw[start:])
	}
	return parts, false
}

// trimPartEnd drops the line break that belongs to the next delimiter.
func trimPartEnd(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// guessBoundary finds a "--token" line followed by a header line: the
// boundary a broken message really used.
func guessBoundary(raw []byte) string {
	lines := bytes.SplitN(raw, []byte("\n"), 200)
	for i, l := range lines {
		l = bytes.TrimRight(l, " \t\r")
		if len(l) < 3 || len(l) > 72 || !bytes.HasPrefix(l, []byte("--")) || bytes.ContainsAny(l, " \t") {
			continue
		}
		if i+1 < len(lines) && bytes.IndexByte(lines[i+1], ':') > 0 {
			return strings.TrimSuffix(string(l[2:]), "--")
		}
	}
	return ""
}

// leaf reads a part that is not multipart: body text, report data or an
// attachment.
func (p *parser) leaf(h textproto.Header, typ string, params map[string]string, raw []byte, w walk) content {
	disp, dparams := "", map[string]string{}
	if v := h.Get("Content-Disposition"); strings.TrimSpace(v) != "" {
		disp, dparams = parseParams(v)
	}
	name := dparams["filename"]
	if name == "" {
		name = params["name"]
	}
	name = fileName(name)

	body, cs := p.decoder(h, typ, params)
	r := body(raw)

	if w.report {
		switch typ {
		case "message/delivery-status", "message/global-delivery-status":
			b, _ := io.ReadAll(io.LimitReader(r, maxReportBytes))
			p.deliveryStatus(b)
			return content{}
		case "message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers":
			b, _ := io.ReadAll(io.LimitReader(r, maxReportBytes))
			if id := p.headerMessageID(b); id != "" && p.dsn.returned == "" {
				p.dsn.returned = id
			}
			return content{}
		case "message/disposition-notification":
			return content{}
		}
	}

	bodyType := typ == "text/plain" || typ == "text/html" || typ == "text/enriched"
	if bodyType && disp != "attachment" && (name == "" || w.depth == 0) {
		b, err := io.ReadAll(io.LimitReader(r, p.opts.MaxSize+1))
		if err != nil {
			p.readError(err)
		}
		if int64(len(b)) > p.opts.MaxSize {
			b = b[:p.opts.MaxSize]
			p.note("text over the size limit was cut")
		}
		s := normalise(decodeBytes(b, cs))
		if typ == "text/html" {
			return content{html: []string{s}}
		}
		return content{plain: []string{s}}
	}

	var n int64
	var err error
	if typ == "message/rfc822" || typ == "message/global" {
		// Keep the start of an attached message for bounce matching.
		head := make([]byte, 0, 4096)
		buf := bytes.NewBuffer(head)
		n, err = io.Copy(buf, io.LimitReader(r, maxReportBytes))
		p.embedded = append(p.embedded, buf.Bytes())
		if err == nil {
			var m int64
			m, err = io.Copy(io.Discard, io.LimitReader(r, p.opts.MaxSize))
			n += m
		}
	} else {
		n, err = io.Copy(io.Discard, io.LimitReader(r, p.opts.MaxSize+1))
	}
	if err != nil {
		p.readError(err)
	}
	p.attachments = append(p.attachments, envelope.Attachment{Name: name, Type: typ, Size: n})
	return content{}
}

// decoder returns a function that decodes a part's raw body (transfer
// encoding, and charset for text), and the charset to assume when the
// result is not UTF-8: "" for undeclared or US-ASCII (read as
// Windows-1252), "utf-8" when UTF-8 was declared or the charset is
// unknown (invalid bytes become U+FFFD).
func (p *parser) decoder(h textproto.Header, typ string, params map[string]string) (func([]byte) io.Reader, string) {
	var eh message.Header
	cte := strings.TrimSpace(h.Get("Content-Transfer-Encoding"))
	if i := strings.IndexAny(cte, " \t;("); i >= 0 {
		cte = cte[:i]
	}
	eh.Set("Content-Transfer-Encoding", cte)
	cs := strings.ToLower(strings.Trim(params["charset"], `"' `))
	fallback := ""
	if strings.HasPrefix(typ, "text/") && cs != "" && cs != "us-ascii" {
		eh.SetContentType(typ, map[string]string{"charset": cs})
		fallback = "utf-8"
	} else {
		eh.SetContentType(typ, nil)
	}
	return func(raw []byte) io.Reader {
		e, err := message.New(eh, bytes.NewReader(raw))
		switch {
		case err == nil:
		case message.IsUnknownEncoding(err):
			p.brokenf("unknown transfer encoding")
		case message.IsUnknownCharset(err):
			p.note("unknown charset " + token(cs))
		}
		if e == nil {
			return bytes.NewReader(raw)
		}
		return e.Body
	}, fallback
}

// readError notes why a part's body could not be read to the end.
func (p *parser) readError(err error) {
	var b64 base64.CorruptInputError
	switch {
	case errors.As(err, &b64):
		p.brokenf("bad base64")
	case strings.Contains(err.Error(), "quotedprintable"):
		p.brokenf("bad quoted-printable")
	case errors.Is(err, io.ErrUnexpectedEOF):
		p.brokenf("truncated part")
	default:
		p.brokenf("unreadable part")
	}
}

// decodeBytes returns b as UTF-8. Bytes that are not UTF-8 are read as
// Windows-1252 (the usual undeclared 8-bit charset, a superset of
// ISO-8859-1's printable range) unless UTF-8 was declared.
func decodeBytes(b []byte, declared string) string {
	if utf8.Valid(b) {
		return string(b)
	}
	if declared == "" && message.CharsetReader != nil {
		if r, err := message.CharsetReader("windows-1252", bytes.NewReader(b)); err == nil {
			if s, err := io.ReadAll(r); err == nil {
				return strings.ToValidUTF8(string(s), "\uFFFD")
			}
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// normalise turns line breaks into "\n" and drops control characters other
// than tab and line feed.
func normalise(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\r':
			return '\n'
		case r == '\n' || r == '\t':
			return r
		case r == '\u00a0':
			return ' '
		case unicode.IsControl(r) || r == '\uFEFF':
			return -1
		}
		return r
	}, s)
}

var divEndRE = regexp.MustCompile(`(?i)</(?:div|tr|h[1-6])\s*>`)

// htmlToText converts an HTML body to plain text; block ends become line
// breaks, which the converter leaves out for <div>.
func htmlToText(s string) string {
	s = divEndRE.ReplaceAllStringFunc(s, func(m string) string { return m + "<br>" })
	t := html2text.HTML2TextWithOptions(s, html2text.WithUnixLineBreaks(), html2text.WithLinksInnerText(),
		html2text.WithListSupport())
	t = normalise(t)
	// Collapse the blank lines the conversion leaves behind.
	var out []string
	blank := 0
	for _, l := range strings.Split(t, "\n") {
		l = strings.TrimRight(l, " \t")
		if l == "" {
			blank++
			if blank > 1 {
				continue
			}
		} else {
			blank = 0
		}
		out = append(out, l)
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}

// headerText decodes RFC 2047 words in a header value into clean one-line
// UTF-8. Raw 8-bit bytes that are not UTF-8 are read as Windows-1252.
func headerText(v string) string {
	if !utf8.ValidString(v) {
		v = decodeBytes([]byte(v), "")
	}
	dec := mime.WordDecoder{CharsetReader: func(cs string, r io.Reader) (io.Reader, error) {
		if message.CharsetReader == nil {
			return nil, fmt.Errorf("charset %q: no charset reader", cs)
		}
		return message.CharsetReader(strings.ToLower(cs), r)
	}}
	if d, err := dec.DecodeHeader(v); err == nil {
		v = d
	}
	v = strings.ToValidUTF8(v, "\uFFFD")
	v = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return ' '
		}
		return r
	}, v)
	return strings.Join(strings.Fields(v), " ")
}

// fileName makes an attachment name safe to show: no path, no control
// characters, at most maxName runes.
func fileName(s string) string {
	s = headerText(s)
	if i := strings.LastIndexAny(s, `/\`); i >= 0 {
		s = s[i+1:]
	}
	return clip(strings.TrimSpace(s), maxName)
}

func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}

// token keeps only the characters of a charset name, so a note never
// carries arbitrary text.
func token(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-_.:+", r)) {
			return r
		}
		return -1
	}, s)
	return clip(s, 40)
}

// headerMessageID reads the Message-ID from the header of a returned
// message (or from a bare header block).
func (p *parser) headerMessageID(b []byte) string {
	hdr, _ := splitHeader(b)
	sub := &parser{opts: p.opts} // its notes are about the returned mail, not this one
	h, _, ok := sub.readHeader(hdr, false)
	if !ok {
		return ""
	}
	return messageID(h.Get("Message-Id"))
}

var (
	statusRE        = regexp.MustCompile(`\b[245]\.\d{1,3}\.\d{1,3}\b`)
	failureStatusRE = regexp.MustCompile(`\b[45]\.\d{1,3}\.\d{1,3}\b`)
)

// deliveryStatus reads a message/delivery-status body (RFC 3464 §2.1): a
// per-message block, then one block per recipient.
func (p *parser) deliveryStatus(b []byte) {
	p.dsn.seen = true
	text := strings.ReplaceAll(string(b), "\r\n", "\n")
	for _, block := range strings.Split(text, "\n\n") {
		f := fieldsOf(block)
		action := strings.ToLower(strings.TrimSpace(f["action"]))
		if i := strings.IndexAny(action, " \t;("); i >= 0 {
			action = action[:i]
		}
		status := statusRE.FindString(f["status"])
		switch {
		case action == "failed", action == "" && strings.HasPrefix(status, "5."):
			if !p.dsn.failed {
				p.dsn.status = status
			}
			p.dsn.failed = true
		case action == "delayed":
			p.dsn.delayed = true
		}
	}
}

// fieldsOf reads "Name: value" lines (with continuations) into a map with
// lower-case names; the first occurrence wins.
func fieldsOf(block string) map[string]string {
	f := map[string]string{}
	last := ""
	for _, l := range strings.Split(block, "\n") {
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && last != "" {
			f[last] += " " + strings.TrimSpace(l)
			continue
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			last = ""
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if _, dup := f[k]; dup {
			last = ""
			continue
		}
		f[k], last = strings.TrimSpace(v), k
	}
	return f
}

var (
	// Subjects of bounces that are not RFC 3464 reports (Exchange NDR text,
	// Gmail, qmail, Exim, Sendmail and their translations).
	bounceSubjectRE = regexp.MustCompile(`(?i)(undeliverable|undelivered mail|undeliverable mail|delivery status notification \(failure\)|` +
		`delivery failure|mail delivery failed|failure notice|returned mail|delivery has failed|could not be delivered|` +
		`delivery failed|non remis|unzustellbar|no se puede entregar|no entregado|non recapitabile)`)
	delaySubjectRE = regexp.MustCompile(`(?i)(delay|delayed|still being retried|warning: could not send|not yet been delivered)`)
	bodyMsgIDRE    = regexp.MustCompile(`(?im)^[ \t>]*message-id:[ \t]*(<[^<>\r\n]+>)`)
	daemonRE       = regexp.MustCompile(`(?i)^(mailer[-_]?daemon|postmaster)@`)
	// The line above the returned message in Exim, qmail and Sendmail
	// bounces.
	copyMarkerRE = regexp.MustCompile(`(?im)^[ \t]*(?:-+ *this is a copy of the message|-+ *below this line is a copy of the message|` +
		`-+ *original message follows|-+ *the original message was received)`)
)

// findStatus returns the first failure status code ("5.1.1", "4.4.7") in
// the text of a plain bounce, skipping parts of IP addresses.
func findStatus(text string) string {
	for _, m := range failureStatusRE.FindAllStringIndex(text, -1) {
		before, after := text[:m[0]], text[m[1]:]
		if strings.HasSuffix(before, ".") || (len(after) > 1 && after[0] == '.' && after[1] >= '0' && after[1] <= '9') {
			continue
		}
		return text[m[0]:m[1]]
	}
	return ""
}

// bounce finishes delivery-report handling: an RFC 3464 report read while
// walking, or, for automatic mail from a mail system, a best-effort search
// of a plain bounce (qmail, Exchange text, old Gmail) for the returned
// message's Message-ID.
func (p *parser) bounce(h mail.Header, text, reason string) {
	d := &p.dsn
	if !d.seen && reason != "" {
		subj := headerText(h.Get("Subject"))
		daemon := daemonRE.MatchString(p.in.From)
		if daemon || bounceSubjectRE.MatchString(subj) {
			d.seen = true
			if delaySubjectRE.MatchString(subj) && !bounceSubjectRE.MatchString(subj) {
				d.delayed = true
			} else {
				d.failed = true
				d.status = findStatus(text)
				for _, e := range p.embedded {
					if id := p.headerMessageID(e); id != "" {
						d.returned = id
						break
					}
				}
				if d.returned == "" {
					if m := bodyMsgIDRE.FindStringSubmatch(text); m != nil {
						d.returned = messageID(m[1])
					}
				}
			}
		}
	}
	switch {
	case !d.seen:
		return
	case d.failed:
		p.in.BounceOf, p.in.BounceStatus = d.returned, d.status
		msg := "delivery failure report"
		if d.status != "" {
			msg += " (" + d.status + ")"
		}
		if d.returned == "" {
			msg += "; the failed message is not identified"
		}
		p.note(msg)
	case d.delayed:
		p.note("delivery delay report; not a failure yet")
	default:
		p.note("delivery report")
	}
}
