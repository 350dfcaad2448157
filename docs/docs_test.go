// The runbooks are only worth something if an operator can type what they
// say. These tests read README.md, the pages in docs/ and every runbook in
// docs/production_hardening (not secure_settings_reference.md: it is
// generated from app/config and has its own staleness test) and fail when
// a documented command, script, make target or link does not exist.
//
// The rules, applied to what a document writes as code — `inline code`
// and fenced code blocks (a block tagged ```text is example output and is
// skipped; in fenced blocks a shell comment " # ..." is ignored and lines
// ending in "\" are joined with the next):
//
//   - `nbms <word>`: <word> is a subcommand listed by the real binary's
//     `nbms help` (built from app/cmd/nbms); every `--flag` after it in the
//     same shell command (up to |, ; or &) is a flag of that subcommand, as
//     its `-h` output lists it.
//   - `nbms-policy <word>`: <word> appears as `nbms-policy <word>` in the
//     real binary's usage (built from policy/cmd/nbms-policy), and each
//     `--flag` after it appears there too.
//   - `make <target>`: <target> is a target of the Makefile.
//
// Anywhere in a document, code or prose:
//
//   - a path `scripts/...` exists (a glob matches at least one file); a
//     shell script is executable and `<script> --help` exits 0 with a usage
//     text, except the scripts listed in scriptsWithoutHelp.
//   - a relative Markdown link points to an existing file or directory. A
//     `#L<n>` anchor is within the file; another anchor on a Markdown file
//     is one of its headings. A link whose text names a Go test
//     (`TestX`, `FuzzX`, `BenchmarkX`, optionally `/subtest`) points to a
//     file or package that declares it (and contains the subtest's name);
//     a link whose text names an exported Go identifier (`Name` or
//     `pkg.Name`) points to Go code that declares it.
package docs_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

var (
	// generatedReference is checked by app/config's TestReferenceIsUpToDate,
	// not here: it is the output of `nbms settings-reference`.
	generatedReference = path.Base(config.ReferencePath)
	// runbookDir holds the runbooks, relative to the repository root: the
	// generated reference sits among them.
	runbookDir = path.Dir(config.ReferencePath)
)

// requiredRunbooks are the documents issue 6 asks for.
var requiredRunbooks = []string{
	"current_state.md",
	"production_hardening_plan.md",
	generatedReference,
	"deployment_runbook.md",
	"db_backup_pitr_runbook.md",
	"security_verification.md",
}

// scriptsWithoutHelp are scripts that do their job whatever their
// arguments, so running `--help` would run them. They are checked for
// existence and the executable bit only. An entry must go once its script
// learns --help (TestDocumentedScripts fails until it does).
var scriptsWithoutHelp = map[string]string{}

var (
	root      string // repository root
	nbmsBin   string // built from app/cmd/nbms
	policyBin string // built from policy/cmd/nbms-policy
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		var err error
		if root, err = filepath.Abs(".."); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		dir, err := os.MkdirTemp("", "docs-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		nbmsBin = filepath.Join(dir, "nbms")
		policyBin = filepath.Join(dir, "nbms-policy")
		for bin, pkg := range map[string]string{nbmsBin: "github.com/nbms-deploy/nbms/app/cmd/nbms", policyBin: "github.com/nbms-deploy/nbms/policy/cmd/nbms-policy"} {
			if err := testsupport.BuildBinary(bin, pkg); err != nil {
				fmt.Fprintf(os.Stderr, "docs: %v\n", err)
				return 1
			}
		}
		return m.Run()
	}())
}

// --- reading the documents ------------------------------------------------

// snippet is a piece of a document: code (an inline span or a fenced line)
// or a whole prose line.
type snippet struct {
	file string // relative to the repository root
	line int
	text string
	code bool
}

func (s snippet) where() string { return fmt.Sprintf("%s:%d", s.file, s.line) }

// link is a relative Markdown link.
type link struct {
	snippet
	label, target string
}

// document is one parsed Markdown file.
type document struct {
	path     string // relative to the repository root
	snippets []snippet
	links    []link
	headings []string // GitHub anchors of its headings
}

