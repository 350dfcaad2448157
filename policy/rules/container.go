package rules

import (
	"path"
	"regexp"
	"slices"
	"strings"
)

var containerOnly = []string{ContainerType}

func floatPtr(f float64) *float64 { return &f }

// requireLabels: every other container policy keys on these labels, so a
// container without them would slip past the role-specific checks.
var requireLabels = Rule{
	Name:      "nbms-container-require-labels",
	Summary:   "Checks that every container carries the nbms.role, nbms.stack and nbms.profile labels the other policies key on",
	Benchmark: "NBMS convention; supports CIS Docker Benchmark v1.6.0 5.9",
	Level:     Mandatory,
	Remediation: "Set labels [{label: \"nbms.role\", value: one of app|migrate|collectstatic|proxy|db|cache|backup}, " +
		"{label: \"nbms.stack\", value: <stack name>}, {label: \"nbms.profile\", value: prod|dev}] on the docker.Container.",
	Scope: ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		if labels := r.Prop("labels"); labels.IsUnknown() {
			f.unknown("labels", labels)
			return
		}
		for _, key := range []string{LabelRole, LabelStack, LabelProfile} {
			v, found := labelValue(r, key)
			s, isStr := v.Str()
			switch {
			case v.IsUnknown():
				f.unknown("label "+key, v)
			case !found || !isStr || strings.TrimSpace(s) == "":
				f.violation("%s must carry the label %s.", describe(r), key)
			case key == LabelRole && !slices.Contains(Roles, s):
				f.violation("%s has label %s=%s; it must be one of %s.", describe(r), key, v.Display(), strings.Join(Roles, ", "))
			case key == LabelProfile && s != "prod" && s != "dev":
				f.violation("%s has label %s=%s; it must be prod or dev.", describe(r), key, v.Display())
			}
		}
	},
}

var disallowPrivileged = Rule{
	Name:        "docker-container-disallow-privileged",
	Summary:     "Checks that containers do not run in privileged mode",
	Benchmark:   "CIS Docker Benchmark v1.6.0 5.5; KICS ae5b6871-7f45-42e0-bb4c-ab300c4d2026",
	Level:       Mandatory,
	Remediation: "Remove Privileged (or set Privileged: pulumi.Bool(false)) on the docker.Container; add only the individual capabilities the process needs.",
	Scope:       ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		v := r.Prop("privileged")
		if v.IsUnknown() {
			f.unknown("privileged", v)
			return
		}
		if v.BoolOr(false) {
			f.violation("%s must not run privileged (privileged = true).", describe(r))
		}
	},
}

// neverAddable capabilities amount to root on the host; no label reason can
// justify them for this stack.
var neverAddable = []string{"ALL", "SYS_ADMIN", "SYS_MODULE", "SYS_PTRACE", "SYS_RAWIO", "SYS_BOOT", "NET_ADMIN", "DAC_READ_SEARCH", "BPF", "MAC_ADMIN", "MAC_OVERRIDE"}

func capName(s string) string {
	return strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "CAP_")
}

