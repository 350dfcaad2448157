// Package conventions is the contract between the infra program and the
// policy pack: the labels every container carries, the container roles,
// the network names and the backup settings the scheduler exposes. The
// program writes them and the pack reads them, so both import this one
// declaration instead of agreeing on strings.
package conventions

// Labels on every docker.Container.
const (
	LabelRole    = "nbms.role"
	LabelStack   = "nbms.stack"
	LabelProfile = "nbms.profile"
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
)

// Roles lists every role in deployment order.
var Roles = []string{RoleDB, RoleCache, RoleBackup, RoleMigrate, RoleCollectstatic, RoleApp, RoleProxy}

// OneShot reports whether a role runs to completion instead of serving.
func OneShot(role string) bool { return role == RoleMigrate || role == RoleCollectstatic }

// EdgeNetwork is the network of nginx and the app.
func EdgeNetwork(stack string) string { return stack + "-edge" }

// InternalNetwork is the network without an outside route that holds the
// data tier.
func InternalNetwork(stack string) string { return stack + "-internal" }

// Environment of the backup scheduler container: its schedule and
// retention, for the policy pack to check.
const (
	EnvBackupScheduleFull  = "NBMS_BACKUP_SCHEDULE_FULL"
	EnvBackupScheduleDiff  = "NBMS_BACKUP_SCHEDULE_DIFF"
	EnvBackupRetentionFull = "NBMS_BACKUP_RETENTION_FULL"
	EnvBackupRetentionDiff = "NBMS_BACKUP_RETENTION_DIFF"
)
