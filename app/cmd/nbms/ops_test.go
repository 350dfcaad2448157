package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// `nbms backup-schedule --repo`, as the backup container's command line
// meets it: a bad repository is a usage error that names it, before any
// pgbackrest runs.
func TestBackupScheduleRejectsABadRepo(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"out of range", []string{"--repo", "1", "--repo", "257"}, `invalid value "257" for flag -repo: repository 257 is out of range (want 1-256`},
		{"duplicate", []string{"--repo", "2", "--repo", "2"}, `invalid value "2" for flag -repo: repository 2 is given twice`},
		{"not a number", []string{"--repo", "s3"}, `invalid value "s3" for flag -repo: repository "s3" is not a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := run(t, nil, append([]string{"backup-schedule"}, tt.args...)...)
			assert.Equal(t, exitUsage, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
			assert.Contains(t, errOut, tt.wantErr)
			assert.Empty(t, out, "nothing started: no log line")
		})
	}

	_, errOut, code := run(t, nil, "backup-schedule", "-h")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "-repo N\n")
	assert.Contains(t, errOut, "repeat for several (--repo 1 --repo 2)")
}