var restrictCapabilities = Rule{
	Name:      "docker-container-restrict-capabilities",
	Summary:   "Checks that containers drop ALL Linux capabilities and add back only capabilities named, with a reason, in the nbms.policy.capabilities-reason label",
	Benchmark: "CIS Docker Benchmark v1.6.0 5.4; KICS ce76b7d0-9e77-464d-b86f-c5c48e03e22d",
	Level:     Mandatory,
	Remediation: "Set Capabilities: &docker.ContainerCapabilitiesArgs{Drops: [\"ALL\"], Adds: [only what the process needs]} and, when Adds is not empty, " +
		"the label nbms.policy.capabilities-reason naming every added capability with its reason (e.g. \"CHOWN,SETUID,SETGID: postgres entrypoint switches to the postgres user\"). " +
		"SYS_ADMIN, NET_ADMIN, SYS_PTRACE, SYS_MODULE, SYS_RAWIO, DAC_READ_SEARCH and ALL are never accepted.",
	Scope: ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		caps := r.Prop("capabilities")
		drops, adds := caps.Get("drops"), caps.Get("adds")
		if caps.IsUnknown() || drops.IsUnknown() || adds.IsUnknown() {
			f.unknown("capabilities", caps)
			return
		}
		droppedAll := false
		for _, d := range drops.Items() {
			if s, _ := d.Str(); capName(s) == "ALL" {
				droppedAll = true
			}
		}
		if !droppedAll {
			f.violation("%s must drop ALL capabilities (capabilities.drops must contain \"ALL\").", describe(r))
		}
		reasonV, _ := labelValue(r, LabelCapabilitiesReason)
		if reasonV.IsUnknown() && len(adds.Items()) > 0 {
			f.unknown("label "+LabelCapabilitiesReason, reasonV)
			return
		}
		reason, _ := reasonV.Str()
		named := map[string]bool{}
		for _, tok := range regexp.MustCompile(`[A-Za-z_]+`).FindAllString(reason, -1) {
			named[capName(tok)] = true
		}
		for _, a := range adds.Items() {
			s, ok := a.Str()
			if a.IsUnknown() {
				f.unknown("capabilities.adds", a)
				continue
			}
			c := capName(s)
			switch {
			case !ok:
				f.violation("%s adds a capability that is not a string.", describe(r))
			case slices.Contains(neverAddable, c):
				f.violation("%s must not add capability %s: it is equivalent to root on the host.", describe(r), a.Display())
			case !named[c]:
				f.violation("%s adds capability %s without naming it in the %s label.", describe(r), a.Display(), LabelCapabilitiesReason)
			}
		}
	},
}

func securityOpts(r Resource, f *findings) ([]string, bool) {
	opts := r.Prop("securityOpts")
	if opts.IsUnknown() {
		f.unknown("securityOpts", opts)
		return nil, false
	}
	var out []string
	for _, o := range opts.Items() {
		if o.IsUnknown() {
			f.unknown("securityOpts", o)
			return nil, false
		}
		s, _ := o.Str()
		out = append(out, strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), "=", ":")))
	}
	return out, true
}

var requireNoNewPrivileges = Rule{
	Name:        "docker-container-enable-no-new-privileges",
	Summary:     "Checks that containers run with no-new-privileges so setuid binaries cannot raise privileges",
	Benchmark:   "CIS Docker Benchmark v1.6.0 5.26; KICS 27fcc7d6-c49b-46e0-98f1-6c082a6a2750",
	Level:       Mandatory,
	Remediation: "Add \"no-new-privileges:true\" to SecurityOpts on the docker.Container.",
	Scope:       ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		opts, ok := securityOpts(r, f)
		if !ok {
			return
		}
		if !slices.Contains(opts, "no-new-privileges") && !slices.Contains(opts, "no-new-privileges:true") {
			f.violation("%s must set securityOpts \"no-new-privileges:true\".", describe(r))
		}
	},
}

var disallowUnconfined = Rule{
	Name:        "docker-container-disallow-unconfined-profiles",
	Summary:     "Checks that containers keep the default seccomp and AppArmor profiles (no seccomp/apparmor=unconfined, no label=disable)",
	Benchmark:   "CIS Docker Benchmark v1.6.0 5.2, 5.3, 5.22; KICS 404fde2c-bc4b-4371-9747-7054132ac953",
	Level:       Mandatory,
	Remediation: "Remove \"seccomp=unconfined\", \"apparmor=unconfined\" and \"label=disable\" from SecurityOpts; if a syscall is missing, ship a custom seccomp profile instead.",
	Scope:       ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		opts, ok := securityOpts(r, f)
		if !ok {
			return
		}
		for _, o := range opts {
			if o == "seccomp:unconfined" || o == "apparmor:unconfined" || o == "label:disable" {
				f.violation("%s must not set securityOpts %q.", describe(r), o)
			}
		}
	},
}

