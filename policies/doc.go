// Package policies holds the gateway's pure decisions: safety triage, the
// wording of acknowledgements and when to send them, and SMS opt-out
// keywords.
//
// Everything here takes plain values and returns values; nothing does I/O
// or reads the clock (time is passed in), so the gateway can call it inside
// a transaction and tests can pin every input. The package imports the
// standard library only.
package policies
