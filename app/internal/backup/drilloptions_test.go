package backup_test

import (
	"flag"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/backup"
)

func TestDrillRunFlags(t *testing.T) {
	var opts backup.DrillRunOptions
	fs := flag.NewFlagSet("backup-drill", flag.ContinueOnError)
	opts.Flags(fs)
	require.NoError(t, fs.Parse(nil))
	assert.Equal(t, backup.DrillRunOptions{Drill: backup.DrillOptions{Tables: backup.DefaultDrillTables, Command: backup.DefaultDrillCommand}}, opts, "defaults")

	opts = backup.DrillRunOptions{}
	fs = flag.NewFlagSet("backup-drill", flag.ContinueOnError)
	opts.Flags(fs)
	require.NoError(t, fs.Parse([]string{"--config", "/etc/x.conf", "--stanza", "nbms", "--repo", "2", "--tables", "users",
		"--command", "/drill.sh", "--scratch", "/var/tmp", "--status", "/var/lib/drill.json", "--alert-url", "https://alerts.example/hook"}))
	assert.Equal(t, backup.DrillRunOptions{
		PgBackRest: backup.PgBackRest{ConfigPath: "/etc/x.conf", Stanza: "nbms"},
		Drill:      backup.DrillOptions{Repo: 2, Tables: "users", Command: "/drill.sh", ScratchDir: "/var/tmp", StatusFile: "/var/lib/drill.json"},
		AlertURL:   "https://alerts.example/hook",
	}, opts)
}

func TestNewSchedulerChecksTheDrill(t *testing.T) {
	dir := t.TempDir()
	valid := func() backup.ScheduleOptions {
		return backup.ScheduleOptions{
			FullSpec: "30 1 * * 0", DiffSpec: "30 1 * * 1-6", Repos: []int{1, 2},
			DrillSpec: "15 4 * * 3",
			Drill: backup.DrillOptions{Repo: 2, Tables: "users", Command: backup.DefaultDrillCommand,
				ScratchDir: dir, StatusFile: filepath.Join(dir, "drill.json")},
		}
	}
	tests := []struct {
		name    string
		change  func(*backup.ScheduleOptions)
		wantErr []string // "": valid
	}{
		{"valid", func(*backup.ScheduleOptions) {}, nil},
		{"the repository left to pgBackRest", func(o *backup.ScheduleOptions) { o.Drill.Repo = 0 }, nil},
		{"any repository when the scheduler names none", func(o *backup.ScheduleOptions) { o.Repos = nil; o.Drill.Repo = 7 }, nil},
		{"the script's scratch default", func(o *backup.ScheduleOptions) { o.Drill.ScratchDir = "" }, nil},
		{"no drill, no drill options", func(o *backup.ScheduleOptions) { o.DrillSpec = ""; o.Drill = backup.DrillOptions{} }, nil},
		{"bad spec", func(o *backup.ScheduleOptions) { o.DrillSpec = "15 4 * *" },
			[]string{`backup: drill schedule "15 4 * *": expected exactly 5 fields, found 4`, "want 5 fields"}},
		{"no status file", func(o *backup.ScheduleOptions) { o.Drill.StatusFile = "" },
			[]string{"backup: --drill-status is required: the file where each drill's result is recorded"}},
		{"status file in no directory", func(o *backup.ScheduleOptions) { o.Drill.StatusFile = filepath.Join(dir, "nowhere", "drill.json") },
			[]string{`backup: --drill-status "` + filepath.Join(dir, "nowhere", "drill.json") + `": its directory ` + filepath.Join(dir, "nowhere") + " does not exist"}},
		{"a repository the scheduler does not back up", func(o *backup.ScheduleOptions) { o.Drill.Repo = 3 },
			[]string{"backup: --drill-repo 3 is not one of the repositories backed up (--repo 1,2)"}},
		{"repository out of range", func(o *backup.ScheduleOptions) { o.Repos = nil; o.Drill.Repo = 300 },
			[]string{"backup: --drill-repo: repository 300 is out of range (want 1-256"}},
		{"relative scratch", func(o *backup.ScheduleOptions) { o.Drill.ScratchDir = "scratch" },
			[]string{`backup: --drill-scratch "scratch" must be an absolute path`}},
		{"no command", func(o *backup.ScheduleOptions) { o.Drill.Command = "" },
			[]string{"backup: --drill-command must name the restore drill script"}},
		{"drill options without a drill", func(o *backup.ScheduleOptions) { o.DrillSpec = "" },
			[]string{"backup: --drill-repo, --drill-scratch and --drill-status configure restore drills, which only --drill SPEC schedules"}},
		{"every problem at once", func(o *backup.ScheduleOptions) {
			o.DrillSpec, o.Drill.StatusFile, o.Drill.Repo = "@weekly", "", 4
		}, []string{`drill schedule "@weekly"`, "--drill-status is required", "--drill-repo 4 is not one of"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := valid()
			tt.change(&opts)
			_, err := backup.NewScheduler(opts, slog.New(slog.DiscardHandler))
			if tt.wantErr == nil {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, want := range tt.wantErr {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestDrillRunOptionsValidate(t *testing.T) {
	dir := t.TempDir()
	valid := backup.DrillRunOptions{Drill: backup.DrillOptions{Tables: "users", Command: "nbms-restore-drill", StatusFile: filepath.Join(dir, "drill.json")}}
	require.NoError(t, valid.Validate())

	bad := valid
	bad.Drill.StatusFile, bad.Drill.ScratchDir, bad.AlertURL = "", "tmp", "ftp://alerts"
	err := bad.Validate()
	require.Error(t, err)
	// backup-drill's flags have no prefix.
	assert.Contains(t, err.Error(), "backup: --status is required")
	assert.Contains(t, err.Error(), `backup: --scratch "tmp" must be an absolute path`)
	assert.Contains(t, err.Error(), `backup: alert URL "ftp://alerts" must be an absolute http(s) URL`)
}