var requireReadOnlyRootFS = Rule{
	Name:      "docker-container-enable-read-only-root-filesystem",
	Summary:   "Checks that containers mount their root filesystem read-only unless the nbms.policy.readonly-rootfs-exempt label gives the reason they cannot",
	Benchmark: "CIS Docker Benchmark v1.6.0 5.13",
	Level:     Mandatory,
	Remediation: "Set ReadOnly: pulumi.Bool(true) and give writable paths a Tmpfs or volume mount; if the image cannot run read-only, " +
		"set the label nbms.policy.readonly-rootfs-exempt to the reason.",
	Scope: ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		ro := r.Prop("readOnly")
		if ro.IsUnknown() {
			f.unknown("readOnly", ro)
			return
		}
		if ro.BoolOr(false) {
			return
		}
		reason, found := labelValue(r, LabelReadOnlyExempt)
		if reason.IsUnknown() {
			f.unknown("label "+LabelReadOnlyExempt, reason)
			return
		}
		if s, _ := reason.Str(); !found || strings.TrimSpace(s) == "" {
			f.violation("%s must set readOnly = true, or carry the label %s with the reason it cannot.", describe(r), LabelReadOnlyExempt)
		}
	},
}

var requireMemoryLimit = Rule{
	Name:        "docker-container-configure-memory-limit",
	Summary:     "Checks that containers have a memory limit (and, when configured, one no higher than the organisation's ceiling)",
	Benchmark:   "CIS Docker Benchmark v1.6.0 5.11; KICS bb9ac4f7-e13b-423d-a010-c74a1bfbe492",
	Level:       Mandatory,
	Remediation: "Set Memory (MB) on the docker.Container, e.g. Memory: pulumi.Int(512), at or below the maxMemoryMb policy config.",
	Scope:       ResourceScope, Types: containerOnly,
	Config: map[string]Property{
		"maxMemoryMb": {Type: "integer", Default: float64(0), Minimum: floatPtr(0), Description: "Largest memory limit (MB) a container may set; 0 means no ceiling."},
	},
	check: func(r Resource, s Settings, f *findings) {
		v := r.Prop("memory")
		if v.IsUnknown() {
			f.unknown("memory", v)
			return
		}
		mb, ok := v.Num()
		if !ok || mb <= 0 {
			f.violation("%s must set a memory limit (memory, in MB).", describe(r))
			return
		}
		if ceiling := s.Int("maxMemoryMb"); ceiling > 0 && mb > float64(ceiling) {
			f.violation("%s sets memory %s MB, above the ceiling of %d MB.", describe(r), v.Display(), ceiling)
		}
	},
}

var requireCPULimit = Rule{
	Name:        "docker-container-configure-cpu-limit",
	Summary:     "Checks that containers set a CPU limit (cpus) or CPU shares (cpuShares)",
	Benchmark:   "CIS Docker Benchmark v1.6.0 5.12; KICS 6b610c50-99fb-4ef0-a5f3-e312fd945bc3",
	Level:       Mandatory,
	Remediation: "Set Cpus (e.g. pulumi.String(\"1.0\")) or CpuShares (e.g. pulumi.Int(512)) on the docker.Container. CpuQuota alone is not accepted (docker-bench reads only NanoCpus and CpuShares).",
	Scope:       ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		cpus, shares := r.Prop("cpus"), r.Prop("cpuShares")
		n1, ok1 := cpus.Num()
		n2, ok2 := shares.Num()
		if (ok1 && n1 > 0) || (ok2 && n2 > 0) {
			return
		}
		if cpus.IsUnknown() {
			f.unknown("cpus", cpus)
			return
		}
		if shares.IsUnknown() {
			f.unknown("cpuShares", shares)
			return
		}
		f.violation("%s must set cpus or cpuShares to a positive value.", describe(r))
	},
}

