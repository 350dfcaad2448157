package standby

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func ptr[T any](v T) *T { return &v }

func opts() Options {
	return Options{Primary: "host=db", Slot: "nbms_standby", MaxLagBytes: DefaultMaxLagBytes, MaxLag: DefaultMaxLag, Timeout: DefaultTimeout}
}

// streaming is a primary side whose standby streams 100 bytes behind.
func streaming() *PrimarySide {
	return &PrimarySide{
		Target: "host=db port=5432 dbname=postgres user=postgres", CurrentLSN: "0/3000100",
		Slot: &Slot{Name: "nbms_standby", Type: "physical", Active: true, RestartLSN: ptr("0/3000000"), WALStatus: ptr("reserved"),
			SafeWALSizeBytes: ptr(int64(1 << 30)), RetainedBytes: ptr(int64(256))},
		Sender: &Sender{PID: 42, ApplicationName: "nbms_standby", ClientAddr: "172.30.0.3", State: "streaming", SyncState: "async",
			SentLSN: ptr("0/3000100"), WriteLSN: ptr("0/3000100"), FlushLSN: ptr("0/3000100"), ReplayLSN: ptr("0/3000000"),
			SentBehindBytes: ptr(int64(0)), WriteBehindBytes: ptr(int64(0)), FlushBehindBytes: ptr(int64(0)), ReplayBehindBytes: ptr(int64(256)),
			WriteLagSeconds: ptr(0.001), FlushLagSeconds: ptr(0.002), ReplayLagSeconds: ptr(0.003)},
	}
}

func judged(side *PrimarySide, o Options) Report {
	var r Report
	r.Primary = side
	r.judgePrimary(side, o)
	r.OK = true
	for _, c := range r.Checks {
		r.OK = r.OK && c.OK
	}
	return r
}

func detail(r Report, name string) (bool, string) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c.OK, c.Detail
		}
	}
	return false, "no such check"
}

