package backup

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
)

// causes names, in an operator's words, why a pgBackRest command failed,
// from the error it printed: "ERROR: [nnn]: message" and the indented
// lines under it, where pgBackRest lists the errors behind the message
// (for a repository, the reason each copy of the info file could not be
// read). A restore reads the repositories one by one and names each one's
// failure in a warning, "WARN: repoN: [ErrorName] message" with the same
// lines under it, before its own error ([075] no backup set found): when
// the error matches no row, the warnings are read as errors of the code
// errorCodes gives their name. The first row whose code and text both
// match wins; code 0 is any code. Every row comes from a failure provoked
// for real with pgBackRest 2.45 against versitygw: testdata/errors holds
// what pgBackRest printed (TestCause; restore_*.txt a restore's), and
// TestOffHostFailuresAreNamed provokes each cause but the last again
// through the scheduler, TestDrillOfTheOffHostRepository the wrong cipher
// passphrase through a drill.
var causes = []struct {
	code  int
	text  string
	cause string
}{
	// [049] HostConnectError: nothing listens on the port (connection
	// refused) or the name does not resolve.
	{0, "HostConnectError: unable to connect to", "repository unreachable"},
	{0, "HostConnectError: unable to get address for", "repository unreachable"},
	// [042] FileReadError: the port accepts but nothing answers.
	{0, "FileReadError: timeout after", "repository unreachable"},
	// [101] ServiceError: the connection closed before TLS began, as the
	// tests' stand-in for the backup relay does when nothing answers
	// behind it (either text, from one run to the next).
	{0, "ServiceError: TLS error [5:0] no details available", "repository unreachable"},
	{0, "ServiceError: TLS error [1:167772454] unexpected eof while reading", "repository unreachable"},
	// [039] ProtocolError: the store refused the request's signature (a
	// wrong secret key).
	{0, "HTTP request failed with 403 (Forbidden)", "credentials refused"},
	// [095] CryptoError from the TLS handshake, with a misleading hint
	// ("is or was the repo encrypted?"): these rows come before the
	// cipher's own [095] below.
	{0, "CryptoError: unable to verify certificate presented by", "certificate not trusted or expired"},
	{0, "in certificate common name or subject alternative names", "certificate names another host"},
	// A wrong repo2-cipher-pass decrypts the info files into noise:
	// mostly the INI parser's [029] FormatError at line 1, sometimes the
	// cipher's [095] "unable to flush" (which of the two depends on the
	// passphrase and the repository's salt).
	{29, "unable to load info file", "wrong cipher passphrase"},
	{0, "CryptoError: unable to flush", "wrong cipher passphrase"},
	// [101] ServiceError: HTTP 507, versitygw's answer when its disk is
	// full.
	{0, "Insufficient Storage", "repository storage full"},
	// [082] ArchiveTimeoutError: the backup waited archive-timeout for a
	// WAL segment to reach the repository. Why is in archive_command's
	// own errors (PostgreSQL's log): a full store stops the WAL first.
	{82, "was not archived before the", "WAL not reaching the repository"},
	// [055] FileMissingError on the info files: no stanza at that bucket
	// and path; versitygw also answers an unknown access key with 404
	// (its XAdminUserNotFound), which pgBackRest reads as a missing file.
	{55, "unable to load info file", "stanza not found: wrong bucket, path or access key"},
}

// errorLine finds pgBackRest's "ERROR: [nnn]: " line.
var errorLine = regexp.MustCompile(`ERROR: \[(\d{3})\]: `)

// repoWarning finds a restore's warning about one repository.
var repoWarning = regexp.MustCompile(`WARN: repo\d+: \[(\w+)\] `)

// errorCodes are pgBackRest's codes (its build/error.yaml) of the error
// names that rows with a code need.
var errorCodes = map[string]int{"FormatError": 29, "FileMissingError": 55, "ArchiveTimeoutError": 82}

// Cause names why the pgBackRest command behind err failed, or "" when
// err did not come from one or its error is none of the causes above.
func Cause(err error) string {
	var ce *commandError
	if !errors.As(err, &ce) {
		return ""
	}
	return classify(ce.stderr)
}

// classify is Cause for pgBackRest's stderr.
func classify(stderr string) string {
	if m := errorLine.FindStringSubmatchIndex(stderr); m != nil {
		code, _ := strconv.Atoi(stderr[m[2]:m[3]]) // three digits
		// The message and the lines under it: pgBackRest prints one error,
		// last.
		if cause := match(code, stderr[m[1]:]); cause != "" {
			return cause
		}
	}
	for _, m := range repoWarning.FindAllStringSubmatchIndex(stderr, -1) {
		code, ok := errorCodes[stderr[m[2]:m[3]]]
		if !ok {
			code = -1 // rows with a code need one of errorCodes
		}
		if cause := match(code, warningBlock(stderr[m[1]:])); cause != "" {
			return cause
		}
	}
	return ""
}

// match is the cause of the first row that matches code and text.
func match(code int, text string) string {
	for _, c := range causes {
		if (c.code == 0 || c.code == code) && strings.Contains(text, c.text) {
			return c.cause
		}
	}
	return ""
}

// warningBlock is a warning's message (s starts with it) and the indented
// lines under it: one repository's, not the next warning's.
func warningBlock(s string) string {
	lines := strings.SplitAfter(s, "\n")
	n := 1
	for n < len(lines) && strings.HasPrefix(lines[n], " ") {
		n++
	}
	return strings.Join(lines[:n], "")
}
