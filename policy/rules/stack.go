package rules

import (
	"encoding/base64"
	"regexp"
	"slices"
	"strings"

	"github.com/nbms-deploy/nbms/conventions"
)

// internalNetwork is the name of the stack's data-tier network.
func internalNetwork(stack string) string { return conventions.InternalNetwork(stack) }

var isolateDataTier = Rule{
	Name: "nbms-stack-isolate-data-tier",
	Summary: "Checks that PostgreSQL and Redis containers (nbms.role=db|cache) publish no ports and join only the <stack>-internal network " +
		"(PostgreSQL also <stack>-backup, its way to the backup relay), and that these networks are declared with internal=true",
	Benchmark: "CIS Docker Benchmark v1.6.0 5.9, 5.30; KICS ce14a68b-1668-41a0-ab7d-facd9f784742",
	Level:     Mandatory,
	Remediation: "Declare docker.Network{Name: \"<stack>-internal\", Internal: true}; give db and cache containers NetworksAdvanced [{Name: \"<stack>-internal\"}] " +
		"only (db may add an internal <stack>-backup), no Ports, no NetworkMode host.",
	Scope: StackScope,
	checkStack: func(rs []Resource, _ Settings, f *findings) {
		networks := map[string]Resource{}
		for _, r := range rs {
			if r.Type != NetworkType {
				continue
			}
			if name, ok := r.Prop("name").Str(); ok {
				networks[name] = r
			}
		}
		// Both db and cache join the same network: judge it once.
		judged := map[string]bool{}
		for _, r := range rs {
			role := labelOf(r, LabelRole)
			if !isContainer(r) || (role != RoleDB && role != RoleCache) {
				continue
			}
			f.subject = r
			if ports := r.Prop("ports"); ports.IsUnknown() {
				f.unknown("ports", ports)
			} else if len(ports.Items()) > 0 || r.Prop("publishAllPorts").BoolOr(false) {
				f.violation("%s must not publish ports: the data tier is reachable only on the internal network.", describe(r))
			}
			if mode, _ := r.Prop("networkMode").Str(); strings.EqualFold(mode, "host") {
				f.violation("%s must not use the host network.", describe(r))
			}
			stack := labelOf(r, LabelStack)
			if stack == "" {
				f.violation("%s has no nbms.stack label, so its network cannot be verified.", describe(r))
				continue
			}
			want := internalNetwork(stack)
			allowed := []string{want}
			if role == RoleDB {
				// Its way to the off-host repository's relay.
				allowed = append(allowed, conventions.BackupNetwork(stack))
			}
			nets := r.Prop("networksAdvanced")
			if nets.IsUnknown() {
				f.unknown("networksAdvanced", nets)
				continue
			}
			if len(nets.Items()) == 0 {
				f.violation("%s must join the %s network (networksAdvanced) instead of the default bridge.", describe(r), want)
			}
			joined := []string{want}
			for _, n := range nets.Items() {
				name := n.Get("name")
				if name.IsUnknown() {
					f.unknown("networksAdvanced[].name", name)
					continue
				}
				s, _ := name.Str()
				if !slices.Contains(allowed, s) {
					f.violation("%s joins network %s; the data tier may join only %s.", describe(r), name.Display(), strings.Join(allowed, " and "))
				} else if s != want {
					joined = append(joined, s)
				}
			}
			for _, name := range joined {
				netRes, declared := networks[name]
				switch {
				case declared && judged[name]:
				case !declared:
					f.violation("%s joins %s, but the stack declares no docker.Network with that name.", describe(r), name)
				case netRes.Prop("internal").IsUnknown():
					f.unknownOn(netRes, "internal", netRes.Prop("internal"))
				case !netRes.Prop("internal").BoolOr(false):
					f.violationOn(netRes, "%s must be declared with internal = true so the data tier has no route out.", describe(netRes))
				}
				judged[name] = true
			}
		}
	},
}

var archiveModeOn = regexp.MustCompile(`archive_mode\s*=\s*'?(on|always)\b`)
var archiveCommand = regexp.MustCompile(`archive_command\s*=\s*'?[^\n]*pgbackrest[^\n]*archive-push`)

// configText gathers the text a container's configuration can hide in:
// command, entrypoint, env values, labels and uploaded file contents. blind
// is the first unknown part, if any.
func configText(r Resource) (text string, blind Value) {
	var b strings.Builder
	note := func(v Value) {
		if v.IsUnknown() && !blind.IsUnknown() {
			blind = v
		}
	}
	for _, key := range []string{"command", "entrypoints", "envs"} {
		list := r.Prop(key)
		note(list)
		for _, item := range list.Items() {
			note(item)
			s, _ := item.Str()
			b.WriteString(s)
			b.WriteString(" ")
		}
		b.WriteString("\n")
	}
	labels := r.Prop("labels")
	note(labels)
	for _, l := range labels.Items() {
		note(l.Get("value"))
		s, _ := l.Get("value").Str()
		b.WriteString(s + "\n")
	}
	uploads := r.Prop("uploads")
	note(uploads)
	for _, u := range uploads.Items() {
		content, encoded := u.Get("content"), u.Get("contentBase64")
		note(content)
		note(encoded)
		if s, ok := content.Str(); ok {
			b.WriteString(s + "\n")
		}
		if s, ok := encoded.Str(); ok {
			if raw, err := base64.StdEncoding.DecodeString(s); err == nil {
				b.Write(raw)
				b.WriteString("\n")
			}
		}
	}
	return b.String(), blind
}

