// Package images holds the Dockerfiles of the images the infra program
// builds on the Docker host (the app's is app/Dockerfile): nginx, the
// database (PostgreSQL/PostGIS/pgBackRest) and Redis, all from one Debian
// bookworm base image passed as the BASE_IMAGE build arg.
//
// This file reads the Dockerfiles the way Checkov's and hadolint's
// Dockerfile checks do and fails on the properties that matter for
// production; build_test.go builds the images for real and runs them the
// way the program does.
package images

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/infra/nginx"
)

// The Dockerfiles, relative to this package. Every Dockerfile under
// infra/images must be listed (TestEveryDockerfileIsChecked).
const (
	appDockerfile   = "../../app/Dockerfile"
	dbDockerfile    = "db/Dockerfile"
	nginxDockerfile = "nginx/Dockerfile"
	redisDockerfile = "redis/Dockerfile"
	dbEntrypoint    = "db/nbms-db-entrypoint.sh"
	dbLogin         = "db/nbms-db-login.sh"
	dbRestore       = "db/nbms-db-restore.sh"
	nginxConf       = "nginx/nginx.conf"
)

var dockerfiles = []string{appDockerfile, dbDockerfile, nginxDockerfile, redisDockerfile}

// The users the infra program runs the containers as (infra/deploy:
// appUID, pgUID, proxyUID, redisUID).
var imageUsers = map[string]string{
	appDockerfile:   "65532:65532",
	dbDockerfile:    "999:999",
	nginxDockerfile: "101:101",
	redisDockerfile: "998:998",
}

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
	line int
}

func parse(t testing.TB, text string) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasPrefix(line, "#") {
			continue // a comment inside a continued instruction
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start})
		cur.Reset()
	}
	require.NoError(t, sc.Err())
	require.Zero(t, cur.Len(), "unterminated continuation")
	return out
}

// stage is one FROM and the instructions up to the next.
type stage struct {
	from, alias string
	ins         []instruction
}

func stages(ins []instruction) []stage {
	var out []stage
	for _, in := range ins {
		if in.cmd == "FROM" {
			s := stage{}
			fields := strings.Fields(in.args)
			for _, f := range fields {
				if !strings.HasPrefix(f, "--") {
					s.from = f
					break
				}
			}
			if len(fields) >= 3 && strings.EqualFold(fields[len(fields)-2], "AS") {
				s.alias = strings.ToLower(fields[len(fields)-1])
			}
			out = append(out, s)
			continue
		}
		if len(out) > 0 {
			out[len(out)-1].ins = append(out[len(out)-1].ins, in)
		}
	}
	return out
}

// last returns the arguments of the last instruction cmd in ins.
func last(ins []instruction, cmd string) string {
	v := ""
	for _, in := range ins {
		if in.cmd == cmd {
			v = in.args
		}
	}
	return v
}

// runs joins the RUN instructions of ins.
func runs(ins []instruction) string {
	var out []string
	for _, in := range ins {
		if in.cmd == "RUN" {
			out = append(out, in.args)
		}
	}
	return strings.Join(out, "\n")
}

var (
	secretNameRE  = regexp.MustCompile(`(?i)(password|passwd|secret|token|api_?key|private_?key)`)
	argRefRE      = regexp.MustCompile(`^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$`)
	insecureTLSRE = regexp.MustCompile(`curl\s[^;&|]*(-k\b|--insecure)|--no-check-certificate|--allow-unauthenticated|--allow-insecure-repositories|--force-yes|--nogpgcheck|trusted=yes`)
	numericUserRE = regexp.MustCompile(`^([0-9]+):([0-9]+)$`)
	syntaxLineRE  = regexp.MustCompile(`(?mi)^#\s*syntax\s*=`)
	aptCmdRE      = regexp.MustCompile(`(^|[;&|]\s*|\s)apt\s+(install|update|upgrade)`)
	upgradeRE     = regexp.MustCompile(`apt-get\s+(-\S+\s+)*(upgrade|dist-upgrade)`)
)

// imageArgs are the only build args a FROM may name: the one base image,
// and the app image the backup image copies its binary from (itself built
// FROM BASE_IMAGE).
var imageArgs = map[string]bool{"BASE_IMAGE": true, "APP_IMAGE": true}

