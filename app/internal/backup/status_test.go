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

// Facts of the recorded run in testdata (see testdata/README.md).
var (
	diffStop  = time.Unix(1795846249, 0)
	walMaxAt  = time.Unix(1795846249, 0)
	recorded  = "20261128-061044F_20261128-061047D"
	fullLabel = "20261128-061044F"
)

func loadStanza(t *testing.T, file string) backup.Stanza {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", file))
	require.NoError(t, err)
	stanzas, err := backup.ParseInfo(data)
	require.NoError(t, err)
	require.Len(t, stanzas, 1)
	return stanzas[0]
}

func TestParseInfoRecorded(t *testing.T) {
	s := loadStanza(t, "info_full_diff.json")
	assert.Equal(t, "nbms", s.Name)
	require.Len(t, s.DB, 1)
	// 7713100879195457336 > 2^53: a float64 decode would end in ...7408.
	assert.Equal(t, uint64(7713100879195457336), s.DB[0].SystemID)
	require.Len(t, s.Backup, 2)
	assert.Equal(t, backup.Full, s.Backup[0].Type)
	assert.Equal(t, backup.Diff, s.Backup[1].Type)
	assert.Equal(t, recorded, s.Backup[1].Label)
	assert.Equal(t, int64(23254835), s.Backup[1].Info.Size)
	assert.Equal(t, diffStop.UTC(), s.Backup[1].Stop())

	missing := loadStanza(t, "info_missing_stanza.json")
	assert.Equal(t, 1, missing.Status.Code, "info exits 0 for a missing stanza; only the code tells")
	assert.Equal(t, "missing stanza path", missing.Status.Message)

	_, err := backup.ParseInfo([]byte(`{"not":"an array"}`))
	assert.Error(t, err)
}

func TestEvaluate(t *testing.T) {
	hours := func(full, any, wal float64) backup.Policy {
		h := func(f float64) time.Duration { return time.Duration(f * float64(time.Hour)) }
		return backup.Policy{MaxFullAge: h(full), MaxBackupAge: h(any), MaxWALAge: h(wal)}
	}
	diffWithError := func(t *testing.T) backup.Stanza {
		s := loadStanza(t, "info_full_diff.json")
		s.Backup[1].Error = true
		return s
	}
	archiveBehind := func(t *testing.T) backup.Stanza {
		s := loadStanza(t, "info_full_diff.json")
		behind := "000000010000000000000004" // the diff needs ...05
		s.Archive[0].Max = &behind
		return s
	}
	fromFile := func(name string) func(*testing.T) backup.Stanza {
		return func(t *testing.T) backup.Stanza { return loadStanza(t, name) }
	}
	walAt := walMaxAt

	tests := []struct {
		name       string
		stanza     func(*testing.T) backup.Stanza
		walAt      *time.Time
		now        time.Time
		policy     backup.Policy
		wantOK     bool
		wantFailed []string // names of the checks that fail
		wantLast   string   // label of the newest usable backup
	}{
		{"fresh", fromFile("info_full_diff.json"), &walAt, diffStop.Add(time.Hour), backup.DefaultPolicy, true, nil, recorded},
		{"exactly at the limits", fromFile("info_full_diff.json"), &walAt, diffStop.Add(26 * time.Hour), backup.Policy{MaxFullAge: 26*time.Hour + 3*time.Second, MaxBackupAge: 26 * time.Hour, MaxWALAge: 26 * time.Hour}, true, nil, recorded},
		{"full too old", fromFile("info_full_diff.json"), &walAt, diffStop.Add(90 * time.Minute), hours(1, 2, 2), false, []string{"full_backup_age"}, recorded},
		{"no backup for too long", fromFile("info_full_diff.json"), &walAt, diffStop.Add(3 * time.Hour), hours(240, 1, 240), false, []string{"backup_age"}, recorded},
		{"WAL archive stopped", fromFile("info_full_diff.json"), &walAt, diffStop.Add(3 * time.Hour), hours(240, 240, 1), false, []string{"wal_archive"}, recorded},
		{"WAL arrival time unknown", fromFile("info_full_diff.json"), nil, diffStop.Add(time.Hour), backup.DefaultPolicy, false, []string{"wal_archive"}, recorded},
		{"WAL archive behind the newest backup", archiveBehind, &walAt, diffStop.Add(time.Hour), backup.DefaultPolicy, false, []string{"wal_archive"}, recorded},
		{"backup with errors is not counted", diffWithError, &walAt, diffStop.Add(time.Hour), backup.DefaultPolicy, true, nil, fullLabel},
		{"missing stanza", fromFile("info_missing_stanza.json"), nil, diffStop, backup.DefaultPolicy, false,
			[]string{"stanza", "full_backup_age", "backup_age", "wal_archive"}, ""},
		{"stanza without backups", fromFile("info_no_backups.json"), nil, diffStop, backup.DefaultPolicy, false,
			[]string{"stanza", "full_backup_age", "backup_age", "wal_archive"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := backup.Evaluate(tt.stanza(t), tt.walAt, tt.now, tt.policy)
			assert.Equal(t, tt.wantOK, r.OK)
			var failed []string
			for _, c := range r.Checks {
				if !c.OK {
					failed = append(failed, c.Name)
				}
			}
			assert.Equal(t, tt.wantFailed, failed, "%+v", r.Checks)
			assert.Len(t, r.Checks, 4, "every check is reported, passing or not")
			if tt.wantLast == "" {
				assert.Nil(t, r.LastBackup)
			} else {
				require.NotNil(t, r.LastBackup)
				assert.Equal(t, tt.wantLast, r.LastBackup.Label)
			}
		})
	}
}