var (
	fenceRE      = regexp.MustCompile("^\\s*(```+|~~~+)\\s*([^\\s`]*)")
	inlineCodeRE = regexp.MustCompile("`([^`\n]+)`")
	linkRE       = regexp.MustCompile(`!?\[([^\]]*)\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	headingRE    = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
	shellComment = regexp.MustCompile(`(^|\s)#(\s.*)?$`)
)

// parse reads a Markdown document into snippets, links and headings.
func parse(path string, data []byte) document {
	d := document{path: path}
	slugs := map[string]int{}
	var fence string // the open fence marker, "" outside a block
	var skipBlock bool
	var pending *snippet // a fenced line continued with "\"
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := fenceRE.FindStringSubmatch(line); m != nil {
			switch {
			case fence == "":
				fence, skipBlock = m[1], m[2] == "text"
				continue
			case strings.HasPrefix(m[1], fence) && strings.TrimSpace(line) == m[1]:
				fence, pending = "", nil
				continue
			}
		}
		if fence != "" {
			if skipBlock {
				continue
			}
			text := shellComment.ReplaceAllString(line, "")
			if pending != nil {
				pending.text += " " + strings.TrimSpace(text)
			} else {
				pending = &snippet{file: path, line: n, text: text, code: true}
			}
			if strings.HasSuffix(strings.TrimSpace(pending.text), "\\") {
				pending.text = strings.TrimSuffix(strings.TrimSpace(pending.text), "\\")
				continue
			}
			d.snippets = append(d.snippets, *pending)
			pending = nil
			continue
		}
		if m := headingRE.FindStringSubmatch(line); m != nil {
			slug := githubSlug(m[1])
			if k := slugs[slug]; k > 0 {
				d.headings = append(d.headings, slug+"-"+strconv.Itoa(k))
			} else {
				d.headings = append(d.headings, slug)
			}
			slugs[slug]++
		}
		prose := snippet{file: path, line: n, text: line}
		d.snippets = append(d.snippets, prose)
		for _, m := range inlineCodeRE.FindAllStringSubmatch(line, -1) {
			d.snippets = append(d.snippets, snippet{file: path, line: n, text: m[1], code: true})
		}
		for _, m := range linkRE.FindAllStringSubmatch(line, -1) {
			target := m[2]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			d.links = append(d.links, link{snippet: prose, label: m[1], target: target})
		}
	}
	return d
}

// githubSlug is the anchor GitHub gives a heading: lower case, markup and
// punctuation dropped, spaces turned into hyphens.
func githubSlug(heading string) string {
	heading = linkRE.ReplaceAllString(heading, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// loadDocuments parses README.md, the runbooks and the pages beside them
// in docs/.
func loadDocuments(t *testing.T) []document {
	t.Helper()
	paths := []string{"README.md"}
	for _, dir := range []string{runbookDir, "docs"} {
		entries, err := os.ReadDir(filepath.Join(root, dir))
		require.NoError(t, err)
		for _, e := range entries {
			if !e.IsDir() && strings.HasSuffix(e.Name(), ".md") && e.Name() != generatedReference {
				paths = append(paths, filepath.ToSlash(filepath.Join(dir, e.Name())))
			}
		}
	}
	var docs []document
	for _, p := range paths {
		data, err := os.ReadFile(filepath.Join(root, p))
		require.NoError(t, err)
		docs = append(docs, parse(p, data))
	}
	return docs
}

// --- commands ---------------------------------------------------------------

// invocation is a command found in a code snippet: the subcommand and
// the flags that follow it in the same shell command.
type invocation struct {
	snippet
	sub   string
	flags []string
}

var (
	flagRE        = regexp.MustCompile(`(?:^|[\s\[(])--([a-z][a-z0-9-]*)`)
	commandEndRE  = regexp.MustCompile(`[|;&]`)
	nbmsRE        = regexp.MustCompile(`(?:^|[\s/(])nbms\s+([a-z][a-z0-9-]*)`)
	nbmsPolicyRE  = regexp.MustCompile(`(?:^|[\s/(])nbms-policy\s+([a-z][a-z0-9-]*)`)
	makeRE        = regexp.MustCompile(`(?:^|[\s(;&|])make\s+([a-z][a-z0-9_-]*)`)
	makeTargetRE  = regexp.MustCompile(`(?m)^([A-Za-z0-9][A-Za-z0-9_.-]*)\s*:(?:[^=]|$)`)
	scriptPathRE  = regexp.MustCompile(`(?:^|[^\w./-])((?:\./)?scripts/[\w./*-]*[\w*])`)
	helpCommandRE = regexp.MustCompile(`(?m)^  ([a-z][a-z0-9-]*)\s{2,}`)
)

// invocations finds every match of re in the code snippets.
func invocations(docs []document, re *regexp.Regexp) []invocation {
	var out []invocation
	for _, d := range docs {
		for _, s := range d.snippets {
			if !s.code {
				continue
			}
			for _, m := range re.FindAllStringSubmatchIndex(s.text, -1) {
				rest := s.text[m[1]:]
				if loc := commandEndRE.FindStringIndex(rest); loc != nil {
					rest = rest[:loc[0]]
				}
				inv := invocation{snippet: s, sub: s.text[m[2]:m[3]]}
				for _, f := range flagRE.FindAllStringSubmatch(rest, -1) {
					inv.flags = append(inv.flags, f[1])
				}
				out = append(out, inv)
			}
		}
	}
	return out
}

// run runs a built binary or a script with an environment that holds no
// application settings, so that a command which ignores -h fails on its
// configuration instead of doing anything.
func run(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = root
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(), "LC_ALL=C"}
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		exitErr, ok := err.(*exec.ExitError)
		require.True(t, ok, "%s %v: %v", name, args, err)
		code = exitErr.ExitCode()
	}
	return string(out), code
}