func TestJudgePrimary(t *testing.T) {
	r := judged(streaming(), opts())
	require.True(t, r.OK, "%+v", r.Checks)
	assert.Equal(t, int64(256), *r.LagBytes)
	assert.Equal(t, 0.003, *r.LagSeconds)
	_, d := detail(r, "primary_lag_bytes")
	assert.Equal(t, "replay 256 B behind the primary (flushed 0 B behind, sent 0 B behind; max 64.0 MiB)", d)
	_, d = detail(r, "primary_lag_time")
	assert.Equal(t, "replay lag 3ms (flush lag 2ms; max 1m0s)", d)

	// replay_lag NULL: 0 when everything sent was replayed, unknown (a
	// failed check) while replay is behind what was sent.
	side := streaming()
	side.Sender.ReplayLagSeconds = nil
	side.Sender.ReplayLSN, side.Sender.ReplayBehindBytes = side.Sender.SentLSN, ptr(int64(0))
	r = judged(side, opts())
	assert.True(t, r.OK)
	assert.Equal(t, 0.0, *r.LagSeconds)
	side = streaming()
	side.Sender.ReplayLagSeconds = nil
	r = judged(side, opts())
	assert.False(t, r.OK)
	assert.Nil(t, r.LagSeconds)
	ok, d := detail(r, "primary_lag_time")
	assert.False(t, ok)
	assert.Equal(t, "unknown: replay_lag is NULL (not measured yet) while replay is 256 B behind what was sent", d)

	cases := []struct {
		name, check, want string
		change            func(*PrimarySide)
		o                 func(*Options)
	}{
		{"over the bytes", "primary_lag_bytes", "replay 256 B behind the primary (flushed 0 B behind, sent 0 B behind; max 100 B)", nil, func(o *Options) { o.MaxLagBytes = 100 }},
		{"over the time", "primary_lag_time", "replay lag 2m0s (flush lag 2ms; max 1m0s)", func(s *PrimarySide) { s.Sender.ReplayLagSeconds = ptr(120.0) }, nil},
		{"no slot", "primary_slot", `no replication slot "nbms_standby" on the primary (slots: other_a, other_b)`, func(s *PrimarySide) {
			s.Slot, s.Sender, s.OtherSlots = nil, nil, []string{"other_a", "other_b"}
		}, nil},
		{"no slot at all", "primary_slot", `no replication slot "nbms_standby" on the primary (slots: none)`, func(s *PrimarySide) { s.Slot, s.Sender = nil, nil }, nil},
		{"a logical slot", "primary_slot", "slot nbms_standby is a logical slot, not a physical one", func(s *PrimarySide) { s.Slot.Type = "logical" }, nil},
		{"invalidated", "primary_slot", "slot nbms_standby was invalidated (wal_status lost)", func(s *PrimarySide) { s.Slot.WALStatus = ptr("lost") }, nil},
		{"about to be", "primary_slot", "past max_slot_wal_keep_size (wal_status unreserved)", func(s *PrimarySide) { s.Slot.WALStatus = ptr("unreserved") }, nil},
		{"inactive", "primary_streaming", "no standby streams from slot nbms_standby (inactive; it keeps 256 B of WAL for the standby)", func(s *PrimarySide) { s.Sender, s.Slot.Active = nil, false }, nil},
		{"catching up", "primary_streaming", "the WAL sender 42 to 172.30.0.3 is catchup, not streaming", func(s *PrimarySide) { s.Sender.State = "catchup" }, nil},
		{"the primary is a standby", "primary", "is in recovery: a standby, not the primary", func(s *PrimarySide) { *s = PrimarySide{Target: "host=db", InRecovery: true} }, nil},
		{"unreachable", "primary", "host=db: dial tcp: refused", func(s *PrimarySide) { *s = PrimarySide{Target: "host=db", Error: "dial tcp: refused"} }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			side, o := streaming(), opts()
			if tc.change != nil {
				tc.change(side)
			}
			if tc.o != nil {
				tc.o(&o)
			}
			r := judged(side, o)
			assert.False(t, r.OK)
			ok, d := detail(r, tc.check)
			assert.False(t, ok, d)
			assert.Contains(t, d, tc.want)
		})
	}
}

func TestJudgeStandby(t *testing.T) {
	side := &StandbySide{
		Target: "host=standby", InRecovery: true, ReceiveLSN: ptr("0/3000100"), ReplayLSN: ptr("0/3000000"),
		ReplayBehindBytes: ptr(int64(256)), ReplayDelaySeconds: ptr(0.5), ReplayPauseState: "not paused",
		Receiver: &Receiver{Status: "streaming", SlotName: "nbms_standby", SenderHost: "db", SenderPort: 5432, FlushedLSN: ptr("0/3000100")},
	}
	o := opts()
	o.Primary = ""
	var r Report
	r.Standby = side
	r.judgeStandby(side, o)
	for _, c := range r.Checks {
		assert.True(t, c.OK, "%s: %s", c.Name, c.Detail)
	}
	assert.Equal(t, int64(256), *r.LagBytes, "the standby's figures without the primary's")
	assert.Equal(t, 0.5, *r.LagSeconds)

	// With the primary's figures, those stay.
	r = Report{}
	r.judgePrimary(streaming(), opts())
	r.judgeStandby(side, o)
	assert.Equal(t, 0.003, *r.LagSeconds)

	paused := *side
	paused.ReplayPauseState = "paused"
	paused.ReplayBehindBytes = ptr(int64(100 << 20))
	r = Report{}
	r.judgeStandby(&paused, o)
	ok, d := detail(r, "standby_replay_bytes")
	assert.False(t, ok)
	assert.Equal(t, "replay 100.0 MiB behind what the standby received (replay paused) (max 64.0 MiB)", d)

	promoted := StandbySide{Target: "host=standby"}
	r = Report{}
	r.judgeStandby(&promoted, o)
	ok, d = detail(r, "standby")
	assert.False(t, ok)
	assert.Equal(t, "host=standby is not in recovery: it was promoted (or is not a standby)", d)

	noReceiver := *side
	noReceiver.Receiver = nil
	r = Report{}
	r.judgeStandby(&noReceiver, o)
	ok, d = detail(r, "standby_receiver")
	assert.False(t, ok)
	assert.Contains(t, d, "no WAL receiver")
}

