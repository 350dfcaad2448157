package rules

import (
	"strings"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/conventions"
)

// The conventions the infra program follows (package conventions is their
// one declaration; see README.md), under the names the rules use.
const (
	LabelRole               = conventions.LabelRole
	LabelStack              = conventions.LabelStack
	LabelProfile            = conventions.LabelProfile
	LabelReadOnlyExempt     = conventions.LabelReadOnlyExempt
	LabelCapabilitiesReason = conventions.LabelCapabilitiesReason
	LabelRootExempt         = conventions.LabelRootExempt
	// LabelNginxConf may carry the rendered nginx config of the proxy.
	LabelNginxConf = "nbms.nginx.conf"

	RoleApp           = conventions.RoleApp
	RoleMigrate       = conventions.RoleMigrate
	RoleCollectstatic = conventions.RoleCollectstatic
	RoleProxy         = conventions.RoleProxy
	RoleDB            = conventions.RoleDB
	RoleCache         = conventions.RoleCache
	RoleBackup        = conventions.RoleBackup
	RoleSwitch        = conventions.RoleSwitch

	EnvBackupScheduleFull  = conventions.EnvBackupScheduleFull
	EnvBackupScheduleDiff  = conventions.EnvBackupScheduleDiff
	EnvBackupRetentionFull = conventions.EnvBackupRetentionFull
	EnvBackupOffHostRepo   = conventions.EnvBackupOffHostRepo
	EnvBackupOffHostCipher = conventions.EnvBackupOffHostCipher
	// EnvNginxConf may carry the rendered nginx config of the proxy.
	EnvNginxConf = "NBMS_NGINX_CONF"
)

// Roles lists every valid role.
var Roles = conventions.Roles

// oneShot reports whether a role runs to completion instead of serving.
func oneShot(role string) bool { return conventions.OneShot(role) }

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
	if v, ok := env[config.EnvProfile]; ok {
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