func TestDocumentedNbmsCommandsExist(t *testing.T) {
	help, code := run(t, nbmsBin, "help")
	require.Equal(t, 0, code, help)
	subcommands := map[string]bool{}
	for _, m := range helpCommandRE.FindAllStringSubmatch(help, -1) {
		subcommands[m[1]] = true
	}
	require.True(t, subcommands["serve"] && subcommands["help"], "the help output lists the subcommands:\n%s", help)

	found := invocations(loadDocuments(t), nbmsRE)
	require.NotEmpty(t, found, "the runbooks mention nbms commands")
	flagHelp := map[string]string{}
	for _, inv := range found {
		if !assert.True(t, subcommands[inv.sub], "%s: `nbms %s` is not a subcommand of nbms (nbms help lists %v) in %q",
			inv.where(), inv.sub, slices.Sorted(maps.Keys(subcommands)), inv.text) {
			continue
		}
		for _, f := range inv.flags {
			if f == "help" {
				continue
			}
			out, ok := flagHelp[inv.sub]
			if !ok {
				out, _ = run(t, nbmsBin, inv.sub, "-h")
				flagHelp[inv.sub] = out
			}
			flagLine := regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(f) + `(\s|$)`)
			assert.Regexp(t, flagLine, out, "%s: `nbms %s` has no flag --%s (in %q)", inv.where(), inv.sub, f, inv.text)
		}
	}
}

func TestDocumentedPolicyCommandsExist(t *testing.T) {
	usage, code := run(t, policyBin, "help")
	require.Equal(t, 0, code, usage)
	for _, inv := range invocations(loadDocuments(t), nbmsPolicyRE) {
		assert.Contains(t, usage, "nbms-policy "+inv.sub, "%s: `nbms-policy %s` is not in the usage:\n%s", inv.where(), inv.sub, usage)
		for _, f := range inv.flags {
			assert.Contains(t, usage, "--"+f, "%s: `nbms-policy %s` has no flag --%s", inv.where(), inv.sub, f)
		}
	}
}

func TestDocumentedMakeTargetsExist(t *testing.T) {
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	require.NoError(t, err)
	targets := map[string]bool{}
	for _, m := range makeTargetRE.FindAllStringSubmatch(string(makefile), -1) {
		targets[m[1]] = true
	}
	require.True(t, targets["test"] && targets["setup"], "parsed the Makefile's targets: %v", targets)

	found := invocations(loadDocuments(t), makeRE)
	require.NotEmpty(t, found, "the documents mention make targets")
	for _, inv := range found {
		assert.True(t, targets[inv.sub], "%s: `make %s` is not a target of the Makefile (targets: %v)",
			inv.where(), inv.sub, slices.Sorted(maps.Keys(targets)))
	}
}

