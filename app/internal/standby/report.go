package standby

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Check is one verdict.
type Check struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Detail says what was found, and on failure what was expected.
	Detail string `json:"detail"`
}

// Report is the verdict on one standby. OK is false when any check
// failed; monitoring reads OK (or the exit status), humans the checks,
// and a metric the figures.
type Report struct {
	Slot      string    `json:"slot"`
	CheckedAt time.Time `json:"checked_at"`
	OK        bool      `json:"ok"`
	Policy    struct {
		MaxLagBytes   int64   `json:"max_lag_bytes"`
		MaxLagSeconds float64 `json:"max_lag_seconds"`
	} `json:"policy"`
	// LagBytes and LagSeconds are figures the lag checks judged, for a
	// metric: the primary's (how far the standby's replay is behind the
	// primary's current position) when the primary gave them, the
	// standby's otherwise (how far its replay is behind what it
	// received). Null when neither is known.
	LagBytes   *int64       `json:"lag_bytes"`
	LagSeconds *float64     `json:"lag_seconds"`
	Primary    *PrimarySide `json:"primary,omitempty"`
	Standby    *StandbySide `json:"standby,omitempty"`
	Checks     []Check      `json:"checks"`
}

func (r *Report) add(name string, ok bool, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
}

// lagSeconds is the primary's time lag the check judges: replay_lag when
// PostgreSQL has it. NULL means the standby has replayed everything sent
// and the primary has written nothing since (PostgreSQL clears the lag
// once the standby's replies show nothing left, as on an idle primary):
// 0 then, when replay_lsn is sent_lsn. NULL while replay is behind what
// was sent (a WAL sender that has not yet sampled a flush, just after
// it started): unknown, nil.
func (s *Sender) lagSeconds() *float64 {
	switch {
	case s.ReplayLagSeconds != nil:
		return s.ReplayLagSeconds
	case s.ReplayBehindBytes != nil && s.SentBehindBytes != nil && *s.ReplayBehindBytes == *s.SentBehindBytes:
		return new(float64)
	}
	return nil
}

// judgePrimary adds the primary's checks: primary, primary_slot,
// primary_streaming, primary_lag_bytes, primary_lag_time.
func (r *Report) judgePrimary(side *PrimarySide, o Options) {
	switch {
	case side.Error != "":
		r.add("primary", false, "%s: %s", side.Target, side.Error)
		return
	case side.InRecovery:
		r.add("primary", false, "%s is in recovery: a standby, not the primary (was it promoted elsewhere, or is it the wrong server?)", side.Target)
		return
	}
	r.add("primary", true, "%s, WAL written up to %s", side.Target, side.CurrentLSN)

	switch s := side.Slot; {
	case s == nil:
		others := "none"
		if len(side.OtherSlots) > 0 {
			others = strings.Join(side.OtherSlots, ", ")
		}
		r.add("primary_slot", false, "no replication slot %q on the primary (slots: %s)", o.Slot, others)
	case s.Type != "physical":
		r.add("primary_slot", false, "slot %s is a %s slot, not a physical one", s.Name, s.Type)
	case s.WALStatus != nil && *s.WALStatus == "lost":
		r.add("primary_slot", false, "slot %s was invalidated (wal_status lost): the standby was away for more WAL than max_slot_wal_keep_size. Started, it catches up from the repository and streams through the slot again (PostgreSQL 15 takes it back); if it does not, drop the slot and create it again", s.Name)
	case s.WALStatus != nil && *s.WALStatus == "unreserved":
		r.add("primary_slot", false, "slot %s keeps %s, past max_slot_wal_keep_size (wal_status unreserved): the next checkpoint invalidates it", s.Name, bytesOrUnknown(s.RetainedBytes))
	default:
		r.add("primary_slot", true, "slot %s keeps %s of WAL (wal_status %s; %s more before it is invalidated)",
			s.Name, bytesOrUnknown(s.RetainedBytes), deref(s.WALStatus), bytesOrUnknown(s.SafeWALSizeBytes))
	}

	snd := side.Sender
	switch {
	case side.Slot == nil:
		r.add("primary_streaming", false, "no slot, so no standby streams through it")
	case snd == nil && side.Slot.RetainedBytes == nil:
		r.add("primary_streaming", false, "no standby streams from slot %s (inactive)", side.Slot.Name)
	case snd == nil:
		r.add("primary_streaming", false, "no standby streams from slot %s (inactive; it keeps %s of WAL for the standby)", side.Slot.Name, formatBytes(*side.Slot.RetainedBytes))
	case snd.State != "streaming":
		r.add("primary_streaming", false, "the WAL sender %d to %s is %s, not streaming", snd.PID, snd.ClientAddr, snd.State)
	default:
		r.add("primary_streaming", true, "WAL sender %d streams to %s (application_name %s, %s)", snd.PID, snd.ClientAddr, snd.ApplicationName, snd.SyncState)
	}

	if snd == nil || snd.ReplayBehindBytes == nil {
		r.add("primary_lag_bytes", false, "unknown: no standby reports its replay to the primary")
		r.add("primary_lag_time", false, "unknown: no standby reports its replay to the primary")
		return
	}
	r.LagBytes = snd.ReplayBehindBytes
	r.add("primary_lag_bytes", *snd.ReplayBehindBytes <= o.MaxLagBytes, "replay %s behind the primary (flushed %s behind, sent %s behind; max %s)",
		formatBytes(*snd.ReplayBehindBytes), bytesOrUnknown(snd.FlushBehindBytes), bytesOrUnknown(snd.SentBehindBytes), formatBytes(o.MaxLagBytes))
	lag := snd.lagSeconds()
	switch {
	case lag == nil:
		r.add("primary_lag_time", false, "unknown: replay_lag is NULL (not measured yet) while replay is %s behind what was sent", bytesOrUnknown(diff(snd.ReplayBehindBytes, snd.SentBehindBytes)))
	case snd.ReplayLagSeconds == nil:
		r.LagSeconds = lag
		r.add("primary_lag_time", true, "replay lag 0s: the standby has replayed everything sent (replay_lag NULL: nothing new since; max %s)", o.MaxLag)
	default:
		r.LagSeconds = lag
		r.add("primary_lag_time", seconds(*lag) <= o.MaxLag, "replay lag %s (flush lag %s; max %s)", seconds(*lag), secondsOrUnknown(snd.FlushLagSeconds), o.MaxLag)
	}
}

