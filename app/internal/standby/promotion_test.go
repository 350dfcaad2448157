package standby_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/pgbackrest"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// TestPromotion is the runbook's failover on a real pair, with the
// writer committing 100 rows a second: note the flush position the
// standby confirmed and the commits acknowledged by then, stop the
// primary, promote the standby (pg_promote), time it until a write is
// accepted, and check the rows: every commit the standby had received in
// full (its commit record's end at or before the standby's received
// position, both read from the WAL itself with pg_waldump) is on the
// promoted standby, and nothing is there that was not committed. Then the
// promoted standby archives to repo1 on timeline 2: pgbackrest check and
// a new full backup. Last, the old primary becomes the new primary's
// standby: restored over its data directory (RestoreArgs with delta) from
// that backup, streaming through the slot PrimarySQL made on the new
// primary.
//
// "fast" is the runbook's switchover: PostgreSQL's fast shutdown sends
// every WAL record, its shutdown checkpoint included, to a connected
// standby and waits for it to be written there before it exits, so no
// acknowledged commit is lost. "immediate" stands for a crashed primary:
// the commits the standby had not yet received (asynchronous
// replication's window, milliseconds here) are lost, and only those.
//
// pg_promote(wait => true) checks for the promotion every 100 ms, so the
// times it takes come in steps of that. After an immediate stop it has
// now and then taken 5.1 s instead: about wal_retrieve_retry_interval
// (5 s), the standby's wait between its retries of the primary and the
// repository, which is the likely cause.
func TestPromotion(t *testing.T) {
	for _, mode := range []string{"fast", "immediate"} {
		t.Run(mode, func(t *testing.T) { promotion(t, mode) })
	}
}