func TestReportOutput(t *testing.T) {
	stale := backup.Evaluate(loadStanza(t, "info_full_diff.json"), &walMaxAt, diffStop.Add(48*time.Hour), backup.DefaultPolicy)
	fresh := backup.Evaluate(loadStanza(t, "info_full_diff.json"), &walMaxAt, diffStop.Add(time.Minute), backup.DefaultPolicy)

	tests := []struct {
		name     string
		report   backup.StatusReport
		wantText []string
	}{
		{"stale", stale, []string{"stanza nbms", "STALE backup_age", "newest backup " + recorded + " (diff) finished 48h0m0s ago (max 26h0m0s)", "backups are STALE"}},
		{"fresh", fresh, []string{"ok    full_backup_age", "ok    wal_archive", "backups are fresh"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var text bytes.Buffer
			require.NoError(t, tt.report.WriteText(&text))
			for _, want := range tt.wantText {
				assert.Contains(t, text.String(), want)
			}

			data, err := json.Marshal(tt.report)
			require.NoError(t, err)
			var decoded map[string]any
			require.NoError(t, json.Unmarshal(data, &decoded))
			assert.Equal(t, tt.report.OK, decoded["ok"])
			assert.Equal(t, "nbms", decoded["stanza"])
			assert.Equal(t, "000000010000000000000005", decoded["wal_max"])
			last := decoded["last_backup"].(map[string]any)
			assert.Equal(t, recorded, last["label"])
			assert.Equal(t, float64(23254835), last["size_bytes"])
			assert.Len(t, decoded["checks"], 4)
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name    string
		policy  backup.Policy
		wantErr string
	}{
		{"default", backup.DefaultPolicy, ""},
		{"zero WAL age", backup.Policy{MaxFullAge: time.Hour, MaxBackupAge: time.Hour}, "max WAL age must be positive"},
		{"negative full age", backup.Policy{MaxFullAge: -time.Hour, MaxBackupAge: time.Hour, MaxWALAge: time.Hour}, "max full age must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.policy.Validate()
			if tt.wantErr == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tt.wantErr)
			}
		})
	}
}
