package logging

import (
	"regexp"
	"strings"
	"testing"

	"github.com/nbms-deploy/nbms/app/config"
)

// The hand-written check and the declared pattern, which the edge renders
// into nginx, accept exactly the same IDs.
func TestValidRequestIDIsThePattern(t *testing.T) {
	re := regexp.MustCompile(config.RequestIDPattern)
	for _, id := range []string{
		"", "a", "abc-DEF_012.x", strings.Repeat("a", 64), strings.Repeat("a", 65), "a b", "a\nb", "a;b",
		"é", "../x", "id\x00", "0123456789abcdef0123456789abcdef",
	} {
		if got, want := validRequestID(id), re.MatchString(id); got != want {
			t.Errorf("validRequestID(%q) = %v, the pattern says %v", id, got, want)
		}
	}
}

func FuzzValidRequestIDIsThePattern(f *testing.F) {
	re := regexp.MustCompile(config.RequestIDPattern)
	for _, seed := range []string{"", "a", "trace-1.2_x", strings.Repeat("z", 64), "x y", "\xff"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := validRequestID(id), re.MatchString(id); got != want {
			t.Fatalf("validRequestID(%q) = %v, the pattern says %v", id, got, want)
		}
	})
}
