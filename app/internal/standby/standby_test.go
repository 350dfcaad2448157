package standby_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/standby"
	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/pgbackrest"
)

// TestStandby makes a real primary and standby (newPair) and runs the
// status against them: streaming, under a steady write load, with bad
// input, with the standby's replay paused past --max-lag-bytes, and with
// the standby stopped.
func TestStandby(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()

	t.Run("restored from the repository, it streams through the slot", func(t *testing.T) {
		_, err := os.Stat(filepath.Join(p.standby.Data, "standby.signal"))
		require.NoError(t, err, "pgBackRest's --type=standby wrote standby.signal")
		auto, err := os.ReadFile(filepath.Join(p.standby.Data, "postgresql.auto.conf"))
		require.NoError(t, err)
		recovery, err := p.params.RecoverySettings()
		require.NoError(t, err)
		for _, line := range strings.Split(strings.TrimSpace(pgbackrest.PostgresConf(recovery)), "\n") {
			assert.Contains(t, string(auto), line+"\n", "pgBackRest wrote the rendered setting as is")
		}
		assert.NotContains(t, string(auto), "replication-", "no password in postgresql.auto.conf")
		assert.NotContains(t, string(auto), p.superPassword)
		log, err := os.ReadFile(p.standby.Log)
		require.NoError(t, err)
		assert.Regexp(t, `restored log file "[0-9A-F]{24}" from archive`, string(log), "restore_command (archive-get) fetched the backup's WAL from repo1")

		assert.Equal(t, "streaming|"+conventions.StandbySlot+"|t|reserved",
			p.primary.Psql("SELECT r.state, r.application_name, s.active, s.wal_status FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid"))
		assert.Equal(t, "t|streaming|"+conventions.StandbySlot, p.standby.Psql("SELECT pg_is_in_recovery(), status, slot_name FROM pg_stat_wal_receiver"))
		assert.Equal(t, "on|0|0", p.standby.Psql("SELECT current_setting('archive_mode'), archived_count, failed_count FROM pg_stat_archiver"),
			"archive_mode=on, as on the primary: a standby in recovery archives nothing")

		_, err = p.pool.Exec(ctx, "INSERT INTO probe VALUES (0, 0, 'replicated')")
		require.NoError(t, err)
		p.standby.WaitFor("SELECT payload FROM probe WHERE id = 0", "replicated", time.Minute)
		_, err = p.pool.Exec(ctx, "DELETE FROM probe WHERE id = 0")
		require.NoError(t, err)
		p.standby.WaitFor("SELECT count(*) FROM probe", "0", time.Minute)

		r := p.status(p.options())
		out, _ := json.MarshalIndent(r, "", "  ")
		require.True(t, r.OK, "%s", out)
		var names []string
		for _, c := range r.Checks {
			names = append(names, c.Name)
		}
		assert.Equal(t, []string{"primary", "primary_slot", "primary_streaming", "primary_lag_bytes", "primary_lag_time",
			"standby", "standby_receiver", "standby_replay_bytes", "standby_replay_time"}, names)
		require.NotNil(t, r.Primary.Sender)
		assert.Equal(t, "streaming", r.Primary.Sender.State)
		assert.Equal(t, "127.0.0.1", r.Primary.Sender.ClientAddr)
		assert.Equal(t, "async", r.Primary.Sender.SyncState)
		assert.Equal(t, "streaming", r.Standby.Receiver.Status)
		assert.Equal(t, "host=127.0.0.1 port="+strings.Split(strings.Split(p.primaryConn, "port=")[1], " ")[0]+" dbname=postgres user=postgres", r.Primary.Target)
		assert.NotContains(t, string(out), p.superPassword)
		consistent(t, r)
	})

	t.Run("lag under a steady write load", func(t *testing.T) {
		const interval = 10 * time.Millisecond // 100 commits a second
		w := startWriter(t, p.primary.URL("postgres", p.superPassword), interval)
		var samples []standby.Report
		start := time.Now()
		for time.Since(start) < 20*time.Second {
			time.Sleep(250 * time.Millisecond)
			samples = append(samples, p.status(p.options()))
		}
		w.stopWriting()
		elapsed := time.Since(start)
		require.Greater(t, w.ackedCount(), 100, "the writer committed")

		var replayBytes, flushBytes, standbyBytes []int64
		var replayLag, standbyDelay []float64
		for _, r := range samples {
			assert.True(t, check(t, r, "primary_streaming").OK, "streaming all along: %+v", r.Checks)
			assert.True(t, check(t, r, "standby_receiver").OK, "streaming all along: %+v", r.Checks)
			consistent(t, r)
			snd := r.Primary.Sender
			replayBytes = append(replayBytes, *snd.ReplayBehindBytes)
			flushBytes = append(flushBytes, *snd.FlushBehindBytes)
			if r.LagSeconds != nil {
				replayLag = append(replayLag, *r.LagSeconds)
			}
			if r.Standby.ReplayBehindBytes != nil {
				standbyBytes = append(standbyBytes, *r.Standby.ReplayBehindBytes)
			}
			if r.Standby.ReplayDelaySeconds != nil {
				standbyDelay = append(standbyDelay, *r.Standby.ReplayDelaySeconds)
			}
		}
		require.NotEmpty(t, replayLag, "replay_lag was measured under writes")
		t.Logf("writer: %d commits of a 2 KiB row in %s (%.0f/s); %d status samples (both sides)",
			w.ackedCount(), elapsed.Round(time.Second), float64(w.ackedCount())/elapsed.Seconds(), len(samples))
		t.Logf("primary: replay behind median %s max %s; flush behind median %s max %s; replay_lag median %s max %s",
			med(replayBytes), mx(replayBytes), med(flushBytes), mx(flushBytes), medSec(replayLag), mxSec(replayLag))
		t.Logf("standby: received but not replayed median %s max %s; replay delay median %s max %s",
			med(standbyBytes), mx(standbyBytes), medSec(standbyDelay), mxSec(standbyDelay))

		// Idle again: within a few of the standby's 1s status intervals it
		// reports everything replayed, and PostgreSQL clears replay_lag.
		var idle standby.Report
		require.Eventually(t, func() bool {
			idle = p.status(p.options())
			return idle.OK && *idle.Primary.Sender.ReplayBehindBytes == 0 && idle.Primary.Sender.ReplayLagSeconds == nil
		}, 30*time.Second, 250*time.Millisecond, "an idle primary's standby is 0 bytes behind and PostgreSQL clears replay_lag")
		assert.Equal(t, 0.0, *idle.LagSeconds, "NULL replay_lag with replay at sent_lsn: 0 s")
		assert.Contains(t, check(t, idle, "primary_lag_time").Detail, "replay lag 0s: the standby has replayed everything sent (replay_lag NULL")
	})

	t.Run("bad input", func(t *testing.T) {
		o := p.options()
		wrong := filepath.Join(p.h.Base, "wrong.pgpass")
		p.h.WriteFile(wrong, "*:*:*:postgres:wrong-"+p.superPassword+"\n", 0o600)
		o.Primary = connString(p.primary, "postgres", wrong)
		r := p.status(o)
		assert.False(t, r.OK)
		c := check(t, r, "primary")
		assert.False(t, c.OK)
		assert.Contains(t, c.Detail, `password authentication failed for user "postgres"`)
		assert.NotContains(t, c.Detail, p.superPassword)
		assert.True(t, check(t, r, "standby_receiver").OK, "the other side is still reported")

		o = p.options()
		o.Slot = "nope"
		r = p.status(o)
		assert.False(t, r.OK)
		assert.Equal(t, `no replication slot "nope" on the primary (slots: `+conventions.StandbySlot+`)`, check(t, r, "primary_slot").Detail)
		assert.False(t, check(t, r, "primary_streaming").OK)
		assert.Equal(t, `the WAL receiver streams through slot "`+conventions.StandbySlot+`", not "nope"`, check(t, r, "standby_receiver").Detail)

		o = p.options()
		o.Primary, o.Standby = p.standbyConn, ""
		r = p.status(o)
		assert.False(t, r.OK)
		assert.Contains(t, check(t, r, "primary").Detail, "is in recovery: a standby, not the primary")

		// A role without pg_monitor sees no statistics; with it, all.
		p.primary.Psql("CREATE ROLE watcher LOGIN PASSWORD 'watcher-" + p.superPassword + "'")
		watcherPass := filepath.Join(p.h.Base, "watcher.pgpass")
		p.h.WriteFile(watcherPass, "*:*:*:watcher:watcher-"+p.superPassword+"\n", 0o600)
		o = p.options()
		o.Primary = connString(p.primary, "watcher", watcherPass)
		o.Standby = ""
		_, err := standby.Status(ctx, o)
		require.NoError(t, err)
		r = p.status(o)
		assert.Contains(t, check(t, r, "primary").Detail, "grant it pg_monitor")
		p.primary.Psql("GRANT pg_monitor TO watcher")
		assert.True(t, p.status(o).OK)

		_, err = standby.Status(ctx, standby.Options{Slot: "x", MaxLagBytes: 1, MaxLag: time.Second, Timeout: time.Second})
		assert.EqualError(t, err, "standby: give --primary, --standby or both")
	})

	t.Run("fails when replay is over max-lag-bytes", func(t *testing.T) {
		p.standby.Psql("SELECT pg_wal_replay_pause()")
		// 2000 rows of 2 KiB of hexadecimal digests: 4 MiB of WAL (a repeated
		// text would be compressed to almost nothing).
		_, err := p.pool.Exec(ctx, `INSERT INTO probe SELECT g, 0, string_agg(md5(g || ':' || i), '')
FROM generate_series(1000001, 1002000) g, generate_series(1, 64) i GROUP BY g`)
		require.NoError(t, err)
		o := p.options()
		o.MaxLagBytes = 1 << 20
		var r standby.Report
		require.Eventually(t, func() bool {
			r = p.status(o)
			return r.Standby.ReplayBehindBytes != nil && *r.Standby.ReplayBehindBytes > o.MaxLagBytes
		}, time.Minute, 250*time.Millisecond, "the standby received the rows and did not replay them")
		assert.False(t, r.OK)
		assert.True(t, check(t, r, "primary_streaming").OK, "still streaming: replay alone is stopped")
		assert.False(t, check(t, r, "primary_lag_bytes").OK)
		assert.Regexp(t, `^replay \d+\.\d MiB behind the primary .*max 1\.0 MiB\)$`, check(t, r, "primary_lag_bytes").Detail)
		c := check(t, r, "standby_replay_bytes")
		assert.False(t, c.OK)
		assert.Contains(t, c.Detail, "(replay paused)")
		assert.Equal(t, "paused", r.Standby.ReplayPauseState)
		consistent(t, r)

		p.standby.Psql("SELECT pg_wal_replay_resume()")
		require.Eventually(t, func() bool { return p.status(o).OK }, time.Minute, 250*time.Millisecond, "replay caught up")
		_, err = p.pool.Exec(ctx, "DELETE FROM probe WHERE id > 1000000")
		require.NoError(t, err)
	})

	t.Run("fails when the standby is stopped", func(t *testing.T) {
		p.standby.Stop("fast")
		r := p.status(p.options())
		assert.False(t, r.OK)
		assert.True(t, check(t, r, "primary_slot").OK, "the slot is still there, keeping WAL: %s", check(t, r, "primary_slot").Detail)
		c := check(t, r, "primary_streaming")
		assert.False(t, c.OK)
		assert.Regexp(t, `^no standby streams from slot nbms_standby \(inactive; it keeps \d+(\.\d)? [KM]?i?B of WAL for the standby\)$`, c.Detail)
		assert.Equal(t, "unknown: no standby reports its replay to the primary", check(t, r, "primary_lag_bytes").Detail)
		assert.Contains(t, check(t, r, "standby").Detail, "connect")
		assert.False(t, r.Primary.Slot.Active)

		// --primary alone says the same.
		o := p.options()
		o.Standby = ""
		assert.False(t, p.status(o).OK)

		p.standby.Start()
		require.Eventually(t, func() bool { return p.status(p.options()).OK }, time.Minute, 250*time.Millisecond, "streaming again after a restart")
	})
}

