package rules

import (
	"strings"
)

// Labels the infra program puts on every docker.Container (see README.md).
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
	// LabelNginxConf may carry the rendered nginx config of the proxy.
	LabelNginxConf = "nbms.nginx.conf"
)

// Container roles (values of nbms.role).
const (
	RoleApp           = "app"
	RoleMigrate       = "migrate"
	RoleCollectstatic = "collectstatic"
	RoleProxy         = "proxy"
	RoleDB            = "db"
	RoleCache         = "cache"
	RoleBackup        = "backup"
)

// Roles lists every valid role.
var Roles = []string{RoleApp, RoleMigrate, RoleCollectstatic, RoleProxy, RoleDB, RoleCache, RoleBackup}

// Environment variables the backup scheduler container must carry.
const (
	EnvBackupScheduleFull  = "NBMS_BACKUP_SCHEDULE_FULL"
	EnvBackupScheduleDiff  = "NBMS_BACKUP_SCHEDULE_DIFF"
	EnvBackupRetentionFull = "NBMS_BACKUP_RETENTION_FULL"
	// EnvNginxConf may carry the rendered nginx config of the proxy.
	EnvNginxConf = "NBMS_NGINX_CONF"
)

// oneShot reports whether a role runs to completion instead of serving.
func oneShot(role string) bool { return role == RoleMigrate || role == RoleCollectstatic }

// labelValue returns the value of a container label. found is false when
// the label is absent; the value is Unknown when the labels are unknown.
func labelValue(r Resource, key string) (v Value, found bool) {
	labels := r.Prop("labels")
	if labels.IsUnknown() {
		return labels, true
	}
	for _, l := range labels.Items() {
		name, _ := l.Get("label").Str()
		if name == key {
			return l.Get("value"), true
		}
	}
	return Value{}, false
}

// labelOf returns a label's plain string value, "" when absent or unreadable.
func labelOf(r Resource, key string) string {
	v, _ := labelValue(r, key)
	s, _ := v.Str()
	return s
}

// isContainer reports whether r is a docker container.
func isContainer(r Resource) bool { return r.Type == ContainerType }

// production reports whether a container belongs to the prod profile, by its
// label or, for the app, its NBMS_ENV.
func production(r Resource) bool {
	if labelOf(r, LabelProfile) == "prod" {
		return true
	}
	env, _ := envOf(r)
	if v, ok := env["NBMS_ENV"]; ok {
		s, _ := v.Str()
		return strings.TrimSpace(s) == "prod"
	}
	return false
}

// cutEnv splits a docker KEY=VALUE environment entry.
func cutEnv(entry string) (key, value string, ok bool) {
	key, value, ok = strings.Cut(entry, "=")
	if !ok || key == "" {
		return "", "", false
	}
	return key, value, true
}

// envState says what could not be read from a container's envs.
type envState struct {
	// blindValue is the first unknown or redacted value met (the envs
	// property itself, or one entry, whose key is then unknown too).
	blindValue Value
	// bad counts entries that are not KEY=VALUE strings.
	bad int
}

// blind reports whether some variables cannot be seen.
func (e envState) blind() bool { return e.blindValue.IsUnknown() }

// envOf decodes a container's envs into KEY → value; each value keeps the
// secret flag of the entry it came from.
func envOf(r Resource) (map[string]Value, envState) {
	envs := r.Prop("envs")
	out := map[string]Value{}
	var st envState
	if envs.IsUnknown() {
		st.blindValue = envs
		return out, st
	}
	for _, e := range envs.Items() {
		if e.IsUnknown() {
			if !st.blind() {
				st.blindValue = e
			}
			continue
		}
		s, ok := e.Str()
		if !ok {
			st.bad++
			continue
		}
		k, v, ok := cutEnv(s)
		if !ok {
			st.bad++
			continue
		}
		val := StringValue(v)
		val.Secret = e.Secret
		out[k] = val
	}
	return out, st
}