// check returns every rule a Dockerfile breaks (CKV_DOCKER / hadolint ids
// where one exists, NBMS for this project's own).
func check(text string, ins []instruction) []string {
	var problems []string
	bad := func(in instruction, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("line %d: %s", in.line, fmt.Sprintf(format, args...)))
	}
	if syntaxLineRE.MatchString(text) {
		problems = append(problems, "NBMS: a # syntax= directive makes BuildKit pull its frontend image from a registry")
	}
	aliases := map[string]bool{}
	// globalArgs are the ARGs before the first FROM, the only ones a FROM
	// can use: name -> has a default.
	globalArgs := map[string]bool{}
	globalDefaults := map[string]string{}
	stageArgs := map[string]bool{}
	seenFrom := false
	lastUser, healthcheck, baseLabel := "", false, false
	for _, in := range ins {
		if in.cmd == "ARG" && !seenFrom {
			name, value, hasDefault := strings.Cut(in.args, "=")
			globalArgs[name] = hasDefault
			globalDefaults[name] = strings.Trim(value, `"`)
		}
		switch in.cmd {
		case "FROM":
			seenFrom = true
			s := stages([]instruction{in})[0]
			if s.alias != "" {
				if aliases[s.alias] {
					bad(in, "CKV_DOCKER_11: stage alias %q used twice", s.alias)
				}
				aliases[s.alias] = true
			}
			lastUser, healthcheck, baseLabel = "", false, false // a new stage starts over
			stageArgs = map[string]bool{}
			image := s.from
			m := argRefRE.FindStringSubmatch(image)
			switch {
			case image == "scratch":
			case m != nil:
				hasDefault, declared := globalArgs[m[1]]
				switch {
				case !declared:
					bad(in, "CKV_DOCKER_7: %s names no ARG declared before the first FROM", image)
				case hasDefault && !aliases[strings.ToLower(globalDefaults[m[1]])]:
					// (A default naming an earlier stage of the file is no
					// image: the db Dockerfile's APP_IMAGE defaults to a
					// stage that fails the build.)
					bad(in, "NBMS: ARG %s has a default (%s): a build without it must fail, not use another image", m[1], globalDefaults[m[1]])
				case !imageArgs[m[1]]:
					bad(in, "NBMS: FROM %s: images come from BASE_IMAGE (or APP_IMAGE, itself built on it) only", image)
				}
			case aliases[strings.ToLower(image)]:
				// an earlier stage
			default:
				bad(in, "NBMS/CKV_DOCKER_7: FROM %s: every image builds FROM ${BASE_IMAGE}, an earlier stage or scratch", image)
			}
		case "ARG":
			if seenFrom {
				stageArgs[strings.SplitN(in.args, "=", 2)[0]] = true
			}
		case "RUN":
			for arg := range stageArgs {
				if strings.HasSuffix(arg, "_IMAGE_ID") {
					bad(in, "NBMS: RUN after ARG %s: every new ID would re-run it (declare the provenance ARGs last)", arg)
				}
			}
		case "LABEL":
			if strings.Contains(in.args, `org.nbms.base-image-id="${BASE_IMAGE_ID}"`) {
				baseLabel = stageArgs["BASE_IMAGE_ID"]
				if !baseLabel {
					bad(in, "NBMS: the label uses BASE_IMAGE_ID without an ARG BASE_IMAGE_ID in this stage: it would be empty")
				}
			}
		case "USER":
			lastUser = in.args
		case "HEALTHCHECK":
			healthcheck = !strings.EqualFold(strings.TrimSpace(in.args), "NONE")
		case "ADD":
			bad(in, "CKV_DOCKER_4: use COPY, not ADD")
		case "COPY":
			for _, f := range strings.Fields(in.args) {
				if from, ok := strings.CutPrefix(f, "--from="); ok && !aliases[strings.ToLower(from)] {
					bad(in, "NBMS: COPY --from=%s is no earlier stage (an image name would be pulled)", from)
				}
			}
		case "EXPOSE":
			if regexp.MustCompile(`\b22\b`).MatchString(in.args) {
				bad(in, "CKV_DOCKER_1: port 22 exposed")
			}
		case "WORKDIR":
			if !strings.HasPrefix(in.args, "/") {
				bad(in, "CKV_DOCKER_10: WORKDIR %q is not absolute", in.args)
			}
		case "MAINTAINER":
			bad(in, "CKV_DOCKER_6: MAINTAINER is deprecated")
		case "VOLUME":
			bad(in, "NBMS: VOLUME makes Docker create anonymous volumes; the program mounts named volumes or tmpfs")
		}
		if in.cmd == "ENV" || in.cmd == "ARG" {
			for _, kv := range envPairs(in) {
				name, value, hasValue := strings.Cut(kv, "=")
				if secretNameRE.MatchString(name) && hasValue && value != "" {
					bad(in, "CIS 4.10: %s carries a secret in the image", name)
				}
			}
		}
		if in.cmd == "RUN" {
			checkRun(in, bad)
		}
	}
	if _, ok := globalArgs["BASE_IMAGE"]; !ok {
		problems = append(problems, "NBMS: no global ARG BASE_IMAGE: every image builds from the one base")
	}
	if def, ok := globalDefaults["BASE_IMAGE_ID"]; !ok || !globalArgs["BASE_IMAGE_ID"] || def != "unknown" {
		problems = append(problems, "NBMS: no global ARG BASE_IMAGE_ID=unknown (provenance label)")
	}
	if !baseLabel {
		problems = append(problems, `NBMS: the final stage has no LABEL org.nbms.base-image-id="${BASE_IMAGE_ID}"`)
	}
	if m := numericUserRE.FindStringSubmatch(lastUser); m == nil || m[1] == "0" || m[2] == "0" {
		problems = append(problems, fmt.Sprintf("CKV_DOCKER_3/8: the final stage runs as %q; set a numeric non-root USER uid:gid", lastUser))
	}
	if !healthcheck {
		problems = append(problems, "CKV_DOCKER_2: no HEALTHCHECK")
	}
	return problems
}

// checkRun holds the rules about one RUN instruction.
func checkRun(in instruction, bad func(instruction, string, ...any)) {
	a := in.args
	install := strings.Contains(a, "apt-get install")
	if strings.Contains(a, "apt-get update") && !install {
		bad(in, "CKV_DOCKER_5: apt-get update alone")
	}
	if install {
		if !strings.Contains(a, "apt-get update") {
			bad(in, "DL3009: apt-get install without apt-get update in the same RUN (stale lists from an old layer)")
		}
		if !strings.Contains(a, "--no-install-recommends") {
			bad(in, "DL3015: apt-get install without --no-install-recommends")
		}
		if !regexp.MustCompile(`apt-get install\s+(\S+\s+)*-y\b`).MatchString(a) {
			bad(in, "DL3014: apt-get install without -y")
		}
		if !strings.Contains(a, "rm -rf /var/lib/apt/lists/*") || !strings.Contains(a, "apt-get clean") {
			bad(in, "DL3009: apt lists and downloaded packages not removed in the same RUN (apt-get clean; rm -rf /var/lib/apt/lists/*)")
		}
	}
	if upgradeRE.MatchString(a) {
		bad(in, "DL3005: apt-get upgrade: updates come with a new base image")
	}
	if aptCmdRE.MatchString(a) {
		bad(in, "DL3027: use apt-get, not apt (no stable CLI)")
	}
	if strings.Contains(a, "policy-rc.d") && !strings.Contains(a, "rm -f /usr/sbin/policy-rc.d") {
		bad(in, "NBMS: policy-rc.d left in the image")
	}
	if insecureTLSRE.MatchString(a) {
		bad(in, "CKV2_DOCKER: certificate or signature verification disabled")
	}
	if regexp.MustCompile(`\bsudo\b`).MatchString(a) {
		bad(in, "CKV2_DOCKER_1: sudo")
	}
}

