package backup_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/backup"
)

var drillFinished = time.Date(2026, 12, 2, 4, 21, 7, 0, time.UTC)

func passedDrill() backup.DrillResult {
	return backup.DrillResult{
		Type: backup.DrillType, Result: backup.ResultOK, OK: true, Stanza: "nbms", Repo: 2,
		StartedAt: drillFinished.Add(-94 * time.Second), FinishedAt: drillFinished, DurationMS: 94000,
		Label: "20261129-013002F_20261202-013004D", MigrationVersion: 100,
		RowCounts: map[string]int64{"users": 12, "audit_events": 3581},
		Amcheck:   &backup.Amcheck{Indexes: 171, Relations: 112, Seconds: 2.5},
	}
}

func failedDrill() backup.DrillResult {
	return backup.DrillResult{
		Type: backup.DrillType, Result: backup.ResultFailed, Stanza: "nbms", Repo: 2,
		StartedAt: drillFinished.Add(-3 * time.Second), FinishedAt: drillFinished, DurationMS: 3000,
		Error: "nbms-restore-drill: exit status 1: ERROR: [029]: unable to load info file | nbms-restore-drill: drill FAILED: pgbackrest restore from repo2 failed",
		Cause: "wrong cipher passphrase",
	}
}

func TestEvaluateDrill(t *testing.T) {
	dir := t.TempDir()
	write := func(t *testing.T, r backup.DrillResult) string {
		path := filepath.Join(t.TempDir(), "drill.json")
		require.NoError(t, backup.WriteDrillStatus(path, r))
		return path
	}
	raw := func(content string) func(t *testing.T) string {
		return func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "drill.json")
			require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
			return path
		}
	}
	tests := []struct {
		name       string
		file       func(t *testing.T) string
		now        time.Time
		wantOK     bool
		wantDetail []string
		wantLast   bool
	}{
		{"passed, a day ago", func(t *testing.T) string { return write(t, passedDrill()) }, drillFinished.Add(24 * time.Hour), true,
			[]string{"last drill passed, finished 24h0m0s ago (max 170h0m0s), from repo2, backup 20261129-013002F_20261202-013004D",
				"rows audit_events=3581 users=12", "amcheck: 171 btree indexes, 112 tables"}, true},
		{"passed, exactly at the limit", func(t *testing.T) string { return write(t, passedDrill()) }, drillFinished.Add(backup.DefaultMaxDrillAge), true,
			[]string{"finished 170h0m0s ago (max 170h0m0s)"}, true},
		{"passed, but too long ago", func(t *testing.T) string { return write(t, passedDrill()) }, drillFinished.Add(backup.DefaultMaxDrillAge + time.Second), false,
			[]string{"last drill passed, finished 170h0m1s ago (max 170h0m0s)"}, true},
		{"passed, from pgBackRest's default repository", func(t *testing.T) string {
			r := passedDrill()
			r.Repo = 0
			return write(t, r)
		}, drillFinished.Add(time.Hour), true, []string{"from pgBackRest's default repository"}, true},
		{"failed, an hour ago", func(t *testing.T) string { return write(t, failedDrill()) }, drillFinished.Add(time.Hour), false,
			[]string{"last drill FAILED, finished 1h0m0s ago (max 170h0m0s), from repo2: wrong cipher passphrase: nbms-restore-drill: exit status 1: ERROR: [029]"}, true},
		{"no drill yet", func(t *testing.T) string { return filepath.Join(dir, "never-written.json") }, drillFinished, false,
			[]string{"no restore drill has run yet: " + filepath.Join(dir, "never-written.json") + " does not exist"}, false},
		{"not JSON", raw("half a fi"), drillFinished, false, []string{"cannot read the last drill's status: backup: decoding drill status"}, false},
		{"not a drill's", raw(`{"type":"full","result":"ok","ok":true}`), drillFinished, false, []string{`is not a drill status (type "full")`}, false},
		{"passed without amcheck", raw(`{"type":"restore_drill","result":"ok","ok":true}`), drillFinished, false, []string{"a passed drill without amcheck figures"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check, last := backup.EvaluateDrill(tt.file(t), tt.now, backup.DefaultMaxDrillAge)
			assert.Equal(t, "restore drill", check.Name)
			assert.Equal(t, tt.wantOK, check.OK, check.Detail)
			for _, want := range tt.wantDetail {
				assert.Contains(t, check.Detail, want)
			}
			assert.Equal(t, tt.wantLast, last != nil)
		})
	}
}

