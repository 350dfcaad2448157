package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/conventions"
)

// repoArchiveMax is the newest WAL segment repository repo holds, as
// pgBackRest's info reports it ("" while it holds none).
func repoArchiveMax(t *testing.T, repo string) string {
	t.Helper()
	out, err := execIn(t, conventions.RoleBackup, "", "pgbackrest", "--repo="+repo, "--output=json", "info")
	require.NoError(t, err)
	var info backupInfo
	require.NoError(t, json.Unmarshal([]byte(out), &info), out)
	require.Len(t, info, 1, out)
	if len(info[0].Archive) == 0 {
		return ""
	}
	return info[0].Archive[0].Max
}

// await polls done every second until it holds, failing with what after
// within.
func await(t *testing.T, within time.Duration, done func() bool, what string, args ...any) time.Duration {
	t.Helper()
	start := time.Now()
	for !done() {
		if time.Since(start) >= within {
			require.FailNowf(t, "not within "+within.String(), what, args...)
		}
		time.Sleep(time.Second)
	}
	return time.Since(start)
}

// checkOffHostOutage takes the off-host store down, as an outage would:
// the S3 server stops, and the relay, which goes on accepting, finds
// nothing behind it. While it is down, with production's timeouts
// (pgbackrest.ArchivePushIOTimeout and BackupArchiveTimeout):
//   - each completed WAL segment still reaches the local repository,
//     although every archive_command of it fails on repo2, and the
//     database takes writes and the app stays ready;
//   - a scheduled backup to the local repository succeeds;
//   - the scheduler logs repo2's failed backup with its cause (the gap,
//     reported), and PostgreSQL keeps the segments for repo2.
//
// Once the store is back, retries archive every kept segment to repo2
// and the schedule takes a full backup there again: the gap caught up.
func (s *stack) checkOffHostOutage(t *testing.T) {
	sql(t, `CREATE TABLE IF NOT EXISTS offhost_outage (id int)`)
	// Everything before the outage is in both repositories.
	before := sql(t, `SELECT pg_walfile_name(pg_current_wal_lsn())`)
	sql(t, `INSERT INTO offhost_outage VALUES (0); SELECT pg_switch_wal()`)
	awaitArchived(t, before)
	failedBefore := sql(t, `SELECT failed_count FROM pg_stat_archiver`)

	down := time.Now()
	s.s3.Stop()
	outage := map[string]any{}
	var segments []string
	var toRepo1 []float64
	for i := 1; i <= 3; i++ {
		segment := sql(t, `SELECT pg_walfile_name(pg_current_wal_lsn())`)
		sql(t, fmt.Sprintf(`INSERT INTO offhost_outage VALUES (%d); SELECT pg_switch_wal()`, i))
		took := await(t, 5*time.Minute, func() bool { return repoArchiveMax(t, "1") >= segment },
			"segment %s in the local repository while the off-host store is down", segment)
		toRepo1 = append(toRepo1, took.Round(time.Second).Seconds())
		segments = append(segments, segment)
	}
	last := segments[len(segments)-1]
	t.Logf("with the off-host store down, segments %v reached the local repository %v s after they were completed", segments, toRepo1)
	outage["segmentToRepo1Seconds"] = toRepo1
	assert.NotEqual(t, failedBefore, sql(t, `SELECT failed_count FROM pg_stat_archiver`), "archive_command fails while repo2 is down")
	assert.Less(t, sql(t, `SELECT last_archived_wal FROM pg_stat_archiver`), segments[0], "PostgreSQL keeps the segments for repo2")
	for _, object := range s.s3.Objects(t, s.s3Bucket) {
		for _, segment := range segments {
			assert.NotContains(t, object, segment, "repo2 has none of the segments")
		}
	}
	assert.Equal(t, "4", sql(t, `SELECT count(*) FROM offhost_outage`), "the database takes writes")
	resp, _ := s.do(http.MethodGet, "/readyz", nil, nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the app stays ready: backups are not its readiness")

	// The schedule (a full backup every minute) backs up the local
	// repository first; repo2's backup of the same run fails only after
	// pgBackRest's io-timeout (60 s) has run out several times over.
	_, full := awaitFullBackup(t, "1", down, 5*time.Minute)
	outage["repo1FullSeconds"] = full.Timestamp.Stop - full.Timestamp.Start
	var failure map[string]any
	took := await(t, 10*time.Minute, func() bool {
		for _, line := range jsonLog(t, conventions.RoleBackup, down) {
			if line["msg"] == "backup failed" && line["repo"] == float64(2) {
				failure = line
				return true
			}
		}
		return false
	}, "the scheduler logs repo2's failed backup")
	outage["repo2FailureLoggedAfterSeconds"] = took.Round(time.Second).Seconds()
	assert.Equal(t, "repository unreachable", failure["cause"], "the cause is named: %v", failure["error"])
	assert.Equal(t, "ERROR", failure["level"])

	back := time.Now()
	s.s3.Serve(t, "", "")
	took = await(t, 5*time.Minute, func() bool {
		return sql(t, `SELECT coalesce(last_archived_wal, '') >= '`+last+`' FROM pg_stat_archiver`) == "t"
	}, "PostgreSQL counts %s archived once repo2 is back", last)
	outage["catchUpSeconds"] = took.Round(time.Second).Seconds()
	assert.GreaterOrEqual(t, repoArchiveMax(t, "2"), last, "repo2 has every segment of the outage")
	// The scheduler may be in the middle of its failing run, and exits
	// after it (exit on failure): the restarted one backs up both again.
	_, full = awaitFullBackup(t, "2", back, 10*time.Minute)
	outage["repo2FullAfterSeconds"] = time.Unix(full.Timestamp.Stop, 0).Sub(back).Round(time.Second).Seconds()
	s.figures.BackupInfo["offHostOutage"] = outage
	t.Logf("off-host outage: %v", outage)
}