// envPairs splits ENV/ARG arguments into name=value pairs (the legacy
// "ENV name value" form is one pair).
func envPairs(in instruction) []string {
	if !strings.Contains(strings.Fields(in.args)[0], "=") {
		name, value, _ := strings.Cut(in.args, " ")
		return []string{name + "=" + strings.TrimSpace(value)}
	}
	return strings.Fields(in.args)
}

// stageEnv is the environment the ENV instructions of ins set.
func stageEnv(ins []instruction) map[string]string {
	env := map[string]string{}
	for _, in := range ins {
		if in.cmd == "ENV" {
			for _, kv := range envPairs(in) {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = v
			}
		}
	}
	return env
}

func read(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(data)
}

func TestDockerfilesPassTheChecks(t *testing.T) {
	for _, path := range dockerfiles {
		t.Run(path, func(t *testing.T) {
			text := read(t, path)
			assert.Empty(t, check(text, parse(t, text)))
		})
	}
}

func TestEveryDockerfileIsChecked(t *testing.T) {
	found, err := filepath.Glob("*/Dockerfile")
	require.NoError(t, err)
	found = append(found, appDockerfile)
	assert.ElementsMatch(t, dockerfiles, found, "a Dockerfile missing from the list escapes the checks and build_test.go")
	for _, path := range dockerfiles {
		final := stages(parse(t, read(t, path)))
		assert.Equal(t, imageUsers[path], last(final[len(final)-1].ins, "USER"), "%s: the user the infra program runs it as", path)
	}
}

// Properties the deployment relies on, beyond the generic checks.
func TestAppImage(t *testing.T) {
	text := read(t, appDockerfile)
	st := stages(parse(t, text))
	require.Len(t, st, 2, "multi-stage: builder and runtime")
	build, final := st[0], st[1]
	assert.Equal(t, "${BASE_IMAGE}", build.from)
	assert.Equal(t, "build", build.alias)
	assert.Equal(t, "scratch", final.from, "the runtime image is the binary and a few files, no distribution")

	// The toolchain is exactly the one go.mod names, from the module proxy,
	// checked against a pinned SHA-256.
	goLine := regexp.MustCompile(`(?m)^go ([0-9]+\.[0-9]+\.[0-9]+)$`).FindStringSubmatch(read(t, "../../go.mod"))
	require.NotNil(t, goLine, "go.mod has a go line with a patch version")
	envs := stageEnv(build.ins)
	assert.Equal(t, goLine[1], envs["GO_VERSION"], "app/Dockerfile's GO_VERSION is go.mod's go line")
	assert.Regexp(t, `^[0-9a-f]{64}$`, envs["GO_TOOLCHAIN_SHA256"])
	assert.Equal(t, "local", envs["GOTOOLCHAIN"], "the go command never switches toolchains in the build")
	r := runs(build.ins)
	assert.Contains(t, text, "ARG GOPROXY=https://proxy.golang.org")
	assert.Contains(t, r, `/golang.org/toolchain/@v/${zip}`)
	assert.Contains(t, r, `zip="v0.0.1-go${GO_VERSION}.linux-amd64.zip"`)
	assert.Contains(t, r, `echo "${GO_TOOLCHAIN_SHA256}  /tmp/${zip}" | sha256sum -c -`)
	assert.Contains(t, r, "go mod download && go mod verify")
	assert.Contains(t, r, `CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${NBMS_VERSION}" -tags timetzdata -o /out/nbms ./app/cmd/nbms`,
		"the stack's version label, stamped in")
	assert.Contains(t, text, "ARG NBMS_VERSION=unversioned")
	assert.Contains(t, text, `org.opencontainers.image.version="${NBMS_VERSION}"`)
	assert.Contains(t, r, "--mount=type=cache,id=nbms-go-mod,target=/go/pkg/mod", "modules in a BuildKit cache")
	assert.Contains(t, r, "--mount=type=cache,id=nbms-go-build,target=/root/.cache/go-build", "build cache in a BuildKit cache")
	assert.NotContains(t, envs["SSL_CERT_FILE"], "/etc/ssl/certs/ca-certificates.crt",
		"extra build CAs go to a builder-only bundle, never into the runtime image's")

	// The runtime stage: files from the builder only, and the contract
	// the program relies on.
	var copies []string
	for _, in := range final.ins {
		switch in.cmd {
		case "COPY":
			copies = append(copies, in.args)
		case "RUN":
			t.Errorf("line %d: RUN in the runtime stage: it has no shell", in.line)
		}
	}
	assert.Equal(t, []string{"--from=build /out/rootfs/ /", "--from=build /out/nbms /usr/local/bin/nbms"}, copies)
	for _, want := range []string{
		"/out/rootfs/etc/ssl/certs/ca-certificates.crt",
		"'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' > /out/rootfs/etc/passwd",
		"'nonroot:x:65532:' > /out/rootfs/etc/group",
		"/out/rootfs/srv/nbms/static /out/rootfs/srv/nbms/media",
		"chown -R 65532:65532 /out/rootfs/srv/nbms",
	} {
		assert.Contains(t, r, want)
	}
	assert.Equal(t, "65532:65532", last(final.ins, "USER"), "numeric non-root user (nonroot)")
	assert.Equal(t, "8000", last(final.ins, "EXPOSE"))
	assert.Contains(t, last(final.ins, "HEALTHCHECK"), `CMD ["/usr/local/bin/nbms", "healthcheck"]`, "the binary probes itself: no shell or curl in the image")
	assert.Equal(t, `["/usr/local/bin/nbms"]`, last(final.ins, "ENTRYPOINT"))
	assert.Equal(t, `["serve"]`, last(final.ins, "CMD"))
}

