package standby_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/infra/replication"
)

// TestSlotInvalidated is the standby away for longer than the slot's
// bound (max_slot_wal_keep_size, here the lowest allowed, 64 MB, passed
// with six segment switches while the standby is stopped): the primary
// invalidates the slot at its next checkpoint instead of filling its disk,
// and the status says so. The standby, started again, catches up from
// repo1 through restore_command and streams through the slot again, which
// PostgreSQL 15 takes back into use.
func TestSlotInvalidated(t *testing.T) {
	p := newPair(t, func(params *replication.Params) { params.MaxSlotWALKeepMB = 64 })
	p.standby.Stop("fast")
	var last string
	for range 6 {
		p.primary.Psql("INSERT INTO probe VALUES (floor(random() * 1e12)::bigint, 0, 'x')")
		last = p.primary.Psql("SELECT pg_walfile_name(pg_switch_wal())")
	}
	p.primary.WaitFor("SELECT last_archived_wal FROM pg_stat_archiver", last, time.Minute)
	p.primary.Psql("CHECKPOINT")
	assert.Equal(t, "f|t|lost", p.primary.Psql("SELECT active, restart_lsn IS NULL, wal_status FROM pg_replication_slots"))

	o := p.options()
	o.Standby = ""
	r := p.status(o)
	assert.False(t, r.OK)
	c := check(t, r, "primary_slot")
	assert.False(t, c.OK)
	assert.Contains(t, c.Detail, "slot nbms_standby was invalidated (wal_status lost)")
	assert.Equal(t, "no standby streams from slot nbms_standby (inactive)", check(t, r, "primary_streaming").Detail)

	p.standby.Start()
	require.Eventually(t, func() bool { return p.status(p.options()).OK }, 2*time.Minute, 250*time.Millisecond, "streaming again")
	assert.Equal(t, "t|reserved", p.primary.Psql("SELECT active, wal_status FROM pg_replication_slots"))
	log, err := os.ReadFile(p.standby.Log)
	require.NoError(t, err)
	assert.Contains(t, string(log), `restored log file "`+last+`" from archive`, "the WAL the slot no longer kept came from the repository")
	assert.Greater(t, strings.LastIndex(string(log), "started streaming WAL from primary"), strings.Index(string(log), `restored log file "`+last+`"`),
		"streaming resumed after the segments from the repository")
}
