package backup

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// Policy is how old the newest backups and WAL may be before monitoring
// should page someone.
type Policy struct {
	// MaxFullAge bounds the age of the newest full backup. With the default
	// weekly full schedule a week plus the time a backup takes is normal.
	MaxFullAge time.Duration
	// MaxBackupAge bounds the age of the newest backup of any type (daily
	// differentials by default).
	MaxBackupAge time.Duration
	// MaxWALAge bounds the age of the newest WAL segment in the repository.
	// PostgreSQL switches segments only when there are writes (after
	// archive_timeout), so an idle database legitimately archives nothing:
	// the default leans on the daily backup, which always switches a
	// segment, and catches archiving that silently stopped. Lower it to a
	// few times archive_timeout where writes never pause.
	MaxWALAge time.Duration
}

// DefaultPolicy matches the default schedule (weekly full, daily
// differential) with two hours of slack for a slow backup.
var DefaultPolicy = Policy{
	MaxFullAge:   7*24*time.Hour + 2*time.Hour,
	MaxBackupAge: 26 * time.Hour,
	MaxWALAge:    26 * time.Hour,
}

// Validate rejects a policy that would never or always be met.
func (p Policy) Validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"max full age", p.MaxFullAge}, {"max backup age", p.MaxBackupAge}, {"max WAL age", p.MaxWALAge}} {
		if d.v <= 0 {
			return fmt.Errorf("backup: %s must be positive, got %s", d.name, d.v)
		}
	}
	return nil
}

// StatusOptions says which stanza to check and against what policy.
type StatusOptions struct {
	PgBackRest PgBackRest
	Policy     Policy
	// DrillStatusFile, when set, is a drill's status file (DrillOptions'
	// StatusFile): the report gets the "restore drill" check
	// (EvaluateDrill), against MaxDrillAge.
	DrillStatusFile string
	MaxDrillAge     time.Duration
}

// Flags registers the status flags on fs, with DefaultPolicy as defaults.
func (o *StatusOptions) Flags(fs *flag.FlagSet) {
	o.Policy = DefaultPolicy
	fs.StringVar(&o.PgBackRest.ConfigPath, "config", "", "pgbackrest.conf path (default: pgBackRest's own lookup, PGBACKREST_CONFIG)")
	fs.StringVar(&o.PgBackRest.Stanza, "stanza", "", "stanza to check (default: PGBACKREST_STANZA, or the only one)")
	fs.DurationVar(&o.Policy.MaxFullAge, "max-full-age", DefaultPolicy.MaxFullAge, "stale when the newest full backup is older")
	fs.DurationVar(&o.Policy.MaxBackupAge, "max-backup-age", DefaultPolicy.MaxBackupAge, "stale when the newest backup of any type is older")
	fs.DurationVar(&o.Policy.MaxWALAge, "max-wal-age", DefaultPolicy.MaxWALAge, "stale when the newest archived WAL segment is older")
	fs.StringVar(&o.DrillStatusFile, "drill-status", "", "restore drills' status `file` (backup-schedule --drill-status): adds the check \"restore drill\", which fails unless the last drill passed within --max-drill-age (default: no such check)")
	fs.DurationVar(&o.MaxDrillAge, "max-drill-age", DefaultMaxDrillAge, "with --drill-status: stale when the last drill finished longer ago")
}

// Check is one freshness verdict.
type Check struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Detail says what was found, and on failure what was expected.
	Detail string `json:"detail"`
}

// BackupSummary describes one backup in a StatusReport.
type BackupSummary struct {
	Label     string    `json:"label"`
	Type      Type      `json:"type"`
	Stop      time.Time `json:"stop"`
	AgeSecond int64     `json:"age_seconds"`
	SizeBytes int64     `json:"size_bytes"`
	RepoBytes int64     `json:"repo_size_bytes"`
}

