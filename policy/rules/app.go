package rules

import (
	"errors"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/conventions"
)

// shownReason keeps a config problem's reason unless it would quote a
// secret-flagged value; config.Error already hides contract secrets, but a
// whole-secret Envs array makes every value secret.
func shownReason(reason string, v Value) string {
	if s, _ := v.Str(); v.Secret && s != "" && strings.Contains(reason, s) {
		return "has an invalid value (not shown: the value is secret)"
	}
	return reason
}

// secretLooking matches the names of variables that carry a secret in the
// programs the stack runs besides the app (POSTGRES_PASSWORD,
// REDISCLI_AUTH, a TLS key): the contract cannot declare those.
var secretLooking = regexp.MustCompile(`(?i)(PASSWORD|PASSPHRASE|SECRET|TOKEN|PRIVATE_KEY|TLS_KEY|_AUTH|_DSN)$`)

// checkSecretDelivery reports secrets in a container's environment, which
// Docker shows to anyone who may inspect the container, whether or not the
// state encrypts the value: a contract secret set as NAME instead of
// NAME_FILE, or a variable whose name says it is a secret. It never needs
// the value itself.
func checkSecretDelivery(r Resource, env map[string]Value, f *findings) {
	contract := map[string]bool{}
	for _, v := range config.Vars() {
		contract[v.Name] = true
		val, ok := env[v.Name]
		if s, _ := val.Str(); !ok || !v.Secret || s == "" {
			continue
		}
		state := "its value is encrypted in the state, but not in Docker's metadata"
		if !val.Secret {
			state = "and in plain text in the state too"
		}
		f.violation("%s: %s is a secret variable but is set in the container's environment, which `docker inspect` shows (%s); "+
			"deliver it as a file on a volume only this tier mounts and set %s%s to its path.", describe(r), v.Name, state, v.Name, config.FileSuffix)
	}
	for _, name := range slices.Sorted(maps.Keys(env)) {
		if s, _ := env[name].Str(); contract[name] || s == "" || !secretLooking.MatchString(name) {
			continue
		}
		f.violation("%s: %s looks like a secret and is set in the container's environment, which `docker inspect` shows; "+
			"deliver it as a file (%s%s) instead.", describe(r), name, name, config.FileSuffix)
	}
}

var envContract = Rule{
	Name: "nbms-app-configure-env-contract",
	Summary: "Checks that the app container's environment satisfies the env contract of app/config for its profile (every production-required variable " +
		"present and valid, NBMS_ENV matching the nbms.profile label, HSTS at or above minHstsSeconds) and that no secret is in any container's environment, " +
		"which `docker inspect` shows (secrets arrive as files: NAME_FILE)",
	Benchmark: "NBMS env contract (app/config); CIS Docker Benchmark v1.6.0 4.10 (secrets)",
	Level:     Mandatory,
	Remediation: "Build the app container's Envs from config.Vars(): set every variable RequiredIn(prod) to a valid value, set NBMS_ENV to the nbms.profile label, " +
		"and give every secret (SECRET_KEY, DATABASE_URL, REDIS_URL, ..., and other programs' passwords) as a file on a volume only its tier mounts, " +
		"with NAME_FILE naming the file, never as a value in Envs. " +
		"Run `nbms predeploy-check` locally with the same environment to see every problem at once.",
	Scope: ResourceScope, Types: containerOnly,
	Config: map[string]Property{
		"minHstsSeconds": {Type: "integer", Default: float64(config.MinHSTSSeconds), Minimum: floatPtr(config.MinHSTSSeconds), Description: "Smallest SECURE_HSTS_SECONDS accepted in production (never below app/config's floor)."},
	},
	check: func(r Resource, s Settings, f *findings) {
		env, st := envOf(r)
		// Last, so that a contract problem of the same variable comes first.
		defer checkSecretDelivery(r, env, f)
		if labelOf(r, LabelRole) != RoleApp {
			return
		}
		if st.blind() {
			f.unknown("envs", st.blindValue)
			return
		}
		if st.bad > 0 {
			f.violation("%s: %d envs entries are not KEY=VALUE strings.", describe(r), st.bad)
		}
		plain := make(map[string]string, len(env))
		for k, v := range env {
			plain[k], _ = v.Str()
		}
		settings, err := config.Parse(plain)
		var cerr *config.Error
		if errors.As(err, &cerr) {
			for _, p := range cerr.Problems {
				check := ""
				if p.Check != "" {
					check = " [" + p.Check + "]"
				}
				f.violation("%s: env contract: %s%s %s.", describe(r), p.Var, check, strings.TrimSuffix(shownReason(p.Reason, env[p.Var]), "."))
			}
		} else if err != nil {
			f.violation("%s: env contract could not be checked: %s", describe(r), err.Error())
		}
		profileLabel := labelOf(r, LabelProfile)
		if profileLabel != "" && settings != nil && string(settings.Profile) != "" && string(settings.Profile) != profileLabel {
			f.violation("%s: NBMS_ENV is %q but the nbms.profile label is %q; they must match.", describe(r), settings.Profile, profileLabel)
		}
		if settings != nil && settings.Production() && err == nil && settings.HSTSSeconds < s.Int("minHstsSeconds") {
			f.violation("%s: SECURE_HSTS_SECONDS is %d; this organisation requires at least %d.", describe(r), settings.HSTSSeconds, s.Int("minHstsSeconds"))
		}
	},
}