var requireNprocUlimit = Rule{
	Name: "docker-container-configure-nproc-ulimit",
	Summary: "Checks that containers bound the number of processes with an nproc ulimit, the only process bound pulumi-docker v4.10 offers " +
		"(it has no pids_limit, so CIS 5.29 cannot be met per container)",
	Benchmark:   "CIS Docker Benchmark v1.6.0 5.29 (substitute), 5.19; KICS 221e0658-cb2a-44e3-b08a-db96a341d6fa",
	Level:       Mandatory,
	Remediation: "Add Ulimits: docker.ContainerUlimitArray{&docker.ContainerUlimitArgs{Name: pulumi.String(\"nproc\"), Soft: pulumi.Int(N), Hard: pulumi.Int(N)}} with 0 < soft <= hard <= maxNproc.",
	Scope:       ResourceScope, Types: containerOnly,
	Config: map[string]Property{
		"maxNproc": {Type: "integer", Default: float64(0), Minimum: floatPtr(0), Description: "Largest nproc hard limit a container may set; 0 means no ceiling."},
	},
	check: func(r Resource, s Settings, f *findings) {
		ul := r.Prop("ulimits")
		if ul.IsUnknown() {
			f.unknown("ulimits", ul)
			return
		}
		for _, u := range ul.Items() {
			name := u.Get("name")
			if name.IsUnknown() {
				f.unknown("ulimits[].name", name)
				return
			}
			if n, _ := name.Str(); n != "nproc" {
				continue
			}
			soft, okS := u.Get("soft").Num()
			hard, okH := u.Get("hard").Num()
			if u.Get("soft").IsUnknown() || u.Get("hard").IsUnknown() {
				f.unknown("ulimits nproc", u.Get("hard"))
				return
			}
			switch {
			case !okS || !okH || soft <= 0 || hard <= 0:
				f.violation("%s sets an nproc ulimit that is not a positive bound (soft %s, hard %s).", describe(r), u.Get("soft").Display(), u.Get("hard").Display())
			case soft > hard:
				f.violation("%s sets an nproc soft limit above its hard limit.", describe(r))
			case s.Int("maxNproc") > 0 && hard > float64(s.Int("maxNproc")):
				f.violation("%s sets nproc hard limit %s, above the ceiling of %d.", describe(r), u.Get("hard").Display(), s.Int("maxNproc"))
			}
			return
		}
		f.violation("%s must bound processes with an nproc ulimit (ulimits [{name: \"nproc\", soft, hard}]).", describe(r))
	},
}

var boundRestartPolicy = Rule{
	Name: "docker-container-configure-restart-policy",
	Summary: "Checks that long-running containers restart with a bounded policy (on-failure with 1..maxRetryCount retries, or unless-stopped) " +
		"and one-shot containers (migrate, collectstatic) do not restart",
	Benchmark: "CIS Docker Benchmark v1.6.0 5.15; KICS 2fc99041-ddad-49d5-853f-e35e70a48391",
	Level:     Mandatory,
	Remediation: "For long-running roles set Restart: \"on-failure\" with MaxRetryCount 1..5 (CIS 5.15), or \"unless-stopped\"; never \"always\". " +
		"For migrate and collectstatic leave Restart unset or \"no\".",
	Scope: ResourceScope, Types: containerOnly,
	Config: map[string]Property{
		"maxRetryCount": {Type: "integer", Default: float64(5), Minimum: floatPtr(1), Description: "Largest on-failure retry count accepted (CIS 5.15 recommends 5)."},
	},
	check: func(r Resource, s Settings, f *findings) {
		restart, retries := r.Prop("restart"), r.Prop("maxRetryCount")
		if restart.IsUnknown() {
			f.unknown("restart", restart)
			return
		}
		policy, _ := restart.Str()
		if policy == "" {
			policy = "no"
		}
		if oneShot(labelOf(r, LabelRole)) {
			if policy != "no" {
				f.violation("%s runs once; restart must be \"no\", not %s.", describe(r), restart.Display())
			}
			return
		}
		switch policy {
		case "unless-stopped":
		case "on-failure":
			if retries.IsUnknown() {
				f.unknown("maxRetryCount", retries)
				return
			}
			n, ok := retries.Num()
			if !ok || n < 1 || n > float64(s.Int("maxRetryCount")) {
				f.violation("%s uses restart on-failure with maxRetryCount %s; it must be between 1 and %d.", describe(r), retries.Display(), s.Int("maxRetryCount"))
			}
		case "always":
			f.violation("%s must not use restart \"always\" (unbounded, and restarts even after a deliberate stop).", describe(r))
		default:
			f.violation("%s is long-running and must restart on failure (restart is %s).", describe(r), restart.Display())
		}
	},
}

