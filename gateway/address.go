package gateway

import (
	"fmt"
	"net/mail"
	"strings"

	"github.com/nyaruka/phonenumbers"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// NormalizePhone returns raw in E.164 form, reading national numbers in
// region (an ISO 3166 code such as "US"), so "(555) 010-0001" and
// "+15550100001" name one client.
func NormalizePhone(raw, region string) (envelope.Phone, error) {
	n, err := phonenumbers.Parse(strings.TrimSpace(raw), strings.ToUpper(region))
	if err != nil {
		return "", fmt.Errorf("not a phone number: %w", err)
	}
	if !phonenumbers.IsPossibleNumber(n) {
		return "", fmt.Errorf("not a possible phone number")
	}
	return envelope.Phone(phonenumbers.Format(n, phonenumbers.E164)), nil
}

// NormalizeEmail returns the bare, lower-cased address in raw, which may
// carry a display name ("Ana <Ana@Example.org>").
func NormalizeEmail(raw string) (envelope.Address, error) {
	a, err := mail.ParseAddress(strings.TrimSpace(raw))
	if err != nil {
		return "", fmt.Errorf("not an email address: %w", err)
	}
	return envelope.Address(strings.ToLower(a.Address)), nil
}

// normalizeSender gives the address a client is filed under. A sender that
// does not parse (an alphanumeric SMS sender id, a broken From header) is
// kept as written, lower-cased, so the message is never lost.
func normalizeSender(ch envelope.Channel, raw, region string) string {
	switch ch {
	case envelope.SMS:
		if p, err := NormalizePhone(raw, region); err == nil {
			return string(p)
		}
	case envelope.Email:
		if a, err := NormalizeEmail(raw); err == nil {
			return string(a)
		}
	}
	return strings.ToLower(strings.TrimSpace(raw))
}