// consistent asserts the positions of r are in the order WAL flows: the
// primary writes, sends, the standby writes, flushes, replays; and every
// figure is a distance, never negative.
func consistent(t *testing.T, r standby.Report) {
	t.Helper()
	if snd := r.Primary.Sender; snd != nil {
		b := []*int64{snd.SentBehindBytes, snd.WriteBehindBytes, snd.FlushBehindBytes, snd.ReplayBehindBytes}
		for _, v := range b {
			require.NotNil(t, v)
		}
		assert.True(t, 0 <= *b[0] && *b[0] <= *b[1] && *b[1] <= *b[2] && *b[2] <= *b[3],
			"current >= sent >= write >= flush >= replay: behind by %d, %d, %d, %d", *b[0], *b[1], *b[2], *b[3])
		for _, lag := range []*float64{snd.WriteLagSeconds, snd.FlushLagSeconds, snd.ReplayLagSeconds} {
			if lag != nil {
				assert.GreaterOrEqual(t, *lag, 0.0)
			}
		}
		if snd.WriteLagSeconds != nil && snd.FlushLagSeconds != nil && snd.ReplayLagSeconds != nil {
			assert.True(t, *snd.WriteLagSeconds <= *snd.FlushLagSeconds && *snd.FlushLagSeconds <= *snd.ReplayLagSeconds,
				"write_lag <= flush_lag <= replay_lag: %v %v %v", *snd.WriteLagSeconds, *snd.FlushLagSeconds, *snd.ReplayLagSeconds)
		}
	}
	if s := r.Standby; s != nil && s.ReplayBehindBytes != nil {
		assert.GreaterOrEqual(t, *s.ReplayBehindBytes, int64(0))
	}
	if r.LagBytes != nil {
		assert.GreaterOrEqual(t, *r.LagBytes, int64(0))
	}
}

// med, mx, medSec and mxSec are the median and maximum of the samples,
// for the log.
func med(v []int64) string {
	if len(v) == 0 {
		return "n/a"
	}
	return bytesText(slices.Sorted(slices.Values(v))[len(v)/2])
}

func mx(v []int64) string {
	if len(v) == 0 {
		return "n/a"
	}
	return bytesText(slices.Max(v))
}

func medSec(v []float64) string {
	if len(v) == 0 {
		return "n/a"
	}
	return sec(slices.Sorted(slices.Values(v))[len(v)/2])
}

func mxSec(v []float64) string {
	if len(v) == 0 {
		return "n/a"
	}
	return sec(slices.Max(v))
}

func bytesText(n int64) string { return fmt.Sprintf("%d B", n) }

func sec(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

// The app image is built from app/ alone, so the standby package spells the
// slot's name itself; it must be the one infra/replication creates.
func TestDefaultSlotIsTheConventions(t *testing.T) {
	assert.Equal(t, conventions.StandbySlot, standby.DefaultSlot)
}