// StatusReport is the verdict on one stanza. OK is false when any check
// failed; monitoring reads OK (or the exit status) and humans the checks.
type StatusReport struct {
	Stanza        string         `json:"stanza"`
	CheckedAt     time.Time      `json:"checked_at"`
	OK            bool           `json:"ok"`
	StatusCode    int            `json:"status_code"`
	StatusMessage string         `json:"status_message"`
	BackupRunning bool           `json:"backup_running"`
	LastFull      *BackupSummary `json:"last_full"`
	LastBackup    *BackupSummary `json:"last_backup"`
	WALMax        string         `json:"wal_max,omitempty"`
	WALArchivedAt *time.Time     `json:"wal_archived_at,omitempty"`
	Policy        struct {
		MaxFullAgeSeconds   int64 `json:"max_full_age_seconds"`
		MaxBackupAgeSeconds int64 `json:"max_backup_age_seconds"`
		MaxWALAgeSeconds    int64 `json:"max_wal_age_seconds"`
		// Only with StatusOptions.DrillStatusFile.
		MaxDrillAgeSeconds int64 `json:"max_drill_age_seconds,omitempty"`
	} `json:"policy"`
	// LastDrill is the last restore drill, when StatusOptions names a
	// drill status file and it could be read.
	LastDrill *DrillResult `json:"last_drill,omitempty"`
	Checks    []Check      `json:"checks"`
}

// Status asks pgBackRest for the stanza's backups and newest archived WAL
// and judges them against opts.Policy. An error means the question could
// not be asked (pgbackrest missing, repository unreadable); a stale or
// missing backup is a report with OK false.
func Status(ctx context.Context, opts StatusOptions) (StatusReport, error) {
	if err := opts.Policy.Validate(); err != nil {
		return StatusReport{}, err
	}
	if opts.DrillStatusFile != "" && opts.MaxDrillAge <= 0 {
		return StatusReport{}, fmt.Errorf("backup: max drill age must be positive, got %s", opts.MaxDrillAge)
	}
	stanzas, err := opts.PgBackRest.Info(ctx)
	if err != nil {
		return StatusReport{}, err
	}
	stanza, err := find(stanzas, opts.PgBackRest.Stanza)
	if err != nil {
		return StatusReport{}, err
	}
	var walTime *time.Time
	if len(stanza.Archive) > 0 && stanza.Archive[0].Max != nil {
		// The last archive entry is the current PostgreSQL version's.
		a := stanza.Archive[len(stanza.Archive)-1]
		t, err := opts.PgBackRest.newestWALTime(ctx, stanza.Name, a.ID, *a.Max)
		if err != nil {
			return StatusReport{}, err
		}
		walTime = &t
	}
	now := time.Now()
	r := Evaluate(stanza, walTime, now, opts.Policy)
	if opts.DrillStatusFile != "" {
		check, last := EvaluateDrill(opts.DrillStatusFile, now, opts.MaxDrillAge)
		r.addDrill(check, last, opts.MaxDrillAge)
	}
	return r, nil
}

// addDrill adds the "restore drill" check (EvaluateDrill) to r.
func (r *StatusReport) addDrill(check Check, last *DrillResult, maxAge time.Duration) {
	r.Policy.MaxDrillAgeSeconds = int64(maxAge / time.Second)
	r.LastDrill = last
	r.Checks = append(r.Checks, check)
	r.OK = r.OK && check.OK
}

