package config

import (
	"fmt"

	"github.com/robfig/cron/v3"
)

// CronParser reads the backup schedules: exactly the standard five fields
// (minute hour day-of-month month day-of-week), no seconds field and no
// @every or @daily forms, whose meaning a reader of the stack config would
// have to look up. The stack config validation and the backup scheduler
// both use it, so a schedule that deploys is one the scheduler runs.
var CronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// CheckCronSpec says why spec is not a standard 5-field cron spec.
func CheckCronSpec(spec string) error {
	if _, err := CronParser.Parse(spec); err != nil {
		return fmt.Errorf("%w (want 5 fields: minute hour day-of-month month day-of-week, e.g. \"30 1 * * 0\")", err)
	}
	return nil
}