// originVars are the variables whose values go through config.CheckOrigin.
var originVars = []string{"CORS_ALLOWED_ORIGINS", "CSRF_TRUSTED_ORIGINS"}

var noWildcardCORS = Rule{
	Name: "nbms-app-disallow-wildcard-cors",
	Summary: "Checks that CORS_ALLOWED_ORIGINS and CSRF_TRUSTED_ORIGINS list exact origins only: no *, no null, no patterns, https in production " +
		"(the app's own rule, config.CheckOrigin)",
	Benchmark: "OWASP ASVS 5.0 3.4.2; NBMS env contract (config.CheckOrigin)",
	Level:     Mandatory,
	Remediation: "Set CORS_ALLOWED_ORIGINS and CSRF_TRUSTED_ORIGINS to comma-separated exact origins such as https://portal.example.org " +
		"(lower case, no path, https in production); leave CORS_ALLOWED_ORIGINS empty to disable CORS.",
	Scope: ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		env, st := envOf(r)
		prod := production(r)
		for _, name := range originVars {
			v, ok := env[name]
			if !ok {
				if st.blind() && labelOf(r, LabelRole) == RoleApp {
					f.unknown(name, st.blindValue)
				}
				continue
			}
			raw, _ := v.Str()
			for _, origin := range strings.Split(raw, ",") {
				origin = strings.TrimSpace(origin)
				if origin == "" {
					continue
				}
				if err := config.CheckOrigin(origin, prod); err != nil {
					msg := err.Error()
					if v.Secret {
						msg = strings.ReplaceAll(msg, origin, "[secret]")
					}
					f.violation("%s: %s: %s.", describe(r), name, msg)
				}
			}
		}
	},
}

var offHostBackup = Rule{
	Name: "nbms-backup-require-offhost-encrypted-repository",
	Summary: "Checks that in production the backup scheduler container (nbms.role=backup) backs up to a second, off-host pgBackRest repository " +
		"(NBMS_BACKUP_OFFHOST_REPO, s3://...) encrypted client-side (NBMS_BACKUP_OFFHOST_CIPHER=aes-256-cbc): backups on the database's own host " +
		"are lost with it",
	Benchmark: "NIST SP 800-53 CP-9(3), CP-6; CIS Controls v8 11.3, 11.4",
	Level:     Mandatory,
	Remediation: "Set nbms:backup.offHost (endpoint, bucket, region, path) and the secrets nbms:backupS3Key and nbms:backupS3KeySecret: the program then " +
		"backs up to that repository, encrypted with a passphrase it generates, and sets both variables on the role=backup container.",
	Scope: ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		if labelOf(r, LabelRole) != RoleBackup || !production(r) {
			return
		}
		env, st := envOf(r)
		repo, okRepo := env[EnvBackupOffHostRepo]
		cipher, okCipher := env[EnvBackupOffHostCipher]
		if (!okRepo || !okCipher) && st.blind() {
			f.unknown(EnvBackupOffHostRepo, st.blindValue)
			return
		}
		if s, _ := repo.Str(); !okRepo || !strings.HasPrefix(s, "s3://") || len(s) <= len("s3://") {
			f.violation("%s must back up to an off-host repository: %s = %s (want s3://<endpoint>/<bucket><path>).", describe(r), EnvBackupOffHostRepo, repo.Display())
		}
		if s, _ := cipher.Str(); !okCipher || s != conventions.BackupOffHostCipher {
			f.violation("%s must encrypt the off-host repository: %s = %s (want %s).", describe(r), EnvBackupOffHostCipher, cipher.Display(), conventions.BackupOffHostCipher)
		}
	},
}