func TestDocumentedScripts(t *testing.T) {
	scripts := map[string]snippet{} // path -> first mention
	for _, d := range loadDocuments(t) {
		for _, s := range d.snippets {
			for _, m := range scriptPathRE.FindAllStringSubmatch(s.text, -1) {
				p := strings.TrimPrefix(strings.TrimRight(m[1], "."), "./")
				if _, seen := scripts[p]; !seen {
					scripts[p] = s
				}
			}
		}
		for _, l := range d.links {
			p := resolve(d.path, l.target)
			if strings.HasPrefix(p, "scripts/") {
				if _, seen := scripts[p]; !seen {
					scripts[p] = l.snippet
				}
			}
		}
	}
	require.NotEmpty(t, scripts, "the runbooks mention the ops scripts")

	var files []string
	for p, s := range scripts {
		matches, err := filepath.Glob(filepath.Join(root, p))
		require.NoError(t, err)
		if !assert.NotEmpty(t, matches, "%s: %s does not exist", s.where(), p) {
			continue
		}
		for _, m := range matches {
			rel, err := filepath.Rel(root, m)
			require.NoError(t, err)
			files = append(files, filepath.ToSlash(rel))
		}
	}
	slices.Sort(files)
	files = slices.Compact(files)
	for _, f := range files {
		if !strings.HasSuffix(f, ".sh") {
			continue
		}
		t.Run(f, func(t *testing.T) {
			info, err := os.Stat(filepath.Join(root, f))
			require.NoError(t, err)
			assert.NotZero(t, info.Mode()&0o111, "%s is not executable", f)
			if reason, exempt := scriptsWithoutHelp[f]; exempt {
				src, err := os.ReadFile(filepath.Join(root, f))
				require.NoError(t, err)
				assert.NotContains(t, string(src), "--help",
					"%s now handles --help: remove it from scriptsWithoutHelp (%s)", f, reason)
				return
			}
			out, code := run(t, filepath.Join(root, f), "--help")
			assert.Equal(t, 0, code, "%s --help:\n%s", f, out)
			assert.Contains(t, strings.ToLower(out), "usage", "%s --help prints a usage text", f)
		})
	}
}

// resolve turns a link target into a path relative to the repository root.
func resolve(docPath, target string) string {
	target, _, _ = strings.Cut(target, "#")
	if target == "" {
		return docPath
	}
	return filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(docPath), target)))
}

// --- links ----------------------------------------------------------------

var (
	lineAnchorRE = regexp.MustCompile(`^L(\d+)(?:-L(\d+))?$`)
	testNameRE   = regexp.MustCompile(`^((?:Test|Fuzz|Benchmark)[A-Za-z0-9_]*)(?:/(.+))?$`)
	identRE      = regexp.MustCompile(`^(?:[a-z][a-z0-9]*\.)?([A-Z][A-Za-z0-9_]*)$`)
)

func TestRelativeLinksResolve(t *testing.T) {
	docs := loadDocuments(t)
	headings := map[string][]string{}
	total := 0
	for _, d := range docs {
		headings[d.path] = d.headings
		total += len(d.links)
	}
	require.NotZero(t, total, "the runbooks link to the code")
	for _, d := range docs {
		for _, l := range d.links {
			checkLink(t, d, l, headings)
		}
	}
}

func checkLink(t *testing.T, d document, l link, headings map[string][]string) {
	t.Helper()
	where := fmt.Sprintf("%s: link [%s](%s)", l.where(), l.label, l.target)
	if strings.HasPrefix(l.target, "/") {
		t.Errorf("%s: use a relative path, not an absolute one", where)
		return
	}
	path := resolve(d.path, l.target)
	if strings.HasPrefix(path, "../") {
		t.Errorf("%s: points outside the repository", where)
		return
	}
	abs := filepath.Join(root, path)
	info, err := os.Stat(abs)
	if !assert.NoError(t, err, "%s: the target does not exist", where) {
		return
	}
	if _, anchor, ok := strings.Cut(l.target, "#"); ok {
		checkAnchor(t, where, path, abs, anchor, headings)
	}
	label := strings.Trim(strings.TrimSpace(l.label), "`")
	if m := testNameRE.FindStringSubmatch(label); m != nil {
		code := goSource(t, abs, info.IsDir(), true)
		assert.Regexp(t, `(?m)^func `+regexp.QuoteMeta(m[1])+`\(`, code, "%s: %s declares no %s", where, path, m[1])
		if m[2] != "" {
			assert.Contains(t, code, strconv.Quote(m[2]), "%s: %s has no subtest %q", where, path, m[2])
		}
		return
	}
	if m := identRE.FindStringSubmatch(label); m != nil && (info.IsDir() || strings.HasSuffix(path, ".go")) {
		code := goSource(t, abs, info.IsDir(), false)
		name := regexp.QuoteMeta(m[1])
		decl := `(?m)(^func (\([^)]*\) )?` + name + `[\[(]|^(type|const|var) ` + name + `\b|^\s+` + name + `(\s|,|=))`
		assert.Regexp(t, decl, code, "%s: %s declares no %s", where, path, m[1])
	}
}

