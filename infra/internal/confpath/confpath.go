// Package confpath checks the file system paths that infra's renderers
// (nginx, pgBackRest) write unquoted into configuration files, so both
// apply the same rule.
package confpath

import (
	"path/filepath"
	"regexp"
	"strings"
)

// charsRE is the character set allowed in a path. Values are written
// unquoted, so anything nginx's parser or an INI value treats specially
// (space, quotes, ; { } $ #) must never get through.
var charsRE = regexp.MustCompile(`^/[A-Za-z0-9._/@+~-]*$`)

// Valid reports whether path is a clean absolute path other than "/" made
// of letters, digits and ._/@+~- only.
func Valid(path string) bool {
	return path != "/" && charsRE.MatchString(path) && filepath.Clean(path) == path
}

// Nested reports whether a and b are equal or one is inside the other.
func Nested(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}
