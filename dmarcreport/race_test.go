//go:build race

package dmarcreport

const raceEnabled = true