// appBinary is where the app image keeps its binary (its ENTRYPOINT).
func appBinary(t *testing.T) string {
	var argv []string
	require.NoError(t, json.Unmarshal([]byte(last(parse(t, read(t, appDockerfile)), "ENTRYPOINT")), &argv))
	require.NotEmpty(t, argv)
	return argv[0]
}

// userFirst asserts that a RUN creates the user with the given uid:gid
// before it installs any package (whose maintainer scripts would otherwise
// create it with some other uid).
func userFirst(t *testing.T, r, name, uidgid string) {
	t.Helper()
	uid, gid, _ := strings.Cut(uidgid, ":")
	group := fmt.Sprintf("groupadd --system --gid %s %s", gid, name)
	user := fmt.Sprintf("useradd --system --uid %s --gid %s ", uid, gid)
	install := strings.Index(r, "apt-get install")
	require.NotEqual(t, -1, install)
	for _, want := range []string{group, user} {
		i := strings.Index(r, want)
		if assert.NotEqual(t, -1, i, "%q", want) {
			assert.Less(t, i, install, "%q comes before apt-get install", want)
		}
	}
	assert.Contains(t, r, fmt.Sprintf(`[ "$(id -u %s):$(id -g %s)" = %s ]`, name, name, uidgid), "the build fails if the packages changed the ids")
}

// noServiceStarts asserts that the RUN that installs packages forbids
// service starts (policy-rc.d) and removes the policy again.
func noServiceStarts(t *testing.T, r string) {
	t.Helper()
	policy := strings.Index(r, `printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d`)
	install := strings.Index(r, "apt-get install")
	remove := strings.Index(r, "rm -f /usr/sbin/policy-rc.d")
	assert.True(t, policy >= 0 && policy < install && install < remove, "policy-rc.d (exit 101) around apt-get install, removed after")
}

