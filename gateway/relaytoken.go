package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/base32"
	"encoding/binary"
	"strings"
	"time"
)

// Relay tokens: the part of a per-client reply address
// ("practice+r-<token>@example.org") that says which client and digest a
// therapist's email answers.
const (
	// DefaultRelayTTL is how long a digest's reply addresses work when
	// Practice.RelayTTL is zero (14 days).
	DefaultRelayTTL = 14 * 24 * time.Hour
	// relayMACSize is the bytes of HMAC-SHA256 kept (80 bits): the token
	// is one of two checks, with the sender's address, and is never
	// guessable in the number of tries a mailbox allows.
	relayMACSize = 10
	// relayTag separates the token from the local part of the practice
	// address.
	relayTag = "+r-"
)

// relayDomain derives the relay key from the link key, so the two MACs
// can never stand in for each other.
const relayDomain = "therapistinbox relay token v1"

// b32 is lowercase-safe base32 without padding: mail systems may lowercase
// local parts, and base32 survives that where base64 would not.
var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// relayToken is what a reply address carries.
type relayToken struct {
	clientID, digestID int64
	expires            time.Time // to the minute
}

// sign returns the token: varint client, varint digest, expiry in unix
// minutes (4 bytes) and the MAC, as lowercase base32. For ids under 128
// it is 26 characters, so the local part stays well under RFC 5321's 64.
func (t relayToken) sign(key []byte) string {
	p := binary.AppendUvarint(nil, uint64(t.clientID))
	p = binary.AppendUvarint(p, uint64(t.digestID))
	p = binary.BigEndian.AppendUint32(p, uint32(t.expires.Unix()/60))
	return strings.ToLower(b32.EncodeToString(append(p, relayMAC(key, p)...)))
}

func relayMAC(key, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	return m.Sum(nil)[:relayMACSize]
}

// parseRelayToken checks s's MAC (in constant time) and returns what it
// carries; expiry is the caller's to check.
func parseRelayToken(key []byte, s string) (relayToken, bool) {
	if len(key) == 0 || len(s) > 64 {
		return relayToken{}, false
	}
	s = strings.ToLower(strings.TrimSpace(s))
	b, err := b32.DecodeString(strings.ToUpper(s))
	// Only the one spelling sign gives: base32's unused trailing bits
	// would otherwise let several addresses stand for one token.
	if err != nil || len(b) < 2+4+relayMACSize || strings.ToLower(b32.EncodeToString(b)) != s {
		return relayToken{}, false
	}
	p, mac := b[:len(b)-relayMACSize], b[len(b)-relayMACSize:]
	if !hmac.Equal(mac, relayMAC(key, p)) {
		return relayToken{}, false
	}
	client, n := binary.Uvarint(p)
	if n <= 0 {
		return relayToken{}, false
	}
	digest, m := binary.Uvarint(p[n:])
	if m <= 0 || len(p[n+m:]) != 4 {
		return relayToken{}, false
	}
	mins := binary.BigEndian.Uint32(p[n+m:])
	return relayToken{clientID: int64(client), digestID: int64(digest), expires: time.Unix(int64(mins)*60, 0)}, true
}

// relayKey is the key that signs reply addresses, derived from the link
// key (Practice.AckKey or the one kept in the store). With create false a
// missing key gives nil.
func (p Practice) relayKey(ctx context.Context, tx *sql.Tx, now time.Time, create bool) ([]byte, error) {
	k, err := p.ackKey(ctx, tx, now, create)
	if err != nil || k == nil {
		return nil, err
	}
	m := hmac.New(sha256.New, k)
	m.Write([]byte(relayDomain))
	return m.Sum(nil), nil
}

func (p Practice) relayTTL() time.Duration {
	if p.RelayTTL <= 0 {
		return DefaultRelayTTL
	}
	return p.RelayTTL
}

// relayAddress builds the reply address for token, or "" when the
// practice has no usable address.
func (p Practice) relayAddress(token string) string {
	local, domain, ok := strings.Cut(strings.TrimSpace(p.address()), "@")
	if !ok || local == "" || domain == "" {
		return ""
	}
	return local + relayTag + token + "@" + domain
}

// address is Practice.Address without any display name.
func (p Practice) address() string {
	if a, err := NormalizeEmail(p.Address); err == nil {
		return string(a)
	}
	return ""
}

// RelayAddress returns a reply address for the client in the digest, valid
// for Practice.RelayTTL from now: mail from the therapist or an on-call
// person to it is relayed to the client. It returns "" when
// Practice.Address is not set.
func (g *Digester) RelayAddress(ctx context.Context, clientID, digestID int64) (string, error) {
	var addr string
	err := g.Store.tx(ctx, func(tx *sql.Tx, now time.Time) error {
		var err error
		addr, err = g.Practice.newRelayAddress(ctx, tx, now, clientID, digestID)
		return err
	})
	return addr, err
}

// newRelayAddress is RelayAddress inside tx.
func (p Practice) newRelayAddress(ctx context.Context, tx *sql.Tx, now time.Time, clientID, digestID int64) (string, error) {
	if p.address() == "" {
		return "", nil
	}
	key, err := p.relayKey(ctx, tx, now, true)
	if err != nil {
		return "", err
	}
	t := relayToken{clientID: clientID, digestID: digestID, expires: now.Add(p.relayTTL()).Truncate(time.Minute)}
	return p.relayAddress(t.sign(key)), nil
}
