package email

import (
	"github.com/therapistinbox/gateway/gateway/envelope"
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
func Parse(raw []byte, size int64, opts ParseOptions) envelope.Inbound {
	// Contract stub; replaced by the MIME work.
	return envelope.Inbound{Channel: envelope.Email, Text: string(raw)}
}