func TestDatabaseImage(t *testing.T) {
	text := read(t, dbDockerfile)
	st := stages(parse(t, text))
	require.Len(t, st, 4, "the db target, the stand-in for a missing APP_IMAGE, the app image as a stage, then the backup target")
	db, noApp, app, backup := st[0], st[1], st[2], st[3]

	// PostgreSQL: from the base alone. Nothing of the app image, so that a
	// new app build (an app release) neither rebuilds it nor restarts the
	// database container.
	assert.Equal(t, "${BASE_IMAGE}", db.from)
	assert.Equal(t, "db", db.alias)
	for _, in := range db.ins {
		assert.NotContains(t, in.args, "APP_IMAGE", "line %d: the db stage does not depend on the app image", in.line)
		assert.NotContains(t, in.args, "--from=app", "line %d: the db stage has no nbms binary", in.line)
		assert.NotContains(t, in.args, "org.nbms.app-image-id", "line %d", in.line)
	}
	assert.True(t, slices.ContainsFunc(db.ins, func(in instruction) bool { return in.cmd == "ARG" && in.args == "BASE_IMAGE_ID" }),
		"the db stage's own ARG BASE_IMAGE_ID, for its label")
	assert.Equal(t, `org.nbms.base-image-id="${BASE_IMAGE_ID}"`, last(db.ins, "LABEL"))
	assert.Equal(t, "999:999", last(db.ins, "USER"))

	r := runs(db.ins)
	userFirst(t, r, "postgres", "999:999")
	noServiceStarts(t, r)
	assert.Contains(t, r, "echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/", "no default cluster at install time")
	assert.Contains(t, r, "test ! -e /etc/postgresql/15 && test ! -e /var/lib/postgresql/15", "the build fails if a cluster was created")
	assert.Regexp(t, `apt-get install -y --no-install-recommends\s+postgresql-15 postgresql-15-postgis-3 postgresql-15-postgis-3-scripts pgbackrest ca-certificates;`, r)
	for _, dir := range []string{
		"install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data",
		"install -d -o postgres -g postgres -m 2775 /var/run/postgresql",
		"install -d -o postgres -g postgres -m 0750 /var/lib/pgbackrest",
	} {
		assert.Contains(t, r, dir, "volume mount points owned by postgres: fresh named volumes inherit them")
	}
	envs := stageEnv(db.ins)
	assert.True(t, strings.HasPrefix(envs["PATH"], "/usr/lib/postgresql/15/bin:"), "postgres, initdb, pg_ctl, pg_isready and psql of version 15 first on PATH")
	assert.Equal(t, "/var/lib/postgresql/data", envs["PGDATA"])
	assert.Equal(t, []string{
		"--chmod=0755 " + filepath.Base(dbEntrypoint) + " /usr/local/bin/nbms-db-entrypoint",
		"--chmod=0755 " + filepath.Base(dbLogin) + " /usr/local/bin/nbms-db-login",
		"--chmod=0755 " + filepath.Base(dbRestore) + " /usr/local/bin/nbms-db-restore",
	}, copies(db.ins))
	assert.Equal(t, `["/usr/local/bin/nbms-db-entrypoint"]`, last(db.ins, "ENTRYPOINT"))
	assert.Equal(t, `["postgres"]`, last(db.ins, "CMD"))
	assert.Equal(t, "SIGINT", last(db.ins, "STOPSIGNAL"), "fast shutdown: a smart one waits for the app's pooled connections")
	assert.Contains(t, last(db.ins, "HEALTHCHECK"), `CMD ["pg_isready", "-q", "-h", "/var/run/postgresql", "-U", "postgres"]`)

	// The app image, only as the source of the backup target's binary.
	// Its build arg's default is no image but a stage that fails the build
	// (BuildKit 0.8 fails on an empty FROM even in a stage the target does
	// not need, so that a db build would need APP_IMAGE).
	assert.Equal(t, "${APP_IMAGE}", app.from, "the app image comes from the build arg the program passes")
	assert.Equal(t, "app", app.alias)
	assert.Empty(t, app.ins)
	assert.Contains(t, text, "\nARG APP_IMAGE=no-app-image\n")
	assert.Equal(t, "no-app-image", noApp.alias)
	assert.Equal(t, "${BASE_IMAGE}", noApp.from, "the bare base: it fails at once")
	assert.Contains(t, runs(noApp.ins), "APP_IMAGE is not set")
	assert.True(t, strings.HasSuffix(runs(noApp.ins), "exit 1"), runs(noApp.ins))

	// The backup scheduler: the db stage plus the app's binary, copied
	// from where the app image keeps it (its ENTRYPOINT) to where the
	// program runs it, and the app image's ID in a label.
	assert.Equal(t, "db", backup.from)
	assert.Equal(t, "backup", backup.alias)
	assert.Equal(t, "install -d -o postgres -g postgres -m 0700 /var/lib/nbms-drill", runs(backup.ins),
		"nothing installed again (the db stage's packages): only the restore drills' mount point")
	assert.Equal(t, []string{"--chmod=0755 nbms-restore-drill.sh /usr/local/bin/nbms-restore-drill", "--from=app " + appBinary(t) + " /usr/local/bin/nbms"}, copies(backup.ins))
	target, err := os.Readlink(filepath.Join("..", "..", "scripts", "ops", "pgbackrest_restore_drill.sh"))
	require.NoError(t, err)
	assert.Equal(t, "../../infra/images/db/nbms-restore-drill.sh", target, "one drill script: the operators' is a link to the image's")
	assert.Contains(t, text, "ARG APP_IMAGE_ID=unknown")
	assert.Contains(t, last(backup.ins, "LABEL"), `org.nbms.app-image-id="${APP_IMAGE_ID}"`)
	assert.Contains(t, last(backup.ins, "LABEL"), `org.nbms.base-image-id="${BASE_IMAGE_ID}"`)
	assert.Equal(t, "999:999", last(backup.ins, "USER"), "the program runs the scheduler as postgres too")
	assert.Equal(t, `["/usr/local/bin/nbms"]`, last(backup.ins, "ENTRYPOINT"))
	assert.Equal(t, `["backup-schedule"]`, last(backup.ins, "CMD"))
	assert.Equal(t, "SIGTERM", last(backup.ins, "STOPSIGNAL"), "not the db stage's SIGINT")
	assert.Contains(t, last(backup.ins, "HEALTHCHECK"), `CMD ["pgbackrest", "info"]`, "the program's health check of the backup container")

	for _, gone := range []string{"supercronic", "curl", "sha1sum", "nbms-backup-scheduler", "docker-entrypoint"} {
		assert.NotContains(t, text, gone, "nothing is downloaded at build time; no shell scheduler; not the official image's entrypoint")
	}
	_, err = os.Stat("db/initdb")
	assert.True(t, os.IsNotExist(err), "db/initdb (the official image's hook directory) is gone")
}

// copies are the arguments of the COPY instructions of ins.
func copies(ins []instruction) []string {
	var out []string
	for _, in := range ins {
		if in.cmd == "COPY" {
			out = append(out, in.args)
		}
	}
	return out
}

// The logins script (its behaviour against a real PostgreSQL is
// TestImagesBuildAndRun's): POSIX sh, the password read from its file into
// the environment and from there by psql's \getenv, never on a command
// line; each command one transaction.
func TestDatabaseLogins(t *testing.T) {
	info, err := os.Stat(dbLogin)
	require.NoError(t, err)
	assert.NotZero(t, info.Mode()&0o100, "%s is executable", dbLogin)
	script := read(t, dbLogin)
	assert.True(t, strings.HasPrefix(script, "#!/bin/sh\n"), "POSIX sh")
	out, err := exec.Command("sh", "-n", dbLogin).CombinedOutput()
	require.NoError(t, err, "sh -n %s: %s", dbLogin, out)
	for i, line := range strings.Split(script, "\n") {
		if regexp.MustCompile(`\$\{?NBMS_DB_PASSWORD\b`).MatchString(line) {
			assert.Regexp(t, `^\s*(\[ -n "\$NBMS_DB_PASSWORD" \]|export NBMS_DB_PASSWORD$)`, line, "line %d: the password is only checked and exported", i+1)
		}
	}
	assert.Contains(t, script, `NBMS_DB_PASSWORD=$(cat "$NBMS_DB_PASSWORD_FILE")`)
	assert.Contains(t, script, `\getenv password NBMS_DB_PASSWORD`)
	assert.Equal(t, 2, strings.Count(script, "\nBEGIN;\n"), "grant and retire: one transaction each")
	assert.Contains(t, script, `ALTER ROLE :"login" SET role = :'owner';`, "a login acts as the owner")
	assert.Contains(t, script, `format('ALTER ROLE %I NOLOGIN PASSWORD NULL', rolname)`, "retire closes the other logins")
}

