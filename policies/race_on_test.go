//go:build race

package policies

// raceDetector is true under go test -race.
const raceDetector = true