var requireBackups = Rule{
	Name: "nbms-stack-require-backups",
	Summary: "Checks that a stack with PostgreSQL (nbms.role=db) also runs a backup scheduler (nbms.role=backup) and that PostgreSQL archives WAL " +
		"with pgBackRest (archive_mode=on, archive_command running pgbackrest archive-push)",
	Benchmark: "NIST SP 800-53 CP-9; CIS Controls v8 11.2",
	Level:     Mandatory,
	Remediation: "Add a container labelled nbms.role=backup that runs the scheduled pgBackRest backups, and start PostgreSQL with " +
		"command [\"postgres\", \"-c\", \"archive_mode=on\", \"-c\", \"archive_command=pgbackrest --stanza=<stanza> archive-push %p\"] " +
		"(or upload a postgresql.conf with the same two settings).",
	Scope: StackScope,
	checkStack: func(rs []Resource, _ Settings, f *findings) {
		var dbs []Resource
		hasBackup := false
		for _, r := range rs {
			if !isContainer(r) {
				continue
			}
			switch labelOf(r, LabelRole) {
			case RoleDB:
				dbs = append(dbs, r)
			case RoleBackup:
				hasBackup = true
			}
		}
		for _, db := range dbs {
			f.subject = db
			if !hasBackup {
				f.violation("%s has no backup scheduler: the stack must run a container labelled nbms.role=backup.", describe(db))
			}
			text, blind := configText(db)
			okMode, okCmd := archiveModeOn.MatchString(text), archiveCommand.MatchString(text)
			if (!okMode || !okCmd) && blind.IsUnknown() {
				f.unknown("command/envs/uploads (WAL archiving)", blind)
				continue
			}
			if !okMode {
				f.violation("%s must enable WAL archiving (archive_mode=on).", describe(db))
			}
			if !okCmd {
				f.violation("%s must archive WAL with pgBackRest (archive_command=pgbackrest ... archive-push %%p).", describe(db))
			}
		}
	},
}

var listen443SSL = regexp.MustCompile(`listen\s+[^;]*\b443\b[^;]*\bssl\b`)
var redirectHTTPS = regexp.MustCompile(`return\s+301\s+https://`)

var requireTLS = Rule{
	Name: "nbms-proxy-require-tls",
	Summary: "Checks that in production the edge proxy (nbms.role=proxy) publishes port 443 and its rendered nginx config serves TLS (listen 443 ssl) " +
		"and redirects HTTP to HTTPS (return 301 https://)",
	Benchmark: "OWASP ASVS 5.0 12.2.1; NIST SP 800-52r2",
	Level:     Mandatory,
	Remediation: "Publish Ports {Internal: 443, External: 443, Ip: <host address>} on the proxy and deliver the rendered nginx config through " +
		"Uploads[].Content (or the NBMS_NGINX_CONF env / nbms.nginx.conf label) with a `listen 443 ssl` server and a port-80 server that does `return 301 https://$host$request_uri`.",
	Scope: ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		if labelOf(r, LabelRole) != RoleProxy || !production(r) {
			return
		}
		ports := r.Prop("ports")
		if ports.IsUnknown() {
			f.unknown("ports", ports)
		} else {
			has443 := false
			for _, p := range ports.Items() {
				if n, _ := p.Get("internal").Num(); n == 443 {
					has443 = true
				}
			}
			if !has443 {
				f.violation("%s must publish port 443 in production.", describe(r))
			}
		}
		text, blind := configText(r)
		tls, redirect := listen443SSL.MatchString(text), redirectHTTPS.MatchString(text)
		if (!tls || !redirect) && blind.IsUnknown() {
			f.unknown("nginx config (uploads/envs/labels)", blind)
			return
		}
		if !tls {
			f.violation("%s: no `listen 443 ssl` found in the nginx config visible in uploads, NBMS_NGINX_CONF or the nbms.nginx.conf label.", describe(r))
		}
		if !redirect {
			f.violation("%s: no `return 301 https://` redirect found in the nginx config visible in uploads, NBMS_NGINX_CONF or the nbms.nginx.conf label.", describe(r))
		}
	},
}

// All returns every policy, in the order the pack registers them.
func All() []Rule {
	return []Rule{
		envContract,
		noWildcardCORS,
		requireLabels,
		disallowPrivileged,
		restrictCapabilities,
		requireNoNewPrivileges,
		disallowUnconfined,
		requireReadOnlyRootFS,
		requireMemoryLimit,
		requireCPULimit,
		requireNprocUlimit,
		boundRestartPolicy,
		requireHealthcheck,
		disallowHostNamespaces,
		disallowDockerSocket,
		disallowSensitiveMounts,
		restrictPublishedPorts,
		requirePinnedImages,
		disallowRootUser,
		backupSchedule,
		offHostBackup,
		restoreDrill,
		requireTLS,
		isolateDataTier,
		requireBackups,
	}
}

// Lookup returns the policy with the given name.
func Lookup(name string) (Rule, bool) {
	for _, r := range All() {
		if r.Name == name {
			return r, true
		}
	}
	return Rule{}, false
}
