package backup

import (
	"log/slog"

	"github.com/robfig/cron/v3"
)

// NewSchedulerWithSeconds builds a Scheduler whose specs have a leading
// seconds field, so tests of the cron loop take seconds, not minutes.
func NewSchedulerWithSeconds(opts ScheduleOptions, logger *slog.Logger) (*Scheduler, error) {
	return newScheduler(opts, logger, cron.NewParser(cron.Second|cron.Minute|cron.Hour|cron.Dom|cron.Month|cron.Dow))
}

// Classify is Cause for pgBackRest's stderr.
var Classify = classify

// WriteDrillStatus is writeDrillStatus, for status files of tests' own.
var WriteDrillStatus = writeDrillStatus

// AddDrill adds the "restore drill" check to a report.
var AddDrill = (*StatusReport).addDrill
