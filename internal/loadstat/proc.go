package loadstat

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Usage is what a process has used so far: its CPU time (user and
// system) and its resident memory, from /proc.
type Usage struct {
	CPU time.Duration
	RSS int64 // bytes
	At  time.Time
}

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc.
const clockTicks = 100

// ReadUsage reads a process's usage from /proc/PID.
func ReadUsage(pid int) (Usage, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Usage{}, fmt.Errorf("loadstat: %w", err)
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after its closing parenthesis (field 3, the state).
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Usage{}, fmt.Errorf("loadstat: /proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 22 {
		return Usage{}, fmt.Errorf("loadstat: /proc/%d/stat: %d fields", pid, len(f))
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)    // field 14
	stime, _ := strconv.ParseInt(f[12], 10, 64)    // field 15
	rssPages, _ := strconv.ParseInt(f[21], 10, 64) // field 24
	return Usage{
		CPU: time.Duration(utime+stime) * time.Second / clockTicks,
		RSS: rssPages * int64(os.Getpagesize()),
		At:  time.Now(),
	}, nil
}

// PrintUsage says what the process used between two readings for n
// units of work (messages, requests).
func PrintUsage(w io.Writer, pid int, before, after Usage, n int, unit string) {
	cpu := after.CPU - before.CPU
	wall := after.At.Sub(before.At)
	per := time.Duration(0)
	if n > 0 {
		per = cpu / time.Duration(n)
	}
	share := 0.0
	if wall > 0 {
		share = 100 * cpu.Seconds() / wall.Seconds()
	}
	fmt.Fprintf(w, "  process %d: CPU %v per %s (%.0f%% of a core), RSS %.1f MB\n",
		pid, per.Round(time.Microsecond), unit, share, float64(after.RSS)/(1<<20))
}

// Memory is a process's resident memory in its parts (/proc/PID/status):
// anonymous (heap, stacks) and file-backed (the binary, mapped files
// such as an embedded store's database).
type Memory struct{ Anon, File int64 }

// ReadMemory reads a process's resident memory.
func ReadMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("loadstat: %w", err)
	}
	var m Memory
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var kb int64
		fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb)
		switch k {
		case "RssAnon":
			m.Anon = kb << 10
		case "RssFile", "RssShmem":
			m.File += kb << 10
		}
	}
	return m, nil
}
