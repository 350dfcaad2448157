// Package conventions is the contract between the infra program and the
// policy pack: the labels every container carries, the container roles,
// the network names and the backup settings the scheduler exposes. The
// program writes them and the pack reads them, so both import this one
// declaration instead of agreeing on strings.
package conventions

import "slices"

// Labels on every docker.Container.
const (
	LabelRole    = "nbms.role"
	LabelStack   = "nbms.stack"
	LabelProfile = "nbms.profile"
	// LabelRelease is the app release a container belongs to (the roles
	// of PerRelease): a hash of everything that decides what the app runs,
	// which also names the container.
	LabelRelease = "nbms.release"
	// LabelReadOnlyExempt carries the reason a container's root filesystem
	// cannot be read-only.
	LabelReadOnlyExempt = "nbms.policy.readonly-rootfs-exempt"
	// LabelCapabilitiesReason names every added capability and why.
	LabelCapabilitiesReason = "nbms.policy.capabilities-reason"
	// LabelRootExempt carries the reason a container must start as root.
	LabelRootExempt = "nbms.policy.root-exempt"
)

// Container roles: the values of LabelRole.
const (
	RoleApp           = "app"
	RoleMigrate       = "migrate"
	RoleCollectstatic = "collectstatic"
	RoleProxy         = "proxy"
	RoleDB            = "db"
	RoleCache         = "cache"
	RoleBackup        = "backup"
	// RoleSwitch is the blue/green switch: a one-shot in the proxy image
	// that checks a new app release is ready and then points nginx at it.
	RoleSwitch = "switch"
	// RoleDBLogin gives a release's database login role its password (and
	// creates the role if needed) before the release's migrate runs: a
	// one-shot in the database image, over PostgreSQL's Unix socket.
	RoleDBLogin = "dblogin"
	// RoleDBRetire closes every other database login once the release is
	// live (after its switch): a one-shot in the database image.
	RoleDBRetire = "dbretire"
	// RoleCacheLogin and RoleCacheRetire do the same for the release's
	// Redis login: one-shots in the cache image, over Redis's socket on
	// the cache's control volume.
	RoleCacheLogin  = "cachelogin"
	RoleCacheRetire = "cacheretire"
	// RoleSecrets places a tier's secret files on its secrets volume: a
	// one-shot whose only job is to receive them as an upload (docker cp,
	// which Docker's metadata never shows) and exit.
	RoleSecrets = "secrets"
	// RoleBackupRelay is the database's only way off the host: a TCP relay
	// (nginx's stream module) to the off-host backup repository, on the
	// backup network with a fixed address and on the egress network.
	// pgBackRest's TLS runs through it end to end.
	RoleBackupRelay = "backup-relay"
	// RoleRestore rebuilds the database from the off-host repository on a
	// stack being recovered (nbms:recovery): a one-shot in the database
	// image that restores into the empty data volume, replays the archived
	// WAL to the target, promotes and stops, before PostgreSQL starts.
	RoleRestore = "restore"
)

// Roles lists every role in deployment order.
var Roles = []string{RoleSecrets, RoleBackupRelay, RoleRestore, RoleDB, RoleCache, RoleBackup, RoleDBLogin, RoleCacheLogin, RoleMigrate, RoleCollectstatic, RoleApp, RoleSwitch, RoleDBRetire, RoleCacheRetire, RoleProxy}

// OneShot reports whether a role runs to completion instead of serving.
func OneShot(role string) bool {
	return role == RoleMigrate || role == RoleCollectstatic || role == RoleSwitch || role == RoleSecrets ||
		role == RoleRestore || role == RoleDBLogin || role == RoleDBRetire || role == RoleCacheLogin || role == RoleCacheRetire
}

// SecretsDir is where a container finds its secret files (the swarm
// convention too): a secret NAME arrives as the file SecretsDir/NAME,
// named by NAME_FILE in the container's environment.
const SecretsDir = "/run/secrets"

// ReleaseRoles are the roles whose containers belong to one app release:
// each release has its own (named <stack>-<role>-<release>, with the
// release in LabelRelease), started beside the live release's, and the
// live release's are removed only once the new one is live.
var ReleaseRoles = []string{RoleDBLogin, RoleCacheLogin, RoleMigrate, RoleCollectstatic, RoleApp, RoleSwitch, RoleDBRetire, RoleCacheRetire}

// PerRelease reports whether a role is one of ReleaseRoles.
func PerRelease(role string) bool { return slices.Contains(ReleaseRoles, role) }

// EdgeNetwork is the network of nginx and the app.
func EdgeNetwork(stack string) string { return stack + "-edge" }

// InternalNetwork is the network without an outside route that holds the
// data tier.
func InternalNetwork(stack string) string { return stack + "-internal" }

// BackupNetwork joins the database and the backup scheduler to the backup
// relay (no outside route either); only a stack with an off-host
// repository has it.
func BackupNetwork(stack string) string { return stack + "-backup" }

// EgressNetwork is the backup relay's route off the host (a plain bridge);
// only a stack with an off-host repository has it.
func EgressNetwork(stack string) string { return stack + "-egress" }

// Environment of the backup scheduler container: its schedule and
// retention, for the policy pack to check.
const (
	EnvBackupScheduleFull  = "NBMS_BACKUP_SCHEDULE_FULL"
	EnvBackupScheduleDiff  = "NBMS_BACKUP_SCHEDULE_DIFF"
	EnvBackupRetentionFull = "NBMS_BACKUP_RETENTION_FULL"
	EnvBackupRetentionDiff = "NBMS_BACKUP_RETENTION_DIFF"
	// EnvBackupOffHostRepo locates the off-host repository
	// (s3://<endpoint>:<port>/<bucket><path>), and EnvBackupOffHostCipher
	// is its client-side encryption (aes-256-cbc): unset without one.
	EnvBackupOffHostRepo   = "NBMS_BACKUP_OFFHOST_REPO"
	EnvBackupOffHostCipher = "NBMS_BACKUP_OFFHOST_CIPHER"
	// EnvBackupScheduleDrill is the restore drill's schedule (unset: no
	// drill) and EnvBackupDrillRepo the repository it restores from.
	EnvBackupScheduleDrill = "NBMS_BACKUP_SCHEDULE_DRILL"
	EnvBackupDrillRepo     = "NBMS_BACKUP_DRILL_REPO"
)

// Repositories of pgBackRest's config, by their number (repoN): the local
// volume, and the off-host one when the stack has it.
const (
	BackupLocalRepo   = 1
	BackupOffHostRepo = 2
)

// BackupOffHostCipher is the off-host repository's client-side
// encryption: what the program renders (pgBackRest's repo2-cipher-type)
// and what the policy pack requires in EnvBackupOffHostCipher.
const BackupOffHostCipher = "aes-256-cbc"

// The warm standby's names on the primary: the physical replication slot
// that keeps the WAL the standby has not yet received (also the standby's
// application_name, so that pg_stat_replication shows the same name), and
// the role it replicates as. infra/replication renders both; the nbms
// binary's standby-status looks for StandbySlot unless told another (its
// standby.DefaultSlot, which a test keeps equal).
const (
	StandbySlot     = "nbms_standby"
	ReplicationRole = "nbms_replicator"
)