func promotion(t *testing.T, mode string) {
	p := newPair(t)
	ctx := context.Background()
	// Test only: pg_waldump reads the writer's commits from the old
	// primary's pg_wal after it stopped, which a fast shutdown's
	// checkpoint would otherwise recycle.
	p.primary.Psql("ALTER SYSTEM SET wal_keep_size = '1GB'")
	p.primary.Psql("SELECT pg_reload_conf()")
	w := startWriter(t, p.primary.URL("postgres", p.superPassword), 10*time.Millisecond)
	time.Sleep(5 * time.Second)

	// What the standby confirmed flushed, and the commits acknowledged
	// before it was read.
	ackedBefore := w.ackedCount()
	var confirmed string
	require.NoError(t, p.pool.QueryRow(ctx, "SELECT flush_lsn::text FROM pg_stat_replication WHERE application_name = $1",
		conventions.StandbySlot).Scan(&confirmed))
	p.pool.Close()
	p.primary.Stop(mode)
	w.stopWriting()

	conn, err := pgx.Connect(ctx, p.standby.URL("postgres", p.superPassword))
	require.NoError(t, err)
	defer conn.Close(ctx)
	var received string
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_last_wal_receive_lsn()::text").Scan(&received))

	// The promotion, timed to the first write the promoted server accepts.
	start := time.Now()
	var promoted bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_promote(wait => true, wait_seconds => 60)").Scan(&promoted))
	require.True(t, promoted, "pg_promote reported the promotion done")
	promoteCall := time.Since(start)
	require.Eventually(t, func() bool {
		var inRecovery bool
		if conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery) != nil || inRecovery {
			return false
		}
		_, err := conn.Exec(ctx, "INSERT INTO probe VALUES (-1, 0, 'written after the promotion')")
		return err == nil
	}, time.Minute, 10*time.Millisecond, "the promoted standby accepts writes")
	writable := time.Since(start)

	// The commits, from the old primary's WAL.
	commitEnd := commitEnds(t, p)
	receivedLSN, confirmedLSN := mustLSN(t, received), mustLSN(t, confirmed)
	rows, err := conn.Query(ctx, "SELECT id FROM probe WHERE id > 0")
	require.NoError(t, err)
	present, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)

	w.mu.Lock()
	defer w.mu.Unlock()
	var mustHave, confirmedCommits, lost, notAcked []int64
	for id, xid := range w.acked {
		end, ok := commitEnd[xid]
		require.True(t, ok, "the acknowledged commit of row %d (xid %d) is in the primary's WAL", id, xid)
		if end <= receivedLSN {
			mustHave = append(mustHave, id)
		}
		if end <= confirmedLSN {
			confirmedCommits = append(confirmedCommits, id)
		}
		if !slices.Contains(present, id) {
			lost = append(lost, id)
			assert.Greater(t, end, receivedLSN, "row %d was lost although its commit had reached the standby", id)
		}
	}
	for _, id := range present {
		if _, ok := w.acked[id]; !ok {
			notAcked = append(notAcked, id)
			assert.True(t, w.inDoubt[id], "row %d on the standby was never written", id)
		}
	}
	for _, id := range mustHave {
		assert.Contains(t, present, id, "every commit the standby had received is there")
	}
	if mode == "fast" {
		assert.Empty(t, lost, "a fast shutdown loses no acknowledged commit")
	}
	t.Logf("%s shutdown: the standby confirmed %s flushed when %d commits had been acknowledged (%d commits end at or before it); "+
		"it had received %s when the primary stopped; of the %d acknowledged commits, %d had been received and all %d are on the promoted standby; "+
		"%d rows there in all; %d acknowledged commits lost (all after the received position); %d rows whose commit returned an error but happened",
		mode, confirmed, ackedBefore, len(confirmedCommits), received, len(w.acked), len(mustHave), len(mustHave), len(present), len(lost), len(notAcked))
	t.Logf("%s: pg_promote returned after %s; first write accepted %s after the call", mode, promoteCall.Round(time.Millisecond), writable.Round(time.Millisecond))
	require.GreaterOrEqual(t, len(mustHave), 200, "the writer ran for seconds before the stop")

	// The status now says it: the standby is a primary, with no slot (slots
	// are not replicated: PrimarySQL makes one for the next standby).
	o := p.options()
	o.Primary, o.Standby = p.standbyConn, p.standbyConn
	r := p.status(o)
	assert.False(t, r.OK)
	assert.Contains(t, check(t, r, "standby").Detail, "is not in recovery: it was promoted")
	assert.Equal(t, `no replication slot "nbms_standby" on the primary (slots: none)`, check(t, r, "primary_slot").Detail)

	// It archives to repo1 on timeline 2: check pushes a segment and waits
	// for it, a full backup of it succeeds, the timeline's history file is
	// in the repository.
	var walFile string
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn())").Scan(&walFile))
	assert.True(t, strings.HasPrefix(walFile, "00000002"), walFile)
	p.pgbackrest(p.standbyConf, "check")
	var archived int64
	require.NoError(t, conn.QueryRow(ctx, "SELECT archived_count FROM pg_stat_archiver").Scan(&archived))
	assert.Positive(t, archived, "promoted, it archives")
	// A backup before the promoted server's first checkpoint on timeline 2
	// fails ("ERROR: [058]: WAL timeline 2 does not match pg_control
	// timeline 1", pgBackRest 2.45), and the checkpoint PostgreSQL asks for
	// at the promotion is a spread one, minutes long: the runbook runs
	// CHECKPOINT right after promoting.
	_, err = conn.Exec(ctx, "CHECKPOINT")
	require.NoError(t, err)
	p.pgbackrest(p.standbyConf, "--type=full", "backup")
	history := filepath.Join(p.h.Dir("fetched"), "00000002.history")
	p.pgbackrest(p.standbyConf, "archive-get", "00000002.history", history)
	content, err := os.ReadFile(history)
	require.NoError(t, err)
	assert.Regexp(t, `^1\t[0-9A-F]+/[0-9A-F]+\tno recovery target specified`, string(content))
	var info []struct {
		Status  struct{ Code int } `json:"status"`
		Archive []struct {
			Max *string `json:"max"`
		} `json:"archive"`
		Backup []struct {
			Type    string `json:"type"`
			Archive struct {
				Start string `json:"start"`
			} `json:"archive"`
		} `json:"backup"`
	}
	require.NoError(t, json.Unmarshal([]byte(p.pgbackrest(p.standbyConf, "--output=json", "info")), &info))
	require.Len(t, info, 1)
	assert.Zero(t, info[0].Status.Code)
	require.Len(t, info[0].Backup, 2, "the primary's full backup and the promoted standby's")
	assert.True(t, strings.HasPrefix(info[0].Backup[1].Archive.Start, "00000002"), "the new backup is on timeline 2: %s", info[0].Backup[1].Archive.Start)
	require.NotNil(t, info[0].Archive[0].Max)
	assert.True(t, strings.HasPrefix(*info[0].Archive[0].Max, "00000002"), *info[0].Archive[0].Max)
	t.Logf("%s: timeline-1 segments in repo1 after the promotion: %s", mode, strings.Join(timeline1Segments(t, p), ", "))

	// The old primary never starts as a primary again: it is made a
	// standby of the new one, restored over its data directory (--delta)
	// from the new timeline's backup. The new primary needs its slot
	// (PrimarySQL: slots are not replicated).
	seed := p.params
	seed.ConfigPath, seed.PrimaryPort = p.primaryConf, p.standby.Port
	seed.PassFile = filepath.Join(p.h.Dir("primary-secrets"), "replication.pgpass")
	p.preparePrimary(p.standby, seed)
	passFile, err := seed.RenderPassFile(p.replicationPassword)
	require.NoError(t, err)
	p.h.WriteFile(seed.PassFile, passFile, 0o600)
	args, err := seed.RestoreArgs(true)
	require.NoError(t, err)
	require.Contains(t, args, "--delta")
	p.h.Run("pgbackrest", args...)
	// What the container's command line would say (the restored
	// postgresql.conf is the new primary's, this test's way of giving
	// each server its own port).
	primarySettings, err := seed.PrimarySettings()
	require.NoError(t, err)
	p.primary.AppendConf(p.primary.ListenSettings() +
		pgbackrest.PostgresConf(pgbackrest.PostgresSettings(p.primaryConf, stanza, time.Minute)) +
		pgbackrest.PostgresConf(primarySettings))
	p.primary.Start()
	_, err = conn.Exec(ctx, "INSERT INTO probe VALUES (-2, 0, 'replicated to the old primary')")
	require.NoError(t, err)
	p.primary.WaitFor("SELECT payload FROM probe WHERE id = -2", "replicated to the old primary", 2*time.Minute)
	o = p.options()
	o.Primary, o.Standby = p.standbyConn, p.primaryConn
	require.Eventually(t, func() bool { return p.status(o).OK }, time.Minute, 250*time.Millisecond, "the old primary streams from the new one")
	assert.Equal(t, strconv.Itoa(len(present)+2), p.primary.Psql("SELECT count(*) FROM probe"),
		"the old primary holds the new primary's rows: the ones it had received, the two written since, none of its own")
}