var requireHealthcheck = Rule{
	Name:        "docker-container-enable-healthcheck",
	Summary:     "Checks that long-running containers declare a health check that is not NONE",
	Benchmark:   "CIS Docker Benchmark v1.6.0 5.27; KICS 698ed579-b239-4f8f-a388-baa4bcb13ef8; CKV_DOCKER_2",
	Level:       Mandatory,
	Remediation: "Set Healthcheck: &docker.ContainerHealthcheckArgs{Tests: [\"CMD\", ...probe...], Interval, Timeout, Retries} on every long-running container (not needed for migrate and collectstatic).",
	Scope:       ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		if oneShot(labelOf(r, LabelRole)) {
			return
		}
		tests := r.Prop("healthcheck").Get("tests")
		if tests.IsUnknown() {
			f.unknown("healthcheck.tests", tests)
			return
		}
		items := tests.Items()
		if len(items) == 0 {
			f.violation("%s must declare a health check (healthcheck.tests).", describe(r))
			return
		}
		if first, _ := items[0].Str(); strings.EqualFold(first, "NONE") {
			f.violation("%s disables its health check (healthcheck.tests = [\"NONE\"]).", describe(r))
		}
	},
}

var disallowHostNamespaces = Rule{
	Name:        "docker-container-disallow-host-namespaces",
	Summary:     "Checks that containers do not share the host's network, PID, IPC or user namespace",
	Benchmark:   "CIS Docker Benchmark v1.6.0 5.10, 5.16, 5.17, 5.31; KICS 071a71ff-f868-47a4-ac0b-3c59e4ab5443, 4f31dd9f-2cc3-4751-9b53-67e4af83dac0, baa3890f-bed7-46f5-ab8f-1da8fc91c729, 8af7162d-6c98-482f-868e-0d33fb675ca8",
	Level:       Mandatory,
	Remediation: "Remove NetworkMode/PidMode/IpcMode/UsernsMode \"host\"; attach the container to the <stack>-edge or <stack>-internal network with NetworksAdvanced.",
	Scope:       ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		for _, key := range []string{"networkMode", "pidMode", "ipcMode", "usernsMode"} {
			v := r.Prop(key)
			if v.IsUnknown() {
				f.unknown(key, v)
				continue
			}
			if s, _ := v.Str(); strings.EqualFold(strings.TrimSpace(s), "host") {
				f.violation("%s must not share the host namespace (%s = \"host\").", describe(r), key)
			}
		}
	},
}

// hostPaths returns the host side of every bind: volumes[].hostPath and
// mounts[].source of bind mounts.
func hostPaths(r Resource, f *findings) []string {
	var out []string
	for _, key := range []string{"volumes", "mounts"} {
		list := r.Prop(key)
		if list.IsUnknown() {
			f.unknown(key, list)
			continue
		}
		for _, m := range list.Items() {
			var src Value
			if key == "volumes" {
				src = m.Get("hostPath")
			} else {
				if t, _ := m.Get("type").Str(); t != "bind" && !m.Get("type").IsUnknown() {
					continue
				}
				src = m.Get("source")
			}
			if src.IsUnknown() {
				f.unknown(key+" host path", src)
				continue
			}
			if s, ok := src.Str(); ok && s != "" {
				out = append(out, path.Clean(s))
			}
		}
	}
	return out
}