// The restore script of a recovery (its behaviour, a real recovery from
// the off-host repository, is infra/e2e's): POSIX sh, executable, and it
// never touches a data directory that holds a cluster.
func TestDatabaseRestore(t *testing.T) {
	info, err := os.Stat(dbRestore)
	require.NoError(t, err)
	assert.NotZero(t, info.Mode()&0o100, "%s is executable", dbRestore)
	script := read(t, dbRestore)
	assert.True(t, strings.HasPrefix(script, "#!/bin/sh\n"), "POSIX sh")
	out, err := exec.Command("sh", "-n", dbRestore).CombinedOutput()
	require.NoError(t, err, "sh -n %s: %s", dbRestore, out)
	refuse := strings.Index(script, `[ ! -s "$PGDATA/PG_VERSION" ] ||`)
	restore := strings.Index(script, "restore ||")
	require.Positive(t, refuse, "it checks for an existing cluster")
	assert.Less(t, refuse, restore, "before pgBackRest restores anything")
	assert.Contains(t, script, "--target-action=promote", "a point in time ends in a promotion, not a paused server")
	assert.Contains(t, script, "--no-online --log-level-console=warn --log-level-file=off stanza-create", "the local repository gets the stanza back before archiving starts")
}

func TestDatabaseEntrypoint(t *testing.T) {
	info, err := os.Stat(dbEntrypoint)
	require.NoError(t, err)
	assert.NotZero(t, info.Mode()&0o100, "%s is executable", dbEntrypoint)
	script := read(t, dbEntrypoint)
	assert.True(t, strings.HasPrefix(script, "#!/bin/sh\n"), "POSIX sh: the image has no bash requirement")
	out, err := exec.Command("sh", "-n", dbEntrypoint).CombinedOutput()
	require.NoError(t, err, "sh -n %s: %s", dbEntrypoint, out)

	// Passwords never reach a command line: the superuser's goes through
	// a file (printf is a shell builtin), the app's through psql's \getenv.
	for i, line := range strings.Split(script, "\n") {
		if strings.Contains(line, "$POSTGRES_PASSWORD") || strings.Contains(line, "${POSTGRES_PASSWORD}") {
			assert.Equal(t, `	printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"`, line, "line %d", i+1)
		}
		assert.NotRegexp(t, `\$\{?NBMS_DB_PASSWORD`, line, "line %d: the app password is read with \\getenv", i+1)
	}
	assert.Contains(t, script, `pwfile=$(mktemp /tmp/`)
	assert.Contains(t, script, `initdb --username=postgres --pwfile="$pwfile" --auth-local=peer --auth-host=scram-sha-256 ${POSTGRES_INITDB_ARGS:-}`)
	assert.Contains(t, script, `\getenv app_password NBMS_DB_PASSWORD`)
	assert.Contains(t, script, `CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';`)
	assert.Contains(t, script, `CREATE DATABASE :"app_db" OWNER :"app_user";`)
	assert.Contains(t, script, `CREATE EXTENSION IF NOT EXISTS postgis;`)
	hba := regexp.MustCompile(`(?m)^(local|host)\s+\S+\s+\S+.*$`).FindAllString(script, -1)
	for i := range hba {
		hba[i] = strings.Join(strings.Fields(hba[i]), " ")
	}
	assert.Equal(t, []string{
		"local all all peer",
		"local replication all peer",
		"host all all all scram-sha-256",
	}, hba, "pg_hba: peer on the socket, SCRAM over TCP")
	assert.Contains(t, script, "listen_addresses=''", "the temporary server listens on no TCP address")
	assert.NotRegexp(t, `unix_socket_directories=/var/run/postgresql`, script, "nor on the socket the health check and the backup container use")

	// The end: passwords unset, postgres exec'd with the caller's args last.
	tail := script[strings.LastIndex(script, "unset POSTGRES_PASSWORD NBMS_DB_PASSWORD"):]
	assert.Equal(t, "unset POSTGRES_PASSWORD NBMS_DB_PASSWORD\nexec postgres -c listen_addresses='*' \"$@\"\n", tail)
}

func TestNginxImage(t *testing.T) {
	text := read(t, nginxDockerfile)
	st := stages(parse(t, text))
	require.Len(t, st, 1)
	final := st[0]
	assert.Equal(t, "${BASE_IMAGE}", final.from)
	r := runs(final.ins)
	userFirst(t, r, "nginx", "101:101")
	noServiceStarts(t, r)
	assert.Contains(t, r, "apt-get install -y --no-install-recommends nginx libnginx-mod-stream wget;")
	assert.Contains(t, r, "rm -rf /etc/nginx/sites-enabled/default", "no default site")
	assert.Contains(t, text, "COPY nginx.conf /etc/nginx/nginx.conf")
	for _, script := range []string{"nbms-proxy", "nbms-switch"} {
		assert.Contains(t, text, "COPY --chmod=0755 "+script+" /usr/local/bin/"+script, "the blue/green supervisor and switch")
	}
	assert.Contains(t, r, "install -d -o nginx -g nginx -m 0755 /var/lib/nbms-proxy;", "a fresh control volume belongs to nginx's user")
	assert.Contains(t, last(final.ins, "HEALTHCHECK"), `CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:80`+nginx.HealthPath+`"]`,
		"the program's health check, on the renderer's health path")
	assert.Equal(t, `["nginx", "-e", "stderr", "-g", "daemon off;"]`, last(final.ins, "CMD"), "-e stderr: Debian's compiled-in error log is on the read-only root")
	assert.Equal(t, "80 443", last(final.ins, "EXPOSE"))

	// The image's own config, like the rendered one, writes only to /tmp.
	conf := read(t, nginxConf)
	assert.Contains(t, conf, "pid /tmp/nginx.pid;")
	assert.Contains(t, conf, "error_log stderr")
	for _, p := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		assert.Regexp(t, p+`_temp_path /tmp/`, conf)
	}
	assert.Contains(t, conf, "location = "+nginx.HealthPath+" {")
	for _, directive := range []string{"include", "daemon", "user"} {
		assert.NotRegexp(t, `(?m)^\s*`+directive+`\s`, conf, "%s: the image's CMD passes daemon off; no include, no user (non-root)", directive)
	}
}

