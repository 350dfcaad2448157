// Package images holds the Dockerfiles of the images this repository builds
// (the app's is app/Dockerfile). No Docker engine runs the tests, so this
// test reads the Dockerfiles the way Checkov's Dockerfile checks do and
// fails on the properties that matter for production.
package images

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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

var (
	digestRE      = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)
	exactTagRE    = regexp.MustCompile(`:[0-9]+\.[0-9]+(\.[0-9]+)?[A-Za-z0-9._-]*$`)
	secretNameRE  = regexp.MustCompile(`(?i)(password|passwd|secret|token|api_?key|private_?key)`)
	argRefRE      = regexp.MustCompile(`^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$`)
	insecureTLSRE = regexp.MustCompile(`curl\s[^;&|]*(-k\b|--insecure)|--no-check-certificate|--allow-unauthenticated|--force-yes|--nogpgcheck`)
)

// check returns every rule a Dockerfile breaks (CKV_DOCKER ids where one
// exists).
func check(ins []instruction) []string {
	var problems []string
	bad := func(in instruction, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("line %d: %s", in.line, fmt.Sprintf(format, args...)))
	}
	aliases := map[string]bool{}
	// globalArgs are the ARGs before the first FROM, the only ones a FROM
	// can use: name -> default ("" and false when it has none).
	globalArgs := map[string]struct {
		value      string
		hasDefault bool
	}{}
	seenFrom := false
	lastUser, healthcheck := "", false
	for _, in := range ins {
		if in.cmd == "ARG" && !seenFrom {
			name, value, hasDefault := strings.Cut(in.args, "=")
			globalArgs[name] = struct {
				value      string
				hasDefault bool
			}{strings.Trim(value, `"`), hasDefault}
		}
		switch in.cmd {
		case "FROM":
			seenFrom = true
			fields := strings.Fields(in.args)
			var image string
			for _, f := range fields {
				if !strings.HasPrefix(f, "--") {
					image = f
					break
				}
			}
			if len(fields) >= 3 && strings.EqualFold(fields[len(fields)-2], "AS") {
				alias := strings.ToLower(fields[len(fields)-1])
				if aliases[alias] {
					bad(in, "CKV_DOCKER_11: stage alias %q used twice", alias)
				}
				aliases[alias] = true
			}
			lastUser = "" // a new stage starts as root again
			if m := argRefRE.FindStringSubmatch(image); m != nil {
				arg, declared := globalArgs[m[1]]
				switch {
				case !declared:
					bad(in, "CKV_DOCKER_7: %s names no ARG declared before the first FROM", image)
					continue
				case !arg.hasDefault:
					// The builder must pass it, or the build fails: the
					// caller pins it (the infra program passes the image
					// it has just built, and its test says so).
					continue
				}
				image = arg.value // judge the default like a literal
			}
			switch {
			case aliases[strings.ToLower(image)] && !strings.Contains(image, ":"):
				// an earlier stage
			case strings.Contains(image, ":latest"):
				bad(in, "CKV_DOCKER_7: %s uses the latest tag", image)
			case !digestRE.MatchString(image) && !exactTagRE.MatchString(image):
				bad(in, "CKV_DOCKER_7: %s is pinned by neither digest nor an exact version tag", image)
			}
		case "USER":
			lastUser = in.args
		case "HEALTHCHECK":
			healthcheck = !strings.EqualFold(strings.TrimSpace(in.args), "NONE")
		case "ADD":
			bad(in, "CKV_DOCKER_4: use COPY, not ADD")
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
		case "ENV", "ARG":
			name, value, hasValue := strings.Cut(in.args, "=")
			if secretNameRE.MatchString(name) && hasValue && value != "" && !strings.Contains(name, "SHA") {
				bad(in, "CIS 4.10: %s carries a secret in the image", name)
			}
		case "RUN":
			if strings.Contains(in.args, "apt-get update") && !strings.Contains(in.args, "apt-get install") {
				bad(in, "CKV_DOCKER_5: apt-get update alone")
			}
			if insecureTLSRE.MatchString(in.args) {
				bad(in, "CKV2_DOCKER: certificate or signature verification disabled")
			}
			if regexp.MustCompile(`\bsudo\b`).MatchString(in.args) {
				bad(in, "CKV2_DOCKER_1: sudo")
			}
		}
	}
	user := strings.SplitN(lastUser, ":", 2)[0]
	if user == "" || user == "root" || user == "0" {
		problems = append(problems, fmt.Sprintf("CKV_DOCKER_3/8: the final stage runs as %q; set a non-root USER", lastUser))
	}
	if !healthcheck {
		problems = append(problems, "CKV_DOCKER_2: no HEALTHCHECK")
	}
	return problems
}

func read(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(data)
}

func TestDockerfilesPassTheChecks(t *testing.T) {
	for _, path := range []string{"../../app/Dockerfile", "db/Dockerfile"} {
		t.Run(path, func(t *testing.T) {
			assert.Empty(t, check(parse(t, read(t, path))))
		})
	}
}

// Properties the deployment relies on, beyond the generic checks.
func TestAppImage(t *testing.T) {
	ins := parse(t, read(t, "../../app/Dockerfile"))
	var froms, runs []string
	final := ""
	for _, in := range ins {
		switch in.cmd {
		case "FROM":
			froms = append(froms, in.args)
			final = in.args
		case "RUN":
			runs = append(runs, in.args)
		}
	}
	require.Len(t, froms, 2, "multi-stage: builder and runtime")
	assert.Regexp(t, `^golang:1\.26\.\d+`, froms[0])
	assert.Regexp(t, `^gcr\.io/distroless/static-debian12:nonroot@sha256:`, final, "small final image: distroless static, digest-pinned")
	assert.Contains(t, strings.Join(runs, "\n"), "CGO_ENABLED=0 go build -trimpath")
	var user, healthcheck, entrypoint string
	for _, in := range ins {
		switch in.cmd {
		case "USER":
			user = in.args
		case "HEALTHCHECK":
			healthcheck = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		}
	}
	assert.Equal(t, "65532:65532", user, "numeric non-root user (distroless nonroot)")
	assert.Contains(t, healthcheck, `CMD ["/usr/local/bin/nbms", "healthcheck"]`, "the binary probes itself: no shell or curl in the image")
	assert.Equal(t, `["/usr/local/bin/nbms"]`, entrypoint)
}