var restoreDrill = Rule{
	Name: "nbms-backup-require-restore-drill",
	Summary: "Checks that in production the backup scheduler container (nbms.role=backup) runs a scheduled restore drill " +
		"(NBMS_BACKUP_SCHEDULE_DRILL, a cron schedule), from the off-host repository (NBMS_BACKUP_DRILL_REPO=2) when it has one " +
		"(nbms-backup-require-offhost-encrypted-repository requires one): a backup nobody restores is a hope, and the copy that survives the host is the one to prove",
	Benchmark: "NIST SP 800-53 CP-4, CP-9(1); CIS Controls v8 11.5",
	Level:     Mandatory,
	Remediation: "Keep nbms:backup.drillCron set (default \"15 4 * * 3\", weekly) with nbms:backup.offHost: the program then schedules the drill " +
		"from the off-host repository and sets both variables on the role=backup container.",
	Scope: ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		if labelOf(r, LabelRole) != RoleBackup || !production(r) {
			return
		}
		env, st := envOf(r)
		schedule, okSchedule := env[conventions.EnvBackupScheduleDrill]
		repo, okRepo := env[conventions.EnvBackupDrillRepo]
		if (!okSchedule || !okRepo) && st.blind() {
			f.unknown(conventions.EnvBackupScheduleDrill, st.blindValue)
			return
		}
		if s, _ := schedule.Str(); !okSchedule || !validSchedule(s) {
			f.violation("%s must schedule a restore drill: %s = %s (want a cron schedule, e.g. \"15 4 * * 3\").", describe(r), conventions.EnvBackupScheduleDrill, schedule.Display())
		}
		// Without an off-host repository the drill restores the local one;
		// the missing repository is offHostBackup's finding, not this one's.
		_, offHost := env[conventions.EnvBackupOffHostRepo]
		if n, isNum := repo.Num(); !okRepo || !isNum || (offHost && n != conventions.BackupOffHostRepo) {
			f.violation("%s must drill the off-host repository: %s = %s (want %d).", describe(r), conventions.EnvBackupDrillRepo, repo.Display(), conventions.BackupOffHostRepo)
		}
	},
}

// cronFields accepts the 5-field cron syntax and the @-macros.
func validSchedule(s string) bool {
	s = strings.TrimSpace(s)
	switch s {
	case "@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually":
		return true
	}
	fields := strings.Fields(s)
	if len(fields) != 5 {
		return false
	}
	for _, fl := range fields {
		for _, c := range fl {
			if !(c >= '0' && c <= '9') && !strings.ContainsRune("*/,-?", c) && !(c >= 'A' && c <= 'Z') && !(c >= 'a' && c <= 'z') {
				return false
			}
		}
	}
	return true
}

var backupSchedule = Rule{
	Name: "nbms-backup-configure-schedule-and-retention",
	Summary: "Checks that the backup scheduler container (nbms.role=backup) sets cron schedules for full and differential pgBackRest backups " +
		"and keeps at least minRetentionFull full backups",
	Benchmark: "NIST SP 800-53 CP-9; CIS Controls v8 11.2",
	Level:     Mandatory,
	Remediation: "Set envs NBMS_BACKUP_SCHEDULE_FULL and NBMS_BACKUP_SCHEDULE_DIFF to 5-field cron expressions (e.g. \"0 2 * * 0\" and \"0 2 * * 1-6\") " +
		"and NBMS_BACKUP_RETENTION_FULL to an integer >= minRetentionFull on the role=backup container.",
	Scope: ResourceScope, Types: containerOnly,
	Config: map[string]Property{
		"minRetentionFull": {Type: "integer", Default: float64(2), Minimum: floatPtr(1), Description: "Smallest number of full backups pgBackRest must keep (repo1-retention-full)."},
	},
	check: func(r Resource, s Settings, f *findings) {
		if labelOf(r, LabelRole) != RoleBackup {
			return
		}
		env, st := envOf(r)
		for _, name := range []string{EnvBackupScheduleFull, EnvBackupScheduleDiff} {
			v, ok := env[name]
			switch sched, _ := v.Str(); {
			case !ok && st.blind():
				f.unknown(name, st.blindValue)
			case !ok || strings.TrimSpace(sched) == "":
				f.violation("%s must set %s.", describe(r), name)
			case !validSchedule(sched):
				f.violation("%s: %s = %s is not a cron schedule.", describe(r), name, v.Display())
			}
		}
		v, ok := env[EnvBackupRetentionFull]
		if !ok {
			if st.blind() {
				f.unknown(EnvBackupRetentionFull, st.blindValue)
			} else {
				f.violation("%s must set %s.", describe(r), EnvBackupRetentionFull)
			}
			return
		}
		n, isNum := v.Num()
		if min := s.Int("minRetentionFull"); !isNum || n != float64(int(n)) || int(n) < min {
			f.violation("%s: %s = %s; it must be an integer of at least %d.", describe(r), EnvBackupRetentionFull, v.Display(), min)
		}
	},
}