// commitRE is a commit record in pg_waldump's output (PostgreSQL 15).
var commitRE = regexp.MustCompile(`len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*(\d+), lsn: ([0-9A-F]+/[0-9A-F]+), prev [0-9A-F]+/[0-9A-F]+, desc: COMMIT`)

// commitEnds reads the old primary's pg_wal with pg_waldump and returns
// where each transaction's commit record ends: its start plus its length,
// plus the page header in between when it crosses a WAL page (8 KiB; a
// long header at a segment's start). The standby has a commit when it has
// received WAL up to that end.
func commitEnds(t *testing.T, p *pair) map[uint32]uint64 {
	t.Helper()
	walDir := filepath.Join(p.primary.Data, "pg_wal")
	entries, err := os.ReadDir(walDir)
	require.NoError(t, err)
	var segments []string
	for _, e := range entries {
		if regexp.MustCompile(`^[0-9A-F]{24}$`).MatchString(e.Name()) {
			segments = append(segments, e.Name())
		}
	}
	require.NotEmpty(t, segments)
	slices.Sort(segments)
	// It stops with an error where valid WAL ends (recycled segments
	// follow): the records before are what it is for.
	out, _ := p.h.Command(testsupport.PGBin+"/pg_waldump", "--path="+walDir, "--rmgr=Transaction", segments[0], segments[len(segments)-1]).Output()
	ends := map[uint32]uint64{}
	for _, m := range commitRE.FindAllStringSubmatch(string(out), -1) {
		length, _ := strconv.ParseUint(m[1], 10, 64)
		xid, _ := strconv.ParseUint(m[2], 10, 32)
		start := mustLSN(t, m[3])
		ends[uint32(xid)] = recordEnd(start, length)
	}
	require.NotEmpty(t, ends, "pg_waldump found commits:\n%s", out)
	return ends
}

const (
	walPage     = 8192
	walSegment  = 16 << 20
	shortHeader = 24 // SizeOfXLogShortPHD
	longHeader  = 40 // SizeOfXLogLongPHD, at a segment's first page
)

// recordEnd is where a WAL record of length bytes starting at start ends.
func recordEnd(start, length uint64) uint64 {
	end := start
	for length > 0 {
		room := walPage - end%walPage
		if room > length {
			return end + length
		}
		length -= room
		end += room
		if end%walSegment == 0 {
			end += longHeader
		} else {
			end += shortHeader
		}
	}
	return end
}

func TestRecordEnd(t *testing.T) {
	assert.Equal(t, uint64(0x3000100+34), recordEnd(0x3000100, 34))
	assert.Equal(t, uint64(2*walPage+24+10), recordEnd(2*walPage-24, 34), "across a page: a short header")
	assert.Equal(t, uint64(walSegment+40+10), recordEnd(walSegment-24, 34), "across a segment: a long header")
}

func mustLSN(t *testing.T, s string) uint64 {
	t.Helper()
	hi, lo, ok := strings.Cut(s, "/")
	require.True(t, ok, s)
	h, err := strconv.ParseUint(hi, 16, 32)
	require.NoError(t, err)
	l, err := strconv.ParseUint(lo, 16, 32)
	require.NoError(t, err)
	return h<<32 | l
}

// timeline1Segments lists the newest timeline-1 files of repo1's archive,
// for the log: whether the primary's last segments and the standby's
// .partial reached it.
func timeline1Segments(t *testing.T, p *pair) []string {
	t.Helper()
	var names []string
	require.NoError(t, filepath.WalkDir(filepath.Join(p.h.Base, "repo", "archive"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), "00000001") {
			names = append(names, strings.SplitN(d.Name(), "-", 2)[0])
		}
		return err
	}))
	slices.Sort(names)
	if len(names) > 4 {
		names = names[len(names)-4:]
	}
	return names
}