func checkAnchor(t *testing.T, where, path, abs, anchor string, headings map[string][]string) {
	t.Helper()
	if m := lineAnchorRE.FindStringSubmatch(anchor); m != nil {
		data, err := os.ReadFile(abs)
		require.NoError(t, err)
		lines := bytes.Count(data, []byte("\n")) + 1
		for _, n := range m[1:] {
			if n == "" {
				continue
			}
			k, _ := strconv.Atoi(n)
			assert.True(t, k >= 1 && k <= lines, "%s: line %d is beyond the file's %d lines", where, k, lines)
		}
		return
	}
	if !strings.HasSuffix(path, ".md") {
		t.Errorf("%s: anchor #%s on a non-Markdown file must be #L<n> or #L<n>-L<m>", where, anchor)
		return
	}
	known, parsed := headings[path]
	if !parsed {
		data, err := os.ReadFile(abs)
		require.NoError(t, err)
		known = parse(path, data).headings
	}
	assert.Contains(t, known, anchor, "%s: no heading with this anchor in %s", where, path)
}

// goSource returns the Go source of a file, or of every Go file (test
// files when tests is set) in a directory.
func goSource(t *testing.T, abs string, dir, tests bool) string {
	t.Helper()
	if !dir {
		data, err := os.ReadFile(abs)
		require.NoError(t, err)
		return string(data)
	}
	pattern := "*.go"
	if tests {
		pattern = "*_test.go"
	}
	files, err := filepath.Glob(filepath.Join(abs, pattern))
	require.NoError(t, err)
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		b.Write(data)
		b.WriteByte('\n')
	}
	return b.String()
}

// --- the documents themselves ----------------------------------------------

func TestRunbooksArePresent(t *testing.T) {
	for _, name := range requiredRunbooks {
		data, err := os.ReadFile(filepath.Join(root, runbookDir, name))
		if assert.NoError(t, err, "issue 6 asks for %s/%s", runbookDir, name) {
			assert.True(t, bytes.HasPrefix(data, []byte("# ")), "%s starts with a title", name)
		}
	}
}

// TestParserFindsWhatTheRulesCheck proves the extraction on a small
// document, so that a parser that silently finds nothing cannot pass the
// tests above.
func TestParserFindsWhatTheRulesCheck(t *testing.T) {
	doc := parse("docs/production_hardening/x.md", []byte(strings.Join([]string{
		"# Title",
		"Run `nbms backup-status --json --max-wal-age 2h | jq .` then `make check`.",
		"See [`TestX`](../../app/x_test.go#L3) and [the plan](production_hardening_plan.md#status).",
		"## Status",
		"```sh",
		"runuser -u postgres -- scripts/ops/pgbackrest_backup.sh \\",
		"    --type full   # make sure nothing else runs",
		"docker exec prod-app /usr/local/bin/nbms migrate status",
		"```",
		"```text",
		"nbms ignored-output",
		"```",
		"The nbms binary is not a command in prose.",
	}, "\n")))

	nbms := invocations([]document{doc}, nbmsRE)
	require.Len(t, nbms, 2)
	assert.Equal(t, "backup-status", nbms[0].sub)
	assert.Equal(t, []string{"json", "max-wal-age"}, nbms[0].flags, "flags stop at the pipe")
	assert.Equal(t, "migrate", nbms[1].sub)
	assert.Equal(t, 8, nbms[1].line)

	mk := invocations([]document{doc}, makeRE)
	require.Len(t, mk, 1, "make in a shell comment is ignored")
	assert.Equal(t, "check", mk[0].sub)

	var scripts []string
	for _, s := range doc.snippets {
		for _, m := range scriptPathRE.FindAllStringSubmatch(s.text, -1) {
			scripts = append(scripts, m[1])
		}
	}
	assert.Contains(t, scripts, "scripts/ops/pgbackrest_backup.sh")
	for _, s := range doc.snippets {
		if strings.Contains(s.text, "pgbackrest_backup.sh") && s.code {
			assert.Contains(t, s.text, "--type full", "continued lines are joined")
		}
	}

	require.Len(t, doc.links, 2)
	assert.Equal(t, "app/x_test.go", resolve(doc.path, doc.links[0].target))
	assert.Equal(t, []string{"title", "status"}, doc.headings)
	assert.Equal(t, "restore-production-to-a-point-in-time", githubSlug("Restore production to a point in time"))
	assert.Equal(t, "nbms-policy-audit--reports", githubSlug("`nbms-policy audit` — reports"))
}
