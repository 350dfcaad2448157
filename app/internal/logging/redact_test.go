package logging_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/nbms-deploy/nbms/app/internal/logging"
)

func TestRedactorString(t *testing.T) {
	r := logging.NewRedactor("app-secret-key-123456", "s3cr3t-DB-pa55", "tiny", "")
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"postgres URL password", "dial postgres://nbms:hunter2@db:5432/nbms failed",
			"dial postgres://nbms:[REDACTED]@db:5432/nbms failed"},
		{"redis URL without user", "redis://:r3d1spw@cache:6379/0",
			"redis://:[REDACTED]@cache:6379/0"},
		{"unencoded @ and / in password", "postgres://u:p@ss/w0rd@db/x",
			"postgres://u:[REDACTED]@db/x"},
		{"URL without password untouched", "https://user@example.org/a?b=c",
			"https://user@example.org/a?b=c"},
		{"query string token", "GET /reset?token=abc123&x=1",
			"GET /reset?token=[REDACTED]&x=1"},
		{"query string, sensitive key later", "/cb?state=ok&access_token=zzz",
			"/cb?state=ok&access_token=[REDACTED]"},
		{"key=value", "login failed password=hunter2 user=bob",
			"login failed password=[REDACTED] user=bob"},
		{"key: value", "api_key: AKIA123 region: x",
			"api_key: [REDACTED] region: x"},
		{"JSON pair", `{"user":"bob","password":"hun\"ter2","n":1}`,
			`{"user":"bob","password":"[REDACTED]","n":1}`},
		{"JSON number value", `{"session_id": 12345}`,
			`{"session_id": [REDACTED]}`},
		{"escaped JSON", `body="{\"secret\":\"xyz\"}"`,
			`body="{\"secret\":\"[REDACTED]\"}"`},
		{"harmless pair cannot hide a sensitive one", "a=password=hunter2",
			"a=password=[REDACTED]"},
		{"value containing =", "password=ab=cd end",
			"password=[REDACTED] end"},
		{"authorization header keeps scheme", "Authorization: Bearer eyJhbGciOi.x.y",
			"Authorization: Bearer [REDACTED]"},
		{"basic auth", "authorization=Basic dXNlcjpwYXNz",
			"authorization=Basic [REDACTED]"},
		{"bare bearer token", "sent bearer abc.def-ghi to upstream",
			"sent bearer [REDACTED] to upstream"},
		{"cookie header, all pairs", "Cookie: sid=abc; theme=dark\nnext line",
			"Cookie: [REDACTED]\nnext line"},
		{"DATABASE_URL", "DATABASE_URL=postgres://u:pw@h/db",
			"DATABASE_URL=[REDACTED]"},
		{"known secret verbatim", "key is app-secret-key-123456.",
			"key is [REDACTED]."},
		{"known secret inside word", "xxs3cr3t-DB-pa55yy",
			"xx[REDACTED]yy"},
		{"short secret ignored", "tiny words stay", "tiny words stay"},
		{"plain text untouched", "GET /api/sites 200", "GET /api/sites 200"},
		{"IPv6 untouched", "2001:db8::1", "2001:db8::1"},
		{"stack line untouched", "/src/token_store.go:42 +0x1f", "/src/token_store.go:42 +0x1f"},
		{"taxon author untouched", "author: Linnaeus", "author: Linnaeus"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, r.String(tt.in))
		})
	}
}

func TestRedactorStringNilRedactorStillAppliesRules(t *testing.T) {
	var r *logging.Redactor
	assert.Equal(t, "password=[REDACTED]", r.String("password=x"))
}

func TestRedactorSecretCompletedByReplacement(t *testing.T) {
	// Replacing the first occurrence of "ED]abc" creates a second one.
	r := logging.NewRedactor("ED]abc")
	assert.NotContains(t, r.String("ED]abcabc"), "ED]abc")
}

func TestIsSensitiveKey(t *testing.T) {
	r := logging.NewRedactor()
	tests := []struct {
		key  string
		want bool
	}{
		{"password", true},
		{"DB_PASSWORD", true},
		{"passwd", true},
		{"SECRET_KEY", true},
		{"access_token", true},
		{"Authorization", true},
		{"Proxy-Authorization", true},
		{"Set-Cookie", true},
		{"sessionid", true},
		{"session_count", true}, // over-redaction by design, see sensitiveFragments
		{"api_key", true},
		{"X-Api-Key", true},
		{"apikey", true},
		{"api.key", true},
		{"SENTRY_DSN", true},
		{"private_key", true},
		{"aws_credentials", true},
		{"database_url", true},
		{"X-CSRFToken", true},
		{"pass", true},
		{"pwd", true},
		{"method", false},
		{"status_code", false},
		{"user_id", false},
		{"author", false},
		{"passage", false},
		{"ids_num", false},
		{"", false},
		{strings.Repeat("x", 100) + "token", true}, // longer than the stack buffer
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			assert.Equal(t, tt.want, r.IsSensitiveKey(tt.key))
		})
	}
}

func FuzzRedactorString(f *testing.F) {
	const secret = "s3cr3t-DB-pa55word"
	r := logging.NewRedactor(secret, "app-secret-key-0123456789")
	for _, seed := range []string{
		"", "plain", "password=" + secret, "postgres://u:" + secret + "@h/db",
		"x" + secret + secret[:5], `{"token":"` + secret + `"}`, "Bearer " + secret,
		"Cookie: a=b; c=d", `\"password\":\"`, "a=b=c:d", "bearer ", "://@:",
		"s3cr3t-DB-pa55wors3cr3t-DB-pa55word", "[REDACTED]" + secret,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := r.String(in) // must not panic
		if strings.Contains(out, secret) {
			t.Fatalf("secret survived: %q -> %q", in, out)
		}
		if !strings.Contains(in, "=") && !strings.Contains(in, ":") &&
			!strings.Contains(strings.ToLower(in), "bearer ") && !strings.Contains(in, secret) &&
			!strings.Contains(in, "app-secret-key-0123456789") && out != in {
			t.Fatalf("text with nothing to redact changed: %q -> %q", in, out)
		}
	})
}