func TestDatabaseImage(t *testing.T) {
	text := read(t, "db/Dockerfile")
	ins := parse(t, text)
	var froms, copies []string
	for _, in := range ins {
		switch in.cmd {
		case "FROM":
			froms = append(froms, in.args)
		case "COPY":
			copies = append(copies, in.args)
		}
	}
	require.Len(t, froms, 2, "the app image as a stage, then the runtime")
	assert.Equal(t, "${APP_IMAGE} AS app", froms[0], "the app image comes from the build arg the program passes")
	assert.Regexp(t, `^postgis/postgis:15-[0-9.]+@sha256:[0-9a-f]{64}$`, froms[1])
	assert.Contains(t, text, "pgbackrest")

	// The backup scheduler is the app's binary, copied from where the app
	// image keeps it (its ENTRYPOINT), to where the program runs it.
	var appBinary string
	for _, in := range parse(t, read(t, "../../app/Dockerfile")) {
		if in.cmd == "ENTRYPOINT" {
			var argv []string
			require.NoError(t, json.Unmarshal([]byte(in.args), &argv))
			appBinary = argv[0]
		}
	}
	require.NotEmpty(t, appBinary)
	assert.Contains(t, copies, "--from=app "+appBinary+" /usr/local/bin/nbms")
	for _, gone := range []string{"supercronic", "curl", "sha1sum", "nbms-backup-scheduler"} {
		assert.NotContains(t, text, gone, "nothing is downloaded at build time; no shell scheduler")
	}

	script := "db/initdb/20-nbms.sh"
	info, err := os.Stat(script)
	require.NoError(t, err)
	assert.NotZero(t, info.Mode()&0o100, "%s is executable", script)
	assert.True(t, strings.HasPrefix(read(t, script), "#!/bin/sh\n"), script)
	assert.Contains(t, text, filepath.Base(script), "%s is copied into the image", script)
	assert.NotContains(t, read(t, script), "$NBMS_DB_PASSWORD", "the password is read with \\getenv, never on a command line")
}

// The app image's build context is the repository root: .dockerignore must
// keep it to what the build reads, or every infra edit rebuilds the app.
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
}

// Each rule fires on the mistake it is about.
func TestCheckCatchesMistakes(t *testing.T) {
	const good = "FROM alpine:3.20.3\nUSER 10001\nHEALTHCHECK CMD [\"true\"]\n"
	cases := []struct {
		name, dockerfile, want string
	}{
		{"latest", "FROM alpine:latest\nUSER 1\nHEALTHCHECK CMD x\n", "CKV_DOCKER_7"},
		{"untagged", "FROM alpine\nUSER 1\nHEALTHCHECK CMD x\n", "CKV_DOCKER_7"},
		{"floating tag", "FROM alpine:3\nUSER 1\nHEALTHCHECK CMD x\n", "CKV_DOCKER_7"},
		{"root user", "FROM alpine:3.20.3\nUSER root\nHEALTHCHECK CMD x\n", "CKV_DOCKER_3/8"},
		{"no user", "FROM alpine:3.20.3\nHEALTHCHECK CMD x\n", "CKV_DOCKER_3/8"},
		{"user in an earlier stage only", "FROM alpine:3.20.3 AS a\nUSER 1\nFROM alpine:3.20.3\nHEALTHCHECK CMD x\n", "CKV_DOCKER_3/8"},
		{"no healthcheck", "FROM alpine:3.20.3\nUSER 1\n", "CKV_DOCKER_2"},
		{"healthcheck none", "FROM alpine:3.20.3\nUSER 1\nHEALTHCHECK NONE\n", "CKV_DOCKER_2"},
		{"add", good + "ADD x /x\n", "CKV_DOCKER_4"},
		{"update alone", good + "RUN apt-get update\n", "CKV_DOCKER_5"},
		{"insecure curl", good + "RUN curl -k https://x \\\n  -o /y\n", "verification disabled"},
		{"secret env", good + "ENV DB_PASSWORD=hunter2\n", "CIS 4.10"},
		{"ssh port", good + "EXPOSE 22\n", "CKV_DOCKER_1"},
		{"relative workdir", good + "WORKDIR app\n", "CKV_DOCKER_10"},
		{"duplicate alias", "FROM a:1.2 AS b\nFROM c:1.2 AS b\nUSER 1\nHEALTHCHECK CMD x\n", "CKV_DOCKER_11"},
		{"build arg with a latest default", "ARG BASE=alpine:latest\nFROM ${BASE}\nUSER 1\nHEALTHCHECK CMD x\n", "CKV_DOCKER_7"},
		{"undeclared build arg", "FROM $BASE\nUSER 1\nHEALTHCHECK CMD x\n", "CKV_DOCKER_7"},
		{"build arg declared after FROM", "FROM alpine:3.20.3\nARG BASE\nFROM ${BASE}\nUSER 1\nHEALTHCHECK CMD x\n", "CKV_DOCKER_7"},
	}
	assert.Empty(t, check(parse(t, good)), "the baseline passes")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Contains(t, strings.Join(check(parse(t, tc.dockerfile)), "\n"), tc.want)
		})
	}
}
