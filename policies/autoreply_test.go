package policies

import "testing"

func TestAutomatedMail(t *testing.T) {
	ours := []string{"practice@example.org", "Dr.Rivera@Example.org"}
	person := "client@example.net"
	tests := []struct {
		name string
		h    map[string][]string
		from string
		want string
	}{
		{"person", map[string][]string{"Subject": {"Tuesday"}, "Return-Path": {"<client@example.net>"}}, person, ""},
		{"no headers", nil, person, ""},
		{"no from", nil, "", ""},

		{"own address", nil, "practice@example.org", "our own address"},
		{"own address, other case", nil, "dr.rivera@example.ORG", "our own address"},
		{"own address wins", map[string][]string{"Auto-Submitted": {"auto-replied"}}, "practice@example.org", "our own address"},

		{"auto-submitted no", map[string][]string{"Auto-Submitted": {"no"}}, person, ""},
		{"auto-submitted No with comment", map[string][]string{"Auto-Submitted": {"No (written by hand)"}}, person, ""},
		{"auto-replied", map[string][]string{"Auto-Submitted": {"auto-replied"}}, person, "auto-submitted: auto-replied"},
		{"auto-replied with params", map[string][]string{"Auto-Submitted": {"Auto-Replied; owner-email=\"x@example.net\""}}, person, "auto-submitted: auto-replied"},
		{"auto-generated", map[string][]string{"Auto-Submitted": {"auto-generated"}}, person, "auto-submitted: auto-generated"},
		{"auto-notified", map[string][]string{"Auto-Submitted": {"auto-notified"}}, person, "auto-submitted: auto-notified"},
		{"zimbra vacation", map[string][]string{"Auto-Submitted": {"auto-replied (zimbra; vacation)"}}, person, "auto-submitted: auto-replied"},
		{"unknown keyword", map[string][]string{"Auto-Submitted": {"yes"}}, person, "auto-submitted: yes"},
		{"empty auto-submitted", map[string][]string{"Auto-Submitted": {""}}, person, "auto-submitted"},
		{"odd auto-submitted value kept out of reason", map[string][]string{"Auto-Submitted": {"Jane's bot!"}}, person, "auto-submitted: other"},
		{"non-canonical key", map[string][]string{"auto-submitted": {"auto-replied"}}, person, "auto-submitted: auto-replied"},

		{"multipart/report", map[string][]string{"Content-Type": {"multipart/report; report-type=delivery-status; boundary=x"}}, person, "multipart/report"},
		{"multipart/mixed", map[string][]string{"Content-Type": {"multipart/mixed; boundary=x"}}, person, ""},

		{"empty return-path", map[string][]string{"Return-Path": {"<>"}}, person, "empty return-path"},
		{"blank return-path", map[string][]string{"Return-Path": {""}}, person, "empty return-path"},
		{"spaced empty return-path", map[string][]string{"Return-Path": {" < > "}}, person, "empty return-path"},
		{"topmost return-path counts", map[string][]string{"Return-Path": {"<client@example.net>", "<>"}}, person, ""},
		{"missing return-path is not automatic", map[string][]string{"Subject": {"hi"}}, person, ""},

		{"mailer-daemon", nil, "MAILER-DAEMON@mx.example.net", "sender: mailer-daemon"},
		{"mailer_daemon", nil, "mailer_daemon@example.net", "sender: mailer-daemon"},
		{"postmaster", nil, "postmaster@example.net", "sender: postmaster"},
		{"no-reply", nil, "no-reply@example.net", "sender: no-reply"},
		{"noreply", nil, "noreply@example.net", "sender: no-reply"},
		{"no_reply", nil, "no_reply@example.net", "sender: no-reply"},
		{"noreply with suffix", nil, "noreply-calendar@example.net", "sender: no-reply"},
		{"noreply sub-address", nil, "noreply+1234@example.net", "sender: no-reply"},
		{"donotreply", nil, "DoNotReply@example.net", "sender: no-reply"},
		{"do-not-reply", nil, "do-not-reply@example.net", "sender: no-reply"},
		{"list request", nil, "therapy-list-request@lists.example.net", "sender: list request address"},
		{"list owner", nil, "owner-therapy@lists.example.net", "sender: list owner"},
		{"listserv", nil, "LISTSERV@lists.example.net", "sender: list server"},
		{"majordomo", nil, "majordomo@lists.example.net", "sender: list server"},
		{"replying person is not no-reply", nil, "noah.reply@example.net", ""},
		{"postmaster lookalike", nil, "postmasters.union@example.net", ""},

		{"precedence bulk", map[string][]string{"Precedence": {"bulk"}}, person, "precedence: bulk"},
		{"precedence list", map[string][]string{"Precedence": {"List"}}, person, "precedence: list"},
		{"precedence junk", map[string][]string{"Precedence": {"junk"}}, person, "precedence: junk"},
		{"precedence auto_reply", map[string][]string{"Precedence": {"auto_reply"}}, person, "precedence: auto_reply"},
		{"x-precedence", map[string][]string{"X-Precedence": {"bulk"}}, person, "precedence: bulk"},
		{"precedence first-class", map[string][]string{"Precedence": {"first-class"}}, person, ""},

		{"list-id", map[string][]string{"List-Id": {"<therapy.lists.example.net>"}}, person, "list-id"},
		{"list-unsubscribe", map[string][]string{"List-Unsubscribe": {"<mailto:u@example.net>"}}, person, "list-unsubscribe"},
		{"list-subscribe", map[string][]string{"List-Subscribe": {"<mailto:s@example.net>"}}, person, "list-subscribe"},
		{"list-post", map[string][]string{"List-Post": {"<mailto:p@example.net>"}}, person, "list-post"},
		{"list-help", map[string][]string{"List-Help": {"<mailto:h@example.net>"}}, person, "list-help"},
		{"list-owner", map[string][]string{"List-Owner": {"<mailto:o@example.net>"}}, person, "list-owner"},
		{"list-archive", map[string][]string{"List-Archive": {"<https://example.net/a>"}}, person, "list-archive"},
		{"LIST-ID spelled oddly", map[string][]string{"LIST-ID": {"x"}}, person, "list-id"},

		{"x-autoreply", map[string][]string{"X-Autoreply": {"yes"}}, person, "x-autoreply"},
		{"x-autorespond", map[string][]string{"X-Autorespond": {"Out of office"}}, person, "x-autorespond"},
		{"x-autoresponder", map[string][]string{"X-Autoresponder": {""}}, person, "x-autoresponder"},
		{"x-autogenerated", map[string][]string{"X-Autogenerated": {"Reply"}}, person, "x-autogenerated"},
		{"x-autoreply no", map[string][]string{"X-Autoreply": {"no"}}, person, ""},
		{"x-loop", map[string][]string{"X-Loop": {"helpdesk@example.net"}}, person, "x-loop"},

		{"x-auto-response-suppress all", map[string][]string{"X-Auto-Response-Suppress": {"All"}}, person, "x-auto-response-suppress: all"},
		{"x-auto-response-suppress list with all", map[string][]string{"X-Auto-Response-Suppress": {"DR, All"}}, person, "x-auto-response-suppress: all"},
		{"x-auto-response-suppress partial is a person", map[string][]string{"X-Auto-Response-Suppress": {"DR, OOF, AutoReply"}}, person, ""},
		{"x-auto-response-suppress none", map[string][]string{"X-Auto-Response-Suppress": {"None"}}, person, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AutomatedMail(tt.h, tt.from, ours); got != tt.want {
				t.Fatalf("AutomatedMail() = %q, want %q", got, tt.want)
			}
		})
	}
}