var disallowDockerSocket = Rule{
	Name:        "docker-container-disallow-docker-socket-mount",
	Summary:     "Checks that no container mounts the Docker socket (or the directory holding it), which would hand it root on the host",
	Benchmark:   "CIS Docker Benchmark v1.6.0 5.32; KICS d6355c88-1e8d-49e9-b2f2-f8a1ca12c75b",
	Level:       Mandatory,
	Remediation: "Remove the volume or bind mount of /var/run/docker.sock (or /var/run, /run) from the docker.Container.",
	Scope:       ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		for _, p := range hostPaths(r, f) {
			if strings.HasSuffix(p, "docker.sock") || p == "/var/run" || p == "/run" || p == "/" {
				f.violation("%s must not mount the Docker socket (host path %q).", describe(r), p)
			}
		}
	},
}

var sensitiveHostDirs = []string{"/", "/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr"}

var disallowSensitiveMounts = Rule{
	Name:        "docker-container-disallow-sensitive-host-mounts",
	Summary:     "Checks that containers do not bind-mount sensitive host directories (/, /boot, /dev, /etc, /lib, /proc, /sys, /usr)",
	Benchmark:   "CIS Docker Benchmark v1.6.0 5.6; KICS 1c1325ff-831d-43a1-973e-839ae57dfcc0",
	Level:       Mandatory,
	Remediation: "Replace the bind mount with a named docker.Volume or an upload of the single file the container needs.",
	Scope:       ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		for _, p := range hostPaths(r, f) {
			for _, dir := range sensitiveHostDirs {
				if p == dir || (dir != "/" && strings.HasPrefix(p, dir+"/")) {
					f.violation("%s must not bind-mount the sensitive host path %q.", describe(r), p)
					break
				}
			}
		}
	},
}

var restrictPublishedPorts = Rule{
	Name: "docker-container-restrict-published-ports",
	Summary: "Checks that only the edge proxy (nbms.role=proxy) publishes ports, each bound to a specific host address rather than 0.0.0.0 or ::, " +
		"and that no container publishes all ports",
	Benchmark: "CIS Docker Benchmark v1.6.0 5.9, 5.14; KICS 451d79dc-0588-476a-ad03-3c7f0320abb3",
	Level:     Mandatory,
	Remediation: "Remove Ports and PublishAllPorts from every container except the proxy; on the proxy set Ports[].Ip to the host address that should serve traffic " +
		"(e.g. the public interface's IP or 127.0.0.1), never 0.0.0.0 or ::. CIS 5.8 (privileged ports 80/443 on the proxy) is an accepted exception.",
	Scope: ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		if all := r.Prop("publishAllPorts"); all.IsUnknown() {
			f.unknown("publishAllPorts", all)
		} else if all.BoolOr(false) {
			f.violation("%s must not publish all exposed ports (publishAllPorts = true).", describe(r))
		}
		ports := r.Prop("ports")
		if ports.IsUnknown() {
			f.unknown("ports", ports)
			return
		}
		items := ports.Items()
		if len(items) == 0 {
			return
		}
		if role := labelOf(r, LabelRole); role != RoleProxy {
			f.violation("%s publishes %d port(s); only the proxy may publish ports.", describe(r), len(items))
			return
		}
		for _, p := range items {
			ip := p.Get("ip")
			if ip.IsUnknown() {
				f.unknown("ports[].ip", ip)
				continue
			}
			s, _ := ip.Str()
			switch strings.Trim(strings.TrimSpace(s), "[]") {
			case "", "0.0.0.0", "::", "0:0:0:0:0:0:0:0":
				f.violation("%s publishes port %s on every host address; bind it to a specific address (ports[].ip).", describe(r), p.Get("internal").Display())
			}
		}
	},
}

