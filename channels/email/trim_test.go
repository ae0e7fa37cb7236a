package email

import (
	"strings"
	"testing"
)

func TestTrimReply(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // "" means: unchanged, cut == false
	}{
		{
			name: "plain message",
			in:   "Can we move Tuesday to 4pm?\n\nThanks,\nSam",
		},
		{
			name: "gmail attribution and quote",
			in: "Yes, Thursday works.\n\nOn Mon, Mar 3, 2025 at 10:00 AM Dr. Rivera <practice@example.org> wrote:\n" +
				"> Thank you for your message.\n> I will read it on Wednesday morning.\n",
			want: "Yes, Thursday works.",
		},
		{
			name: "gmail attribution wrapped over two lines",
			in: "See you then.\r\n\r\nOn Mon, Mar 3, 2025 at 10:00 AM Dr. Rivera's practice <\r\npractice@example.org> wrote:\r\n\r\n" +
				"> Thank you for your message.\r\n",
			want: "See you then.",
		},
		{
			name: "apple mail attribution",
			in:   "Running late, sorry.\n\nSent from my iPhone\n\n> On 3 Mar 2025, at 10:00, Dr. Rivera <practice@example.org> wrote:\n>\n> Thank you.\n",
			want: "Running late, sorry.",
		},
		{
			name: "apple mail attribution unquoted",
			in:   "Running late.\n\nOn 3 Mar 2025, at 10:00, Dr. Rivera <practice@example.org> wrote:\n\n> Thank you.\n",
			want: "Running late.",
		},
		{
			name: "spanish attribution",
			in: "Gracias, nos vemos el jueves.\n\nEl lun, 3 mar 2025 a las 10:00, Consulta (<practice@example.org>) escribió:\n" +
				"> Gracias por su mensaje.\n",
			want: "Gracias, nos vemos el jueves.",
		},
		{
			name: "spanish attribution wrapped",
			in:   "Gracias.\n\nEl lun, 3 mar 2025 a las 10:00, Consulta de la Dra. Rivera\n(<practice@example.org>) escribió:\n\n> Gracias.\n",
			want: "Gracias.",
		},
		{
			name: "french attribution",
			in:   "Merci, à jeudi.\n\nLe lun. 3 mars 2025 à 10:00, Cabinet <practice@example.org> a écrit :\n> Merci pour votre message.\n",
			want: "Merci, à jeudi.",
		},
		{
			name: "german attribution",
			in:   "Danke, bis Donnerstag.\n\nAm Mo., 3. März 2025 um 10:00 Uhr schrieb Praxis <practice@example.org>:\n> Danke für Ihre Nachricht.\n",
			want: "Danke, bis Donnerstag.",
		},
		{
			name: "outlook original message",
			in: "I can't make it this week.\r\n\r\n-----Original Message-----\r\nFrom: Dr. Rivera <practice@example.org>\r\n" +
				"Sent: Monday, March 3, 2025 10:00 AM\r\nTo: Sam <sam@example.net>\r\nSubject: Re: Tuesday\r\n\r\nThank you for your message.\r\n",
			want: "I can't make it this week.",
		},
		{
			name: "outlook separator and header block",
			in: "I can't make it.\n\nGet Outlook for iOS\n________________________________\nFrom: Dr. Rivera <practice@example.org>\n" +
				"Sent: Monday, March 3, 2025 10:00:00 AM\nTo: sam@example.net\nSubject: Re: Tuesday\n\nThank you for your message.\n",
			want: "I can't make it.",
		},
		{
			name: "outlook header block from html, bold",
			in: "Fine by me.\n\n*From:* Dr. Rivera <practice@example.org>\n*Sent:* Monday, March 3, 2025 10:00 AM\n" +
				"*To:* Sam\n*Subject:* Re: Tuesday\n\nThank you.\n",
			want: "Fine by me.",
		},
		{
			name: "spanish outlook header block",
			in: "No puedo ir.\n\nDe: Consulta <practice@example.org>\nEnviado: lunes, 3 de marzo de 2025 10:00\n" +
				"Para: sam@example.net\nAsunto: Re: martes\n\nGracias.\n",
			want: "No puedo ir.",
		},
		{
			name: "html attribution with unquoted history",
			in:   "Thanks!\n\nOn Mon, Mar 3, 2025 at 10:00 AM Dr. Rivera <practice@example.org> wrote:\nThank you for your message. I will read it on Wednesday.\n",
			want: "Thanks!",
		},
		{
			name: "inline answers below quotes are kept",
			in: "On Mon, Mar 3, 2025 at 10:00 AM Dr. Rivera <practice@example.org> wrote:\n> How have you been sleeping?\n\n" +
				"Badly, I'm scared of tonight.\n\n> Can you come Thursday?\n\nYes.\n",
			want: "Badly, I'm scared of tonight.\n\nYes.",
		},
		{
			name: "signature",
			in:   "See you Thursday.\n\n-- \nSam Example\nsam@example.net\n+1 555 0100\n",
			want: "See you Thursday.",
		},
		{
			name: "signature without the space",
			in:   "See you Thursday.\n--\nSam\n",
			want: "See you Thursday.",
		},
		{
			name: "long text below dashes is not a signature",
			in:   "Part one.\n--\n" + strings.Repeat("I have more to say about this week and I keep writing.\n", 12),
		},
		{
			name: "sent from my iphone",
			in:   "On my way.\n\nSent from my iPhone",
			want: "On my way.",
		},
		{
			name: "enviado desde mi iphone",
			in:   "Voy en camino.\n\nEnviado desde mi iPhone\n",
			want: "Voy en camino.",
		},
		{
			name: "sent from my android",
			in:   "ok\n\nSent from my Android phone",
			want: "ok",
		},
		{
			name: "forwarded message is kept",
			in: "This is what my sister sent me.\n\n---------- Forwarded message ---------\nFrom: Ana <ana@example.net>\n" +
				"Date: Mon, Mar 3, 2025 at 9:00 AM\nSubject: hi\nTo: <sam@example.net>\n\nAre you OK?\n",
		},
		{
			name: "'On Monday ... wrote:' without a date is the person's text",
			in:   "On Monday my sister wrote:\nthat she is worried about me.\n",
		},
		{
			name: "only quoted text is returned as is",
			in:   "> Thank you for your message.\n> See you.\n",
		},
		{
			name: "only a signature is returned as is",
			in:   "-- \nSam",
		},
		{
			name: "empty",
			in:   "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, cut := TrimReply(tt.in)
			if tt.want == "" {
				if cut || got != tt.in {
					t.Fatalf("TrimReply() = %q, %v; want the input unchanged, false", got, cut)
				}
				return
			}
			if !cut || got != tt.want {
				t.Fatalf("TrimReply() = %q, %v; want %q, true", got, cut, tt.want)
			}
		})
	}
}

// The relay of a therapist's reply reuses TrimReply: top-posted therapist
// text above the client's quoted message.
func TestTrimReplyTherapist(t *testing.T) {
	in := "Hi Sam,\n\nThursday at 4 is fine.\n\nBest,\nDr. Rivera\n\n" +
		"On Tue, Mar 4, 2025 at 8:12 AM Sam <sam@example.net> wrote:\n> Can we meet Thursday?\n"
	got, cut := TrimReply(in)
	want := "Hi Sam,\n\nThursday at 4 is fine.\n\nBest,\nDr. Rivera"
	if !cut || got != want {
		t.Fatalf("TrimReply() = %q, %v; want %q", got, cut, want)
	}
}
