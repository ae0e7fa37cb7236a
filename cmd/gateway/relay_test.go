package main

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/therapistinbox/gateway/channels/email/submissiontest"
	"github.com/therapistinbox/gateway/channels/sms/twiliotest"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// The therapist's replies from the digest, whole: the client's message,
// the digest at the SMTP server, the therapist's email reply delivered
// into the Dovecot mailbox, and what reaches the client (Twilio stand-in or
// SMTP server) and the therapist.

var replyAddrRE = regexp.MustCompile(`practice\+r-[a-z0-9]+@example\.org`)

// relayStory is a running gateway on real peers with a movable clock.
type relayStory struct {
	*mailPeers
	m      *Main
	offset atomic.Int64 // added to the gateway's clock, in nanoseconds
}

func startRelayStory(t *testing.T) *relayStory {
	t.Helper()
	s := &relayStory{mailPeers: startMailPeers(t)}
	s.m = s.start(t)
	return s
}

// clientText files a text from the fixture client, as the webhook would.
func (s *relayStory) clientText(t *testing.T, body string) {
	t.Helper()
	in := envelope.Inbound{Channel: envelope.SMS, ProviderID: envelope.ProviderID(fmt.Sprintf("SM%032x", time.Now().UnixNano())),
		From: clientPhone, To: "+15550100000", Text: body}
	if _, err := s.m.Dispatcher.Receive(t.Context(), in); err != nil {
		t.Fatal(err)
	}
}

// digestReplyAddress runs a check-in and returns the reply address the
// digest offers for its (only) client.
func (s *relayStory) digestReplyAddress(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	if _, sent, err := s.m.DigestNow(ctx); err != nil || !sent {
		t.Fatalf("digest not sent: %v", err)
	}
	for _, c := range s.SMTP.Messages(t) {
		if c.To[0] == therapistTo {
			if addr := replyAddrRE.FindString(plainText(t, c.Data)); addr != "" {
				return addr
			}
		}
	}
	t.Fatal("no reply address in the digest")
	return ""
}

// therapistReply is an ordinary reply from a mail program: new text on
// top, the digest quoted below, a signature.
func therapistReply(id, from, to, text string) []byte {
	return []byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: Re: Check-in\r\nDate: %s\r\nMessage-ID: <%s>\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"+
		"%s\r\n\r\n-- \r\nDr. Maria Rivera\r\n\r\n"+
		"On Mon, 16 Nov 2026 at 09:00, Harbour Street Counselling <practice@example.org> wrote:\r\n"+
		"> Check-in Monday 16 November 2026\r\n> == %s ==\r\n> I had a rough night\r\n",
		from, to, time.Now().Format(time.RFC1123Z), id, text, clientFirstName))
}

// mailTo returns the captured messages to addr whose text contains want.
func mailTo(t *testing.T, s *submissiontest.Server, addr, want string) []string {
	t.Helper()
	var out []string
	for _, c := range s.Messages(t) {
		if len(c.To) == 1 && c.To[0] == addr {
			if body := plainText(t, c.Data); strings.Contains(body, want) {
				out = append(out, body)
			}
		}
	}
	return out
}