func TestRedisImage(t *testing.T) {
	text := read(t, redisDockerfile)
	st := stages(parse(t, text))
	require.Len(t, st, 1)
	final := st[0]
	assert.Equal(t, "${BASE_IMAGE}", final.from)
	r := runs(final.ins)
	userFirst(t, r, "redis", "998:998")
	noServiceStarts(t, r)
	assert.Contains(t, r, "apt-get install -y --no-install-recommends redis-server;")
	assert.Contains(t, r, "install -d -o redis -g redis -m 0755 /data", "0755: a root-owned tmpfs on /data copies this mode, and redis must be able to look in it")
	assert.Equal(t, "/data", last(final.ins, "WORKDIR"))
	check := last(final.ins, "HEALTHCHECK")[strings.Index(last(final.ins, "HEALTHCHECK"), "CMD"):]
	assert.True(t, strings.HasSuffix(check, "| grep -q PONG"),
		"redis-cli exits 0 on an error reply: look for the PONG (the program's check): %s", check)
	assert.Contains(t, r, "install -d -o redis -g redis -m 0700 /var/lib/nbms-cache", "the control volume's mount point: a new volume takes its owner and mode")
	assert.Contains(t, check, `REDISCLI_AUTH=$(cat /var/lib/nbms-cache/admin) redis-cli --no-auth-warning --user nbms-admin -s /var/lib/nbms-cache/redis.sock ping`,
		"the admin over the control volume's socket, as the program's check (deploy.RedisCLI)")
	assert.Contains(t, last(final.ins, "CMD"), `"--protected-mode", "yes"`)
	assert.Equal(t, "6379", last(final.ins, "EXPOSE"))
}

// The app image's build context is the repository root: .dockerignore must
// keep it to what the build reads, or every infra edit rebuilds the app.
// The app image's context is app/ with go.mod and go.sum alone
// (.dockerignore), so the binary may import no package of this module
// outside app/: caught here without Docker, instead of at the image build
// (where a fresh clone's CI once found app/internal/standby importing
// conventions).
func TestAppBinaryImportsOnlyApp(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "./app/cmd/nbms")
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.Output()
	require.NoError(t, err)
	const module = "github.com/nbms-deploy/nbms/"
	var own int
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, module) {
			own++
			assert.True(t, strings.HasPrefix(pkg, module+"app/"), "%s is outside the app image's context (app/)", pkg)
		}
	}
	assert.Greater(t, own, 10, "go list saw the binary's own packages")
}

func TestDockerignoreNarrowsTheContext(t *testing.T) {
	lines := strings.Split(strings.TrimSpace(read(t, "../../.dockerignore")), "\n")
	var rules []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			rules = append(rules, l)
		}
	}
	require.NotEmpty(t, rules)
	assert.Equal(t, "*", rules[0], "exclude everything first")
	assert.Subset(t, rules, []string{"!go.mod", "!go.sum", "!app/"})
	for _, r := range rules {
		if strings.HasPrefix(r, "!") {
			assert.Contains(t, []string{"!go.mod", "!go.sum", "!app/"}, r, "nothing else enters the context")
		}
	}
	// The other images' contexts are their own folders: only what they COPY.
	for _, path := range []string{dbDockerfile, nginxDockerfile, redisDockerfile} {
		dir := filepath.Dir(path)
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		want := []string{"Dockerfile"}
		for _, in := range parse(t, read(t, path)) {
			if in.cmd == "COPY" && !strings.Contains(in.args, "--from=") {
				f := strings.Fields(in.args)
				want = append(want, f[len(f)-2])
			}
		}
		var got []string
		for _, e := range entries {
			got = append(got, e.Name())
		}
		slices.Sort(want)
		assert.Equal(t, want, got, "%s holds only the Dockerfile and what it copies", dir)
	}
}