// Evaluate judges stanza at now. walArchivedAt is when the newest archived
// WAL segment reached the repository (nil when none has).
func Evaluate(stanza Stanza, walArchivedAt *time.Time, now time.Time, p Policy) StatusReport {
	r := StatusReport{
		Stanza:        stanza.Name,
		CheckedAt:     now.UTC(),
		StatusCode:    stanza.Status.Code,
		StatusMessage: stanza.Status.Message,
		BackupRunning: stanza.Status.Lock.Backup.Held,
	}
	r.Policy.MaxFullAgeSeconds = int64(p.MaxFullAge / time.Second)
	r.Policy.MaxBackupAgeSeconds = int64(p.MaxBackupAge / time.Second)
	r.Policy.MaxWALAgeSeconds = int64(p.MaxWALAge / time.Second)
	add := func(name string, ok bool, format string, args ...any) {
		r.Checks = append(r.Checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}

	add("stanza", stanza.Status.Code == 0, "pgBackRest status %d: %s", stanza.Status.Code, stanza.Status.Message)

	full, hasFull := stanza.latest(Full)
	if hasFull {
		r.LastFull = summarize(full, now)
		add("full_backup_age", now.Sub(full.Stop()) <= p.MaxFullAge, "newest full backup %s finished %s ago (max %s)",
			full.Label, roundAge(now.Sub(full.Stop())), p.MaxFullAge)
	} else {
		add("full_backup_age", false, "no full backup without errors in the repository")
	}

	last, hasAny := stanza.latest()
	if hasAny {
		r.LastBackup = summarize(last, now)
		add("backup_age", now.Sub(last.Stop()) <= p.MaxBackupAge, "newest backup %s (%s) finished %s ago (max %s)",
			last.Label, last.Type, roundAge(now.Sub(last.Stop())), p.MaxBackupAge)
	} else {
		add("backup_age", false, "no backup without errors in the repository")
	}

	var walMax string
	if n := len(stanza.Archive); n > 0 && stanza.Archive[n-1].Max != nil {
		walMax = *stanza.Archive[n-1].Max
	}
	r.WALMax = walMax
	switch {
	case walMax == "":
		add("wal_archive", false, "no WAL segment has been archived")
	case hasAny && walSegmentBefore(walMax, last.Archive.Stop):
		// A restore of the newest backup replays WAL up to its stop
		// segment; without it the backup cannot even be made consistent.
		add("wal_archive", false, "newest archived WAL %s is before %s, the last segment backup %s needs", walMax, last.Archive.Stop, last.Label)
	case walArchivedAt == nil:
		add("wal_archive", false, "arrival time of WAL segment %s unknown", walMax)
	default:
		at := walArchivedAt.UTC()
		r.WALArchivedAt = &at
		add("wal_archive", now.Sub(at) <= p.MaxWALAge, "newest archived WAL %s arrived %s ago (max %s)",
			walMax, roundAge(now.Sub(at)), p.MaxWALAge)
	}

	r.OK = true
	for _, c := range r.Checks {
		r.OK = r.OK && c.OK
	}
	return r
}

// walSegmentBefore reports whether segment a sorts before b. WAL file
// names are fixed-width hexadecimal (timeline, log, segment), so their
// string order is their order in the WAL stream.
func walSegmentBefore(a, b string) bool { return b != "" && a < b }

func summarize(b BackupInfo, now time.Time) *BackupSummary {
	return &BackupSummary{
		Label:     b.Label,
		Type:      b.Type,
		Stop:      b.Stop(),
		AgeSecond: int64(now.Sub(b.Stop()) / time.Second),
		SizeBytes: b.Info.Size,
		RepoBytes: b.Info.Repository.Size,
	}
}

// roundAge keeps ages readable ("26h3m0s", not nanoseconds).
func roundAge(d time.Duration) time.Duration { return d.Round(time.Second) }

// WriteText writes the report for a human: one line per check, then the
// verdict.
func (r StatusReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "stanza %s (checked %s)\n", r.Stanza, r.CheckedAt.Format(time.RFC3339))
	for _, c := range r.Checks {
		mark := "ok   "
		if !c.OK {
			mark = "STALE"
		}
		fmt.Fprintf(&b, "  %s %-16s %s\n", mark, c.Name, c.Detail)
	}
	if r.BackupRunning {
		b.WriteString("  a backup or expire is running now\n")
	}
	if r.OK {
		b.WriteString("backups are fresh\n")
	} else {
		b.WriteString("backups are STALE\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