func TestWriteDrillStatusReplacesTheFileWhole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "drill.json")
	require.NoError(t, backup.WriteDrillStatus(path, failedDrill()))
	require.NoError(t, backup.WriteDrillStatus(path, passedDrill()))

	got, err := backup.ReadDrillStatus(path)
	require.NoError(t, err)
	assert.Equal(t, passedDrill(), got, "the second drill, whole")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left beside it")
	info, err := entries[0].Info()
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), info.Mode().Perm(), "readable by monitoring and auditors")

	var fields map[string]any
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &fields))
	for _, key := range []string{"type", "result", "ok", "stanza", "repo", "started_at", "finished_at", "duration_ms", "label",
		"migration_version", "row_counts", "amcheck"} {
		assert.Contains(t, fields, key)
	}
	assert.NotContains(t, fields, "error", "a passed drill has none")
	assert.Equal(t, "restore_drill", fields["type"])
	assert.Equal(t, map[string]any{"indexes": float64(171), "relations": float64(112), "seconds": 2.5}, fields["amcheck"])

	assert.Error(t, backup.WriteDrillStatus(filepath.Join(dir, "nowhere", "drill.json"), passedDrill()), "no directory, no file")
	assert.EqualError(t, backup.WriteDrillStatus("", passedDrill()), "backup: no drill status file")
}

func TestReportWithTheDrill(t *testing.T) {
	now := diffStop.Add(time.Hour)
	fresh := func() backup.StatusReport {
		return backup.Evaluate(loadStanza(t, "info_full_diff.json"), &walMaxAt, now, backup.DefaultPolicy)
	}
	without := fresh()
	require.True(t, without.OK)
	data, err := json.Marshal(without)
	require.NoError(t, err)
	assert.NotContains(t, string(data), "drill", "without --drill-status the report is what it was")

	dir := t.TempDir()
	tests := []struct {
		name   string
		drill  *backup.DrillResult
		wantOK bool
		text   string
	}{
		{"passed", func() *backup.DrillResult { r := passedDrill(); r.FinishedAt = now.Add(-time.Hour); return &r }(), true,
			"  ok    restore drill    last drill passed, finished 1h0m0s ago (max 170h0m0s), from repo2"},
		{"failed", func() *backup.DrillResult { r := failedDrill(); r.FinishedAt = now.Add(-time.Hour); return &r }(), false,
			"  STALE restore drill    last drill FAILED, finished 1h0m0s ago"},
		{"none yet", nil, false, "  STALE restore drill    no restore drill has run yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".json")
			if tt.drill != nil {
				require.NoError(t, backup.WriteDrillStatus(path, *tt.drill))
			}
			r := fresh()
			check, last := backup.EvaluateDrill(path, now, backup.DefaultMaxDrillAge)
			backup.AddDrill(&r, check, last, backup.DefaultMaxDrillAge)
			assert.Equal(t, tt.wantOK, r.OK)
			require.Len(t, r.Checks, 5)
			var text bytes.Buffer
			require.NoError(t, r.WriteText(&text))
			assert.Contains(t, text.String(), tt.text)

			data, err := json.Marshal(r)
			require.NoError(t, err)
			var decoded map[string]any
			require.NoError(t, json.Unmarshal(data, &decoded))
			assert.Equal(t, float64(170*3600), decoded["policy"].(map[string]any)["max_drill_age_seconds"])
			if tt.drill != nil {
				assert.Equal(t, tt.drill.Result, decoded["last_drill"].(map[string]any)["result"])
			} else {
				assert.NotContains(t, decoded, "last_drill")
			}
		})
	}
}
