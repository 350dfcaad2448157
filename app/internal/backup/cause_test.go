package backup_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/backup"
)

// TestCause classifies what pgBackRest 2.45 printed on stderr when each
// failure was provoked for real against versitygw (by hand, with
// --io-timeout=1; testdata/errors).
func TestCause(t *testing.T) {
	tests := map[string]string{
		"refused.txt":                 "repository unreachable",
		"dns.txt":                     "repository unreachable",
		"no_answer.txt":               "repository unreachable",
		"relay_closed.txt":            "repository unreachable",
		"relay_closed_eof.txt":        "repository unreachable",
		"wrong_secret_key.txt":        "credentials refused",
		"unknown_access_key.txt":      "stanza not found: wrong bucket, path or access key",
		"wrong_bucket.txt":            "stanza not found: wrong bucket, path or access key",
		"wrong_cipher_pass.txt":       "wrong cipher passphrase",
		"wrong_cipher_pass_flush.txt": "wrong cipher passphrase",
		"cert_expired.txt":            "certificate not trusted or expired",
		"cert_other_ca.txt":           "certificate not trusted or expired",
		"cert_other_ca_leaf_only.txt": "certificate not trusted or expired",
		"cert_wrong_name.txt":         "certificate names another host",
		"storage_full.txt":            "repository storage full",
		"wal_not_archived.txt":        "WAL not reaching the repository",
	}
	files, err := filepath.Glob(filepath.Join("testdata", "errors", "*.txt"))
	require.NoError(t, err)
	require.Len(t, files, len(tests), "every recorded error is classified here")
	for name, want := range tests {
		t.Run(name, func(t *testing.T) {
			stderr, err := os.ReadFile(filepath.Join("testdata", "errors", name))
			require.NoError(t, err)
			assert.Equal(t, want, backup.Classify(string(stderr)))
		})
	}

	t.Run("unknown", func(t *testing.T) {
		assert.Empty(t, backup.Classify("ERROR: [050]: unable to acquire lock on file '/tmp/nbms/lock/nbms-backup.lock': Resource temporarily unavailable\n       HINT: is another pgBackRest process running?\n"))
		assert.Empty(t, backup.Classify(""), "no ERROR line")
		assert.Empty(t, backup.Cause(errors.New("backup: not from pgbackrest")))
	})

	t.Run("from a failed command", func(t *testing.T) {
		// A real pgbackrest run: Cause reads its whole stderr, which the
		// error's message only ends.
		err := backup.PgBackRest{ConfigPath: filepath.Join(t.TempDir(), "missing.conf"), Stanza: "nbms"}.StanzaCreate(context.Background())
		require.Error(t, err)
		assert.Empty(t, backup.Cause(err), "[055] for the config file is not the stanza's info file")
	})
}