// Each rule fires on the mistake it is about.
func TestCheckCatchesMistakes(t *testing.T) {
	const head = "ARG BASE_IMAGE\nARG BASE_IMAGE_ID=unknown\n"
	const tail = "ARG BASE_IMAGE_ID\nLABEL org.nbms.base-image-id=\"${BASE_IMAGE_ID}\"\nUSER 10001:10001\nHEALTHCHECK CMD [\"true\"]\n"
	const good = head + "FROM ${BASE_IMAGE}\n" + tail
	const install = "RUN apt-get update && apt-get install -y --no-install-recommends x && apt-get clean && rm -rf /var/lib/apt/lists/*\n"
	cases := []struct {
		name, dockerfile, want string
	}{
		{"a registry image", head + "FROM alpine:3.20.3\n" + tail, "every image builds FROM ${BASE_IMAGE}"},
		{"latest", head + "FROM debian:latest\n" + tail, "every image builds FROM ${BASE_IMAGE}"},
		{"a digest-pinned registry image", head + "FROM debian@sha256:" + strings.Repeat("a", 64) + "\n" + tail, "every image builds FROM ${BASE_IMAGE}"},
		{"COPY from an image", good + "COPY --from=busybox:1.36 /bin/sh /bin/sh\n", "is no earlier stage"},
		{"base with a default", "ARG BASE_IMAGE=debian:bookworm\nARG BASE_IMAGE_ID=unknown\nFROM ${BASE_IMAGE}\n" + tail, "has a default"},
		{"app image defaulting to a later stage", head + "ARG APP_IMAGE=later\nFROM ${APP_IMAGE} AS app\nFROM ${BASE_IMAGE} AS later\n" + tail, "has a default"},
		{"another build arg", head + "ARG OTHER\nFROM ${OTHER}\n" + tail, "from BASE_IMAGE (or APP_IMAGE"},
		{"undeclared build arg", "ARG BASE_IMAGE_ID=unknown\nFROM $BASE_IMAGE\n" + tail, "CKV_DOCKER_7"},
		{"build arg declared after FROM", "ARG BASE_IMAGE_ID=unknown\nFROM scratch\nARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n" + tail, "CKV_DOCKER_7"},
		{"no base image id", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n" + tail, "BASE_IMAGE_ID=unknown"},
		{"no label", head + "FROM ${BASE_IMAGE}\nUSER 1:1\nHEALTHCHECK CMD x\n", "no LABEL org.nbms.base-image-id"},
		{"label without the stage arg", head + "FROM ${BASE_IMAGE}\nLABEL org.nbms.base-image-id=\"${BASE_IMAGE_ID}\"\nUSER 1:1\nHEALTHCHECK CMD x\n", "would be empty"},
		{"syntax directive", "# syntax=docker/dockerfile:1\n" + good, "pull its frontend"},
		{"root user", head + "FROM ${BASE_IMAGE}\nARG BASE_IMAGE_ID\nLABEL org.nbms.base-image-id=\"${BASE_IMAGE_ID}\"\nUSER root\nHEALTHCHECK CMD x\n", "CKV_DOCKER_3/8"},
		{"uid 0", head + "FROM ${BASE_IMAGE}\nARG BASE_IMAGE_ID\nLABEL org.nbms.base-image-id=\"${BASE_IMAGE_ID}\"\nUSER 0:0\nHEALTHCHECK CMD x\n", "CKV_DOCKER_3/8"},
		{"user by name", head + "FROM ${BASE_IMAGE}\nARG BASE_IMAGE_ID\nLABEL org.nbms.base-image-id=\"${BASE_IMAGE_ID}\"\nUSER postgres\nHEALTHCHECK CMD x\n", "CKV_DOCKER_3/8"},
		{"no user", head + "FROM ${BASE_IMAGE}\nARG BASE_IMAGE_ID\nLABEL org.nbms.base-image-id=\"${BASE_IMAGE_ID}\"\nHEALTHCHECK CMD x\n", "CKV_DOCKER_3/8"},
		{"user in an earlier stage only", head + "FROM ${BASE_IMAGE} AS a\nUSER 1:1\nFROM ${BASE_IMAGE}\nARG BASE_IMAGE_ID\nLABEL org.nbms.base-image-id=\"${BASE_IMAGE_ID}\"\nHEALTHCHECK CMD x\n", "CKV_DOCKER_3/8"},
		{"no healthcheck", head + "FROM ${BASE_IMAGE}\nARG BASE_IMAGE_ID\nLABEL org.nbms.base-image-id=\"${BASE_IMAGE_ID}\"\nUSER 1:1\n", "CKV_DOCKER_2"},
		{"healthcheck none", good + "HEALTHCHECK NONE\n", "CKV_DOCKER_2"},
		{"add", good + "ADD x /x\n", "CKV_DOCKER_4"},
		{"update alone", good + "RUN apt-get update\n", "CKV_DOCKER_5"},
		{"install without update", good + "RUN apt-get install -y --no-install-recommends x && apt-get clean && rm -rf /var/lib/apt/lists/*\n", "DL3009"},
		{"recommends", good + strings.Replace(install, " --no-install-recommends", "", 1), "DL3015"},
		{"no -y", good + strings.Replace(install, " -y", "", 1), "DL3014"},
		{"lists kept", good + strings.Replace(install, " && rm -rf /var/lib/apt/lists/*", "", 1), "DL3009"},
		{"packages kept", good + strings.Replace(install, " && apt-get clean", "", 1), "DL3009"},
		{"upgrade", good + "RUN apt-get update && apt-get -y dist-upgrade\n", "DL3005"},
		{"apt", good + "RUN apt install -y x\n", "DL3027"},
		{"policy-rc.d kept", good + "RUN printf 'exit 101' > /usr/sbin/policy-rc.d\n", "policy-rc.d left"},
		{"insecure curl", good + "RUN curl -k https://x \\\n  -o /y\n", "verification disabled"},
		{"unsigned repository", good + "RUN echo 'deb [trusted=yes] http://x y main' > /etc/apt/sources.list\n", "verification disabled"},
		{"secret env", good + "ENV DB_PASSWORD=hunter2\n", "CIS 4.10"},
		{"secret env, second pair", good + "ENV A=1 API_KEY=x\n", "CIS 4.10"},
		{"secret env, legacy form", good + "ENV SECRET_KEY hunter2\n", "CIS 4.10"},
		{"ssh port", good + "EXPOSE 22\n", "CKV_DOCKER_1"},
		{"relative workdir", good + "WORKDIR app\n", "CKV_DOCKER_10"},
		{"volume", good + "VOLUME /data\n", "anonymous volumes"},
		{"RUN after the provenance arg", head + "FROM ${BASE_IMAGE}\nARG BASE_IMAGE_ID\nRUN true\nLABEL org.nbms.base-image-id=\"${BASE_IMAGE_ID}\"\nUSER 1:1\nHEALTHCHECK CMD x\n", "declare the provenance ARGs last"},
		{"duplicate alias", head + "FROM ${BASE_IMAGE} AS b\nFROM ${BASE_IMAGE} AS b\n" + tail, "CKV_DOCKER_11"},
	}
	assert.Empty(t, check(good, parse(t, good)), "the baseline passes")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Contains(t, strings.Join(check(tc.dockerfile, parse(t, tc.dockerfile)), "\n"), tc.want)
		})
	}
}