func TestWriteText(t *testing.T) {
	r := judged(streaming(), opts())
	r.Slot, r.CheckedAt = "nbms_standby", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r.Policy.MaxLagBytes, r.Policy.MaxLagSeconds = DefaultMaxLagBytes, 60
	var b bytes.Buffer
	require.NoError(t, r.WriteText(&b))
	assert.Equal(t, `standby of slot nbms_standby (checked 2026-01-02T03:04:05Z; max lag 64.0 MiB, 1m0s)
  ok   primary              host=db port=5432 dbname=postgres user=postgres, WAL written up to 0/3000100
  ok   primary_slot         slot nbms_standby keeps 256 B of WAL (wal_status reserved; 1.0 GiB more before it is invalidated)
  ok   primary_streaming    WAL sender 42 streams to 172.30.0.3 (application_name nbms_standby, async)
  ok   primary_lag_bytes    replay 256 B behind the primary (flushed 0 B behind, sent 0 B behind; max 64.0 MiB)
  ok   primary_lag_time     replay lag 3ms (flush lag 2ms; max 1m0s)
the standby is streaming within the thresholds
`, b.String())
}

func TestOptions(t *testing.T) {
	require.NoError(t, opts().Validate())
	for _, conn := range []string{
		"postgres://u:secret@db/postgres", "postgresql://u@db/postgres?password=secret", "host=db password=secret", "host=db\tpassword = secret",
	} {
		o := opts()
		o.Primary = conn
		err := o.Validate()
		require.Error(t, err, conn)
		assert.Contains(t, err.Error(), "--primary has a password")
		assert.NotContains(t, err.Error(), "secret")
	}
	for _, conn := range []string{"postgres://u@db/postgres", "host=db passfile=/run/secrets/pgpass", "host=/var/run/postgresql user=postgres"} {
		assert.False(t, hasPassword(conn), conn)
	}
	err := Options{Standby: "host=db port=notaport", Slot: "Bad-Slot", MaxLagBytes: 0, MaxLag: -time.Second}.Validate()
	require.Error(t, err)
	for _, want := range []string{"standby: --standby: ", `slot "Bad-Slot"`, "max lag bytes must be positive, got 0", "max lag must be positive, got -1s", "timeout must be positive, got 0s"} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestLSN(t *testing.T) {
	for s, want := range map[string]lsn{"0/0": 0, "0/3000148": 0x3000148, "16/B374D848": 0x16B374D848, "FFFFFFFF/FFFFFFFF": 1<<64 - 1} {
		got, err := parseLSN(s)
		require.NoError(t, err)
		assert.Equal(t, want, got, s)
	}
	for _, bad := range []string{"", "0", "0/", "/1", "G/1", "1/100000000", "1/2/3"} {
		_, err := parseLSN(bad)
		assert.Error(t, err, bad)
	}
	a, b := lsn(0x3000148), lsn(0x3000000)
	assert.Equal(t, int64(0x148), *behind(&a, &b))
	assert.Nil(t, behind(&a, nil))
	assert.Equal(t, "0 B", formatBytes(0))
	assert.Equal(t, "1023 B", formatBytes(1023))
	assert.Equal(t, "1.0 KiB", formatBytes(1024))
	assert.Equal(t, "1.5 MiB", formatBytes(3<<19))
	assert.Equal(t, "64.0 MiB", formatBytes(DefaultMaxLagBytes))
}