var digestRef = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)
var imageID = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// imageProblem judges an image reference: "" when acceptable.
func imageProblem(ref string, requireDigest bool) string {
	ref = strings.TrimSpace(ref)
	if imageID.MatchString(ref) || digestRef.MatchString(ref) {
		return ""
	}
	if ref == "" {
		return "is empty"
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	_, tag, tagged := strings.Cut(last, ":")
	switch {
	case !tagged:
		return "has no tag (it means latest)"
	case tag == "latest":
		return "uses the latest tag"
	case requireDigest:
		return "is pinned by tag only; production needs a digest (@sha256:…)"
	}
	return ""
}

var requirePinnedImages = Rule{
	Name: "docker-image-require-pinned-version",
	Summary: "Checks that container images and docker.RemoteImage names are pinned: never latest or untagged, and by digest (@sha256:) or image ID " +
		"in production",
	Benchmark: "CIS Docker Benchmark v1.6.0 5.28; CKV_DOCKER_7",
	Level:     Mandatory,
	Remediation: "Pull third-party images with docker.RemoteImage{Name: \"repo:tag@sha256:<digest>\"} and give containers its ImageId; give the app container " +
		"the RepoDigest (image ID) of the docker.Image it builds.",
	Scope: ResourceScope, Types: []string{ContainerType, RemoteImageType},
	Config: map[string]Property{
		"requireDigestForRemoteImages": {Type: "boolean", Default: true, Description: "Require @sha256: digests on every docker.RemoteImage name (a RemoteImage has no profile label)."},
	},
	check: func(r Resource, s Settings, f *findings) {
		key, requireDigest := "image", production(r)
		if r.Type == RemoteImageType {
			key, requireDigest = "name", s.Bool("requireDigestForRemoteImages")
		}
		v := r.Prop(key)
		if v.IsUnknown() {
			f.unknown(key, v)
			return
		}
		ref, ok := v.Str()
		if !ok {
			f.violation("%s has no image reference (%s).", describe(r), key)
			return
		}
		if problem := imageProblem(ref, requireDigest); problem != "" {
			f.violation("%s: image %s %s.", describe(r), v.Display(), problem)
		}
	},
}

var disallowRootUser = Rule{
	Name:        "docker-container-disallow-root-user",
	Summary:     "Checks that containers run as a non-root user unless the nbms.policy.root-exempt label gives the reason they must start as root",
	Benchmark:   "CIS Docker Benchmark v1.6.0 4.1; CKV_DOCKER_3, CKV_DOCKER_8",
	Level:       Mandatory,
	Remediation: "Set User to a non-root uid:gid (e.g. \"65532:65532\"); for images whose entrypoint must start as root and drop privileges itself (nginx master, postgres entrypoint) set the label nbms.policy.root-exempt to that reason.",
	Scope:       ResourceScope, Types: containerOnly,
	check: func(r Resource, _ Settings, f *findings) {
		user := r.Prop("user")
		if user.IsUnknown() {
			f.unknown("user", user)
			return
		}
		s, _ := user.Str()
		name, _, _ := strings.Cut(strings.TrimSpace(s), ":")
		if name != "" && name != "root" && name != "0" {
			return
		}
		reason, found := labelValue(r, LabelRootExempt)
		if reason.IsUnknown() {
			f.unknown("label "+LabelRootExempt, reason)
			return
		}
		if rs, _ := reason.Str(); found && strings.TrimSpace(rs) != "" {
			return
		}
		if name == "" {
			f.violation("%s must set a non-root user (user is unset, so the image's user applies).", describe(r))
			return
		}
		f.violation("%s must not run as root (user %s).", describe(r), user.Display())
	},
}
