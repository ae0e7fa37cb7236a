// Package envelope holds the plain types shared by the gateway and its
// channel adapters: inbound and outbound messages, channels, addresses and
// send errors. It depends on the standard library only, so adapters can use
// it without reaching into the store.
package envelope

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Channel is the way a message travels.
type Channel string

// The channels the gateway speaks.
const (
	SMS   Channel = "sms"
	Email Channel = "email"
)

// Valid reports whether c is a known channel.
func (c Channel) Valid() bool { return c == SMS || c == Email }

// Phone is a phone number in E.164 form ("+15550100001"). It never logs its
// value.
type Phone string

// LogValue keeps phone numbers out of logs.
func (Phone) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Address is a lower-cased email address. It never logs its value.
type Address string

// LogValue keeps email addresses out of logs.
func (Address) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// ProviderID is the provider's id for a message: a Twilio MessageSid, an
// email Message-ID, or an SMTP queue id.
type ProviderID string

// Attachment describes a file that came with a message. The gateway records
// it; it does not download or keep the content.
type Attachment struct {
	Name string `json:"name,omitempty"`
	Type string `json:"type,omitempty"`
	Size int64  `json:"size,omitempty"` // bytes; 0 when unknown
	URL  string `json:"url,omitempty"`  // MMS media URL, when the provider gave one
}

// Inbound is one message a client sent, as a channel adapter read it.
type Inbound struct {
	Channel    Channel
	ProviderID ProviderID // dedupe key within the channel; required
	From       string     // sender as the provider gave it; the gateway normalises it
	FromName   string     // display name, when the provider gave one
	To         string     // the practice number or address it was sent to
	Subject    string     // email only
	Text       string     // what triage and the digest read (quoted history trimmed)
	Original   string     // the full original text, when it differs from Text
	ReceivedAt time.Time  // when the provider received it; zero means now

	Attachments []Attachment

	// MessageID and References let replies thread (email only).
	MessageID  string
	References []string

	// Automated marks mail that must never be acknowledged: auto-replies,
	// bounces, lists (RFC 3834). It still reaches the digest.
	Automated bool
	// OptOut carries a provider's own opt-out signal (Twilio's OptOutType:
	// "STOP", "START" or "HELP"), when it sent one.
	OptOut string
	// BounceOf is set on a delivery status notification (RFC 3464): the
	// Message-ID, without angle brackets, of our outbound email it reports
	// as undeliverable. BounceStatus is its status code ("5.1.1").
	BounceOf     string
	BounceStatus string
	// RelayToken is the token from a per-client reply address
	// (practice+r-<token>@...) the message was sent to: the therapist
	// answering a client from the digest. AuthFailed names a failed
	// sender check from the mailbox server's Authentication-Results
	// ("dmarc=fail"); "" when none failed or none were reported.
	RelayToken string
	AuthFailed string
	// Notes are problems met while reading the message ("broken MIME: ...",
	// "over the size limit"); they are shown in the digest.
	Notes []string
}

// Kind says what an outbound message is for.
type Kind string

// The outbound kinds.
const (
	KindAck         Kind = "ack"          // full acknowledgement to a client
	KindAckRepeat   Kind = "ack_repeat"   // brief "got this one too"
	KindUrgentReply Kind = "urgent_reply" // reply to a client whose message sounded unsafe
	KindHelp        Kind = "help"         // reply to HELP
	KindOnCall      Kind = "oncall"       // forward of an urgent message to the on-call person
	KindEscalation  Kind = "escalation"   // a later page in the on-call chain
	KindDigest      Kind = "digest"       // the therapist's check-in digest
	KindNotice      Kind = "notice"       // operational notice to the practice
	KindRelay       Kind = "relay"        // therapist's reply relayed to a client
)

// Outbound is one message the gateway decided to send. The outbox worker
// hands it to the channel's Sender.
type Outbound struct {
	ID       int64 // outbox row id; stable across retries
	Channel  Channel
	Kind     Kind
	To       string // E.164 phone or email address
	ToName   string // display name for email, may be empty
	Subject  string // email only
	Text     string
	HTML     string // email only; when set the mail is multipart/alternative
	ClientID int64  // 0 when the recipient is not a client

	// InReplyTo and References thread an email reply to the client's message.
	InReplyTo  string
	References []string
}

// Sender delivers outbound messages on one channel.
type Sender interface {
	// Send delivers m and returns the provider's id for it. An error that
	// is (or wraps) a *PermanentError is never retried; any other error is
	// treated as transient.
	Send(ctx context.Context, m Outbound) (ProviderID, error)
}

// Handler takes an inbound message and returns once it is durably stored.
// Channels call it before confirming receipt to their provider.
type Handler interface {
	HandleInbound(ctx context.Context, in Inbound) error
}

// PermanentError is a send failure that retrying will not fix: an invalid
// number, an opted-out recipient, an SMTP 5xx. Code is the provider's code
// ("21610", "550 5.1.1"); Reason is short and holds no client content.
type PermanentError struct {
	Code   string
	Reason string
}

func (e *PermanentError) Error() string {
	if e.Code == "" {
		return "permanent: " + e.Reason
	}
	return fmt.Sprintf("permanent: %s (%s)", e.Reason, e.Code)
}

// Permanent returns a *PermanentError with the given code and reason.
func Permanent(code, reason string) error { return &PermanentError{Code: code, Reason: reason} }

// IsPermanent reports whether err is, or wraps, a *PermanentError.
func IsPermanent(err error) bool {
	var pe *PermanentError
	return errors.As(err, &pe)
}

// Status is a provider's delivery report for an outbound message, such as
// a Twilio status callback.
type Status struct {
	Channel    Channel
	ProviderID ProviderID // the id Send returned
	State      string     // Twilio's MessageStatus: queued, sent, delivered, undelivered, failed, ...
	ErrorCode  string     // provider's error code for failed and undelivered; "" otherwise
}

// StatusHandler records delivery reports.
type StatusHandler interface {
	HandleStatus(ctx context.Context, s Status) error
}
