package standby

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// PrimarySide is what the primary says of the standby. Error is set when
// the question could not be asked (connecting, a query, missing
// privileges); the rest is what was read before it.
type PrimarySide struct {
	// Target is where the report connected: host, port, database and
	// user, never a password.
	Target string `json:"target"`
	Error  string `json:"error,omitempty"`
	// InRecovery is true when the "primary" is itself a standby (a
	// failover happened, or --primary names the wrong server).
	InRecovery bool `json:"in_recovery"`
	// CurrentLSN is pg_current_wal_lsn(): how far the primary has
	// written WAL, read after the slot and the sender, so that it is at or
	// past every position they show.
	CurrentLSN string `json:"current_lsn,omitempty"`
	// Slot is the replication slot; nil when there is no such slot
	// (OtherSlots lists the ones there are).
	Slot       *Slot    `json:"slot"`
	OtherSlots []string `json:"other_slots,omitempty"`
	// Sender is the WAL sender streaming from the slot (its active_pid in
	// pg_stat_replication); nil when nothing streams from it.
	Sender *Sender `json:"sender"`
}

// Slot is the slot's row of pg_replication_slots.
type Slot struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Active bool   `json:"active"`
	// RestartLSN is the oldest WAL the slot keeps; null once invalidated.
	RestartLSN *string `json:"restart_lsn"`
	// WALStatus: reserved (within max_wal_size), extended (beyond it,
	// within max_slot_wal_keep_size), unreserved (past the bound, to be
	// removed at the next checkpoint) or lost (invalidated).
	WALStatus *string `json:"wal_status"`
	// SafeWALSizeBytes is how much more WAL the primary can write before
	// the slot is invalidated; null without a bound, or once invalidated.
	SafeWALSizeBytes *int64 `json:"safe_wal_size_bytes"`
	// RetainedBytes is current - restart_lsn: the WAL the slot keeps on
	// the primary's disk.
	RetainedBytes *int64 `json:"retained_bytes"`
}

// Sender is the standby's row of pg_stat_replication. The positions are
// the standby's last reply: WAL it has written, flushed to its disk and
// replayed. The *BehindBytes are the primary's current position minus
// each (pg_wal_lsn_diff): ReplayBehindBytes is the WAL a query on the
// standby cannot yet see, FlushBehindBytes what a failover now would lose.
type Sender struct {
	PID             int32   `json:"pid"`
	ApplicationName string  `json:"application_name"`
	ClientAddr      string  `json:"client_addr"`
	State           string  `json:"state"`
	SyncState       string  `json:"sync_state"`
	SentLSN         *string `json:"sent_lsn"`
	WriteLSN        *string `json:"write_lsn"`
	FlushLSN        *string `json:"flush_lsn"`
	ReplayLSN       *string `json:"replay_lsn"`

	SentBehindBytes   *int64 `json:"sent_behind_bytes"`
	WriteBehindBytes  *int64 `json:"write_behind_bytes"`
	FlushBehindBytes  *int64 `json:"flush_behind_bytes"`
	ReplayBehindBytes *int64 `json:"replay_behind_bytes"`

	// WriteLagSeconds, FlushLagSeconds and ReplayLagSeconds are
	// pg_stat_replication's write_lag, flush_lag and replay_lag: the time
	// between the primary flushing recent WAL and the standby reporting it
	// written, flushed, replayed (PostgreSQL samples WAL positions with
	// their flush times and matches the standby's replies against them, so
	// a stuck standby shows a growing lag). PostgreSQL sets them to NULL
	// once the standby has reported everything sent as replayed (an idle
	// primary), and they are NULL before any sample: see
	// Report.LagSeconds for what the check makes of that.
	WriteLagSeconds  *float64 `json:"write_lag_seconds"`
	FlushLagSeconds  *float64 `json:"flush_lag_seconds"`
	ReplayLagSeconds *float64 `json:"replay_lag_seconds"`
}

// errNoStats is the missing privilege behind NULL statistics columns.
var errNoStats = errors.New("the role cannot read other sessions' statistics (PostgreSQL hides them): grant it pg_monitor")

// askPrimary fills side from conn.
func askPrimary(ctx context.Context, conn *pgx.Conn, slot string, side *PrimarySide) error {
	if err := conn.QueryRow(ctx, "SELECT pg_catalog.pg_is_in_recovery()").Scan(&side.InRecovery); err != nil {
		return err
	}
	if side.InRecovery {
		return nil // no current position, no walsender of its own to read
	}
	s := Slot{Name: slot}
	var (
		snd      Sender
		sndPID   *int32
		sndState *string
		addr     *string
		appName  *string
		sync     *string
	)
	err := conn.QueryRow(ctx, `
SELECT s.slot_type, s.active, s.restart_lsn::text, s.wal_status, s.safe_wal_size,
       r.pid, r.application_name, host(r.client_addr), r.state, r.sync_state,
       r.sent_lsn::text, r.write_lsn::text, r.flush_lsn::text, r.replay_lsn::text,
       extract(epoch FROM r.write_lag)::float8, extract(epoch FROM r.flush_lag)::float8,
       extract(epoch FROM r.replay_lag)::float8
FROM pg_catalog.pg_replication_slots s
LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid
WHERE s.slot_name = $1`, slot).Scan(
		&s.Type, &s.Active, &s.RestartLSN, &s.WALStatus, &s.SafeWALSizeBytes,
		&sndPID, &appName, &addr, &sndState, &sync,
		&snd.SentLSN, &snd.WriteLSN, &snd.FlushLSN, &snd.ReplayLSN,
		&snd.WriteLagSeconds, &snd.FlushLagSeconds, &snd.ReplayLagSeconds)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if err := conn.QueryRow(ctx, "SELECT coalesce(array_agg(slot_name::text ORDER BY slot_name), '{}') FROM pg_catalog.pg_replication_slots").Scan(&side.OtherSlots); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		side.Slot = &s
		if sndPID != nil {
			if sndState == nil {
				return errNoStats
			}
			snd.PID, snd.State = *sndPID, *sndState
			snd.ApplicationName, snd.ClientAddr, snd.SyncState = deref(appName), deref(addr), deref(sync)
			side.Sender = &snd
		}
	}
	// After the slot and the sender: the current position is then at or
	// past every position they show.
	if err := conn.QueryRow(ctx, "SELECT pg_catalog.pg_current_wal_lsn()::text").Scan(&side.CurrentLSN); err != nil {
		return err
	}
	current, err := parseLSN(side.CurrentLSN)
	if err != nil {
		return err
	}
	if side.Slot != nil {
		restart, err := parseLSNs(side.Slot.RestartLSN)
		if err != nil {
			return err
		}
		side.Slot.RetainedBytes = behind(&current, restart[0])
	}
	if snd := side.Sender; snd != nil {
		p, err := parseLSNs(snd.SentLSN, snd.WriteLSN, snd.FlushLSN, snd.ReplayLSN)
		if err != nil {
			return fmt.Errorf("pg_stat_replication: %w", err)
		}
		snd.SentBehindBytes, snd.WriteBehindBytes = behind(&current, p[0]), behind(&current, p[1])
		snd.FlushBehindBytes, snd.ReplayBehindBytes = behind(&current, p[2]), behind(&current, p[3])
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