func plainText(t *testing.T, raw []byte) string {
	t.Helper()
	r, err := mail.CreateReader(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	for {
		p, err := r.NextPart()
		if err != nil {
			return ""
		}
		if h, ok := p.Header.(*mail.InlineHeader); ok {
			if ct, _, _ := h.ContentType(); ct == "text/plain" {
				b, _ := io.ReadAll(p.Body)
				return string(b)
			}
		}
	}
}

// waitMailTo waits for a message to addr containing want.
func waitMailTo(t *testing.T, s *submissiontest.Server, addr, want string) string {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		if got := mailTo(t, s, addr, want); len(got) > 0 {
			return got[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mail to %s containing %q", addr, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func textsToClient(tw *twiliotest.Server) []twiliotest.Message {
	var out []twiliotest.Message
	for _, m := range tw.Messages() {
		if m.To == clientPhone {
			out = append(out, m)
		}
	}
	return out
}

func TestRelayTherapistReplyReachesTextingClient(t *testing.T) {
	s := startRelayStory(t)
	s.clientText(t, "I had a rough night. Can we talk Thursday?")
	addr := s.digestReplyAddress(t)
	acks := len(textsToClient(s.Twilio))

	reply := therapistReply("rel1@example.org", "Dr. Maria Rivera <"+therapistTo+">", addr, "Thursday at 3 works. See you then.")
	s.IMAP.Deliver(t, "INBOX", reply)
	waitMailTo(t, s.SMTP, therapistTo, "Sent to "+clientFirstName+" by text")
	texts := textsToClient(s.Twilio)
	if len(texts) != acks+1 || texts[len(texts)-1].Body != "Thursday at 3 works. See you then." {
		t.Fatalf("texts to the client %+v, want the trimmed reply once", texts[acks:])
	}
	if texts[len(texts)-1].From != "+15550100000" {
		t.Errorf("relay sent from %q, want the practice number", texts[len(texts)-1].From)
	}

	// The same email again (a mail program's retry, a moved message): once.
	s.IMAP.Deliver(t, "INBOX", reply)
	time.Sleep(time.Second)
	if n := len(textsToClient(s.Twilio)); n != acks+1 {
		t.Fatalf("replayed relay sent again: %d texts", n-acks)
	}

	// The relay reset the quiet period: the client's next text gets a full ack.
	s.clientText(t, "Thank you!")
	deadline := time.Now().Add(waitLong)
	for len(textsToClient(s.Twilio)) < acks+2 {
		if time.Now().After(deadline) {
			t.Fatal("no fresh acknowledgement after the relay")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRelayForgedSenderRefused(t *testing.T) {
	s := startRelayStory(t)
	s.clientText(t, "I had a rough night.")
	addr := s.digestReplyAddress(t)
	acks := len(textsToClient(s.Twilio))

	s.IMAP.Deliver(t, "INBOX", therapistReply("forged@example.net", "Dr. Maria Rivera <rivera@example.net>", addr, "Call me at this number."))
	why := waitMailTo(t, s.SMTP, therapistTo, "not on the practice's list")
	if strings.Contains(why, clientFirstName) || strings.Contains(why, clientPhone) {
		t.Errorf("explanation names the client: %q", why)
	}
	for _, c := range s.SMTP.Messages(t) {
		if c.To[0] == "rivera@example.net" {
			t.Fatal("the unknown sender was answered")
		}
	}
	if n := len(textsToClient(s.Twilio)); n != acks {
		t.Fatalf("forged relay reached the client")
	}
}

func TestRelayExpiredTokenRefused(t *testing.T) {
	s := &relayStory{mailPeers: startMailPeers(t)}
	s.offset.Store(int64(-15 * 24 * time.Hour)) // the digest is from 15 days ago
	s.clock = func() time.Time { return time.Now().Add(time.Duration(s.offset.Load())) }
	s.m = s.start(t)
	s.clientText(t, "I had a rough night.")
	addr := s.digestReplyAddress(t)
	acks := len(textsToClient(s.Twilio))

	s.offset.Store(0)
	s.IMAP.Deliver(t, "INBOX", therapistReply("late@example.org", therapistTo, addr, "Sorry for the delay."))
	waitMailTo(t, s.SMTP, therapistTo, "expired")
	if n := len(textsToClient(s.Twilio)); n != acks {
		t.Fatalf("expired relay reached the client")
	}
}

func TestRelayToOptedOutClientRefused(t *testing.T) {
	s := startRelayStory(t)
	s.clientText(t, "I had a rough night.")
	addr := s.digestReplyAddress(t)
	s.clientText(t, "STOP") // after the digest, before the therapist answers
	s.IMAP.Deliver(t, "INBOX", therapistReply("optout@example.org", therapistTo, addr, "Are you OK?"))
	waitMailTo(t, s.SMTP, therapistTo, "opted out")
	for _, m := range textsToClient(s.Twilio) {
		if m.Body == "Are you OK?" {
			t.Fatal("relay sent to an opted-out number")
		}
	}
}

func TestRelayToEmailClientThreads(t *testing.T) {
	s := startRelayStory(t)
	s.IMAP.Deliver(t, "INBOX", clientMail("e1@client.example", "Rescheduling", "Could we move Thursday?", "<e0@client.example>"))
	waitAcks(t, s.mailPeers, 1)
	addr := s.digestReplyAddress(t)

	s.IMAP.Deliver(t, "INBOX", therapistReply("rel2@example.org", therapistTo, addr, "Yes, Friday at 10 is free."))
	waitMailTo(t, s.SMTP, therapistTo, "Sent to")
	client := clientAddr("e1@client.example")
	deadline := time.Now().Add(waitLong)
	for {
		for _, c := range s.SMTP.Messages(t) {
			if c.To[0] != client || !strings.Contains(plainText(t, c.Data), "Friday at 10") {
				continue
			}
			h := header(t, c.Data)
			subject, _ := h.Subject()
			if subject != "Re: Rescheduling" || h.Get("In-Reply-To") != "<e1@client.example>" ||
				h.Get("References") != "<e0@client.example> <e1@client.example>" {
				t.Fatalf("relay headers: subject %q, In-Reply-To %q, References %q", subject, h.Get("In-Reply-To"), h.Get("References"))
			}
			if body := plainText(t, c.Data); strings.Contains(body, "wrote:") || strings.Contains(body, "Dr. Maria Rivera\r\n") {
				t.Errorf("quoted digest or signature relayed: %q", body)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("relay never reached the email client")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