// judgeStandby adds the standby's checks: standby, standby_receiver,
// standby_replay_bytes, standby_replay_time. Its figures become the
// report's only when the primary gave none.
func (r *Report) judgeStandby(side *StandbySide, o Options) {
	switch {
	case side.Error != "":
		r.add("standby", false, "%s: %s", side.Target, side.Error)
		return
	case !side.InRecovery:
		r.add("standby", false, "%s is not in recovery: it was promoted (or is not a standby)", side.Target)
		return
	}
	paused := ""
	if side.ReplayPauseState != "" && side.ReplayPauseState != "not paused" {
		paused = " (replay " + side.ReplayPauseState + ")"
	}
	r.add("standby", true, "%s in recovery, replayed up to %s%s", side.Target, deref(side.ReplayLSN), paused)

	switch rcv := side.Receiver; {
	case rcv == nil:
		r.add("standby_receiver", false, "no WAL receiver: the standby is not connected to a primary (it replays from the repository, if at all)")
	case rcv.Status != "streaming":
		r.add("standby_receiver", false, "the WAL receiver is %s, not streaming", rcv.Status)
	case rcv.SlotName != o.Slot:
		r.add("standby_receiver", false, "the WAL receiver streams through slot %q, not %q", rcv.SlotName, o.Slot)
	default:
		r.add("standby_receiver", true, "streaming from %s:%d through slot %s, flushed up to %s", rcv.SenderHost, rcv.SenderPort, rcv.SlotName, deref(rcv.FlushedLSN))
	}

	if side.ReplayBehindBytes == nil {
		r.add("standby_replay_bytes", false, "unknown: the standby has not received WAL by streaming")
	} else {
		r.add("standby_replay_bytes", *side.ReplayBehindBytes <= o.MaxLagBytes, "replay %s behind what the standby received%s (max %s)",
			formatBytes(*side.ReplayBehindBytes), paused, formatBytes(o.MaxLagBytes))
	}
	if side.ReplayDelaySeconds == nil {
		r.add("standby_replay_time", false, "unknown: WAL waits for replay but no transaction was replayed since the standby started")
	} else {
		r.add("standby_replay_time", seconds(*side.ReplayDelaySeconds) <= o.MaxLag, "replay %s behind the newest commit it received%s (max %s)",
			seconds(*side.ReplayDelaySeconds), paused, o.MaxLag)
	}
	// judgePrimary ran first: its figures, when it had them, stay.
	if r.LagBytes == nil {
		r.LagBytes = side.ReplayBehindBytes
	}
	if r.LagSeconds == nil {
		r.LagSeconds = side.ReplayDelaySeconds
	}
}

func diff(a, b *int64) *int64 {
	if a == nil || b == nil {
		return nil
	}
	d := *a - *b
	return &d
}

// seconds is a number of seconds as a readable duration (ms precision).
func seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond)
}

func secondsOrUnknown(s *float64) string {
	if s == nil {
		return "unknown"
	}
	return seconds(*s).String()
}

// formatBytes writes n in binary units: "0 B", "512 B", "1.5 MiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), 0
	for v >= unit*unit || v <= -unit*unit {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v/unit, "KMGTPE"[i])
}

func bytesOrUnknown(n *int64) string {
	if n == nil {
		return "unknown"
	}
	return formatBytes(*n)
}

// WriteText writes the report for a human: one line per check, then the
// verdict.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "standby of slot %s (checked %s; max lag %s, %s)\n", r.Slot, r.CheckedAt.Format(time.RFC3339),
		formatBytes(r.Policy.MaxLagBytes), seconds(r.Policy.MaxLagSeconds))
	for _, c := range r.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "  %s %-20s %s\n", mark, c.Name, c.Detail)
	}
	if r.OK {
		b.WriteString("the standby is streaming within the thresholds\n")
	} else {
		b.WriteString("the standby is NOT OK\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
