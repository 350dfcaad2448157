package logging_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/logging"
)

// secret is known to the Redactor; adHoc is not, and is caught only by
// the key and pattern rules.
const (
	secret = "Kn0wn-S3cret-Value"
	adHoc  = "adhoc-hunter2-pw"
)

type secretValuer struct{}

func (secretValuer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user", "bob"), slog.String("password", adHoc))
}

type textValuer struct{}

func (textValuer) LogValue() slog.Value { return slog.StringValue("token=" + adHoc) }

type dbConfig struct {
	Host     string
	Password string
}

// newTestLogger returns a logger writing through the redacting handler
// into a buffer.
func newTestLogger() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	h := logging.NewHandler(&buf, slog.LevelDebug, logging.NewRedactor(secret))
	return slog.New(h), &buf
}

// decodeLine parses the single JSON line in buf.
func decodeLine(t *testing.T, buf *bytes.Buffer) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 1, "want exactly one log line, got %q", buf.String())
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &m), lines[0])
	return m
}

// lookup walks a dotted path through nested JSON objects.
func lookup(m map[string]any, path string) any {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = obj[k]
	}
	return v
}

func TestHandlerRedacts(t *testing.T) {
	tests := []struct {
		name string
		log  func(l *slog.Logger)
		// want maps dotted JSON paths to the value expected there.
		want map[string]any
	}{
		{
			name: "message",
			log:  func(l *slog.Logger) { l.Info("connecting with password=" + adHoc + " and " + secret) },
			want: map[string]any{"msg": "connecting with password=[REDACTED] and [REDACTED]"},
		},
		{
			name: "sensitive key, non-string value",
			log:  func(l *slog.Logger) { l.Info("m", "session_id", 123456, "count", 3) },
			want: map[string]any{"session_id": "[REDACTED]", "count": float64(3)},
		},
		{
			name: "sensitive key, string value",
			log:  func(l *slog.Logger) { l.Info("m", slog.String("Authorization", "Bearer "+adHoc)) },
			want: map[string]any{"Authorization": "[REDACTED]"},
		},
		{
			name: "string value scrubbed by pattern",
			log:  func(l *slog.Logger) { l.Info("m", "dsn_note", "x", "url", "postgres://nbms:"+adHoc+"@db/nbms") },
			want: map[string]any{"url": "postgres://nbms:[REDACTED]@db/nbms"},
		},
		{
			name: "known secret under a harmless key",
			log:  func(l *slog.Logger) { l.Info("m", "note", "value is "+secret) },
			want: map[string]any{"note": "value is [REDACTED]"},
		},
		{
			name: "nested groups",
			log: func(l *slog.Logger) {
				l.Info("m", slog.Group("db", slog.String("host", "db1"),
					slog.Group("conn", slog.String("password", adHoc), slog.String("note", "token: "+adHoc))))
			},
			want: map[string]any{"db.host": "db1", "db.conn.password": "[REDACTED]", "db.conn.note": "token: [REDACTED]"},
		},
		{
			name: "group with a sensitive name",
			log:  func(l *slog.Logger) { l.Info("m", slog.Group("credentials", slog.String("user", adHoc))) },
			want: map[string]any{"credentials": "[REDACTED]"},
		},
		{
			name: "WithAttrs",
			log:  func(l *slog.Logger) { l.With("token", adHoc, "dsn_url", "x").With("ok", "yes").Info("m") },
			want: map[string]any{"token": "[REDACTED]", "ok": "yes"},
		},
		{
			name: "WithGroup then WithAttrs and record attrs",
			log: func(l *slog.Logger) {
				l.WithGroup("req").With("authorization", adHoc).Info("m", "cookie", adHoc, "path", "/x")
			},
			want: map[string]any{"req.authorization": "[REDACTED]", "req.cookie": "[REDACTED]", "req.path": "/x"},
		},
		{
			name: "WithGroup with a sensitive name",
			log:  func(l *slog.Logger) { l.WithGroup("secrets").WithGroup("inner").Info("m", "user", adHoc) },
			want: map[string]any{"secrets.inner.user": "[REDACTED]"},
		},
		{
			name: "error value",
			log: func(l *slog.Logger) {
				l.Error("m", "err", fmt.Errorf("wrap: %w", errors.New("dial redis://:"+adHoc+"@cache:6379")))
			},
			want: map[string]any{"err": "wrap: dial redis://:[REDACTED]@cache:6379"},
		},
		{
			name: "fmt.Stringer",
			log: func(l *slog.Logger) {
				l.Info("m", "target", &url.URL{Scheme: "https", User: url.UserPassword("u", adHoc), Host: "h"})
			},
			want: map[string]any{"target": "https://u:[REDACTED]@h"},
		},
		{
			name: "LogValuer producing a group",
			log:  func(l *slog.Logger) { l.Info("m", "login", secretValuer{}) },
			want: map[string]any{"login.user": "bob", "login.password": "[REDACTED]"},
		},
		{
			name: "LogValuer producing text",
			log:  func(l *slog.Logger) { l.Info("m", "v", textValuer{}) },
			want: map[string]any{"v": "token=[REDACTED]"},
		},
		{
			name: "struct with a Password field",
			log:  func(l *slog.Logger) { l.Info("m", "cfg", dbConfig{Host: "db1", Password: adHoc}) },
			want: map[string]any{"cfg": `{"Host":"db1","Password":"[REDACTED]"}`},
		},
		{
			name: "map with a sensitive key",
			log:  func(l *slog.Logger) { l.Info("m", "headers", map[string]string{"X-Api-Key": adHoc}) },
			want: map[string]any{"headers": `{"X-Api-Key":"[REDACTED]"}`},
		},
		{
			name: "harmless struct keeps its JSON shape",
			log:  func(l *slog.Logger) { l.Info("m", "cfg", dbConfig{Host: "db1"}) },
			want: map[string]any{"cfg.Host": "db1", "cfg.Password": ""},
		},
		{
			name: "harmless map keeps its JSON shape",
			log:  func(l *slog.Logger) { l.Info("m", "counts", map[string]int{"sites": 3}) },
			want: map[string]any{"counts.sites": float64(3)},
		},
		{
			name: "other kinds untouched",
			log:  func(l *slog.Logger) { l.Info("m", "d", 2*time.Second, "ok", true, "f", 1.5) },
			want: map[string]any{"d": float64(2 * time.Second), "ok": true, "f": 1.5},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, buf := newTestLogger()
			tt.log(l)
			raw := buf.String()
			assert.NotContains(t, raw, adHoc)
			assert.NotContains(t, raw, secret)
			line := decodeLine(t, buf)
			for path, want := range tt.want {
				assert.Equal(t, want, lookup(line, path), "at %s in %s", path, raw)
			}
		})
	}
}

func TestHandlerWritesUTCTimeAndRespectsLevel(t *testing.T) {
	// A zone other than UTC, so the test fails if the conversion is missing.
	saved := time.Local
	time.Local = time.FixedZone("UTC+3", 3*60*60)
	t.Cleanup(func() { time.Local = saved })

	var buf bytes.Buffer
	l := slog.New(logging.NewHandler(&buf, slog.LevelInfo, nil))
	l.Debug("hidden")
	assert.Empty(t, buf.String())

	l.Info("shown")
	line := decodeLine(t, &buf)
	ts, ok := line["time"].(string)
	require.True(t, ok)
	assert.True(t, strings.HasSuffix(ts, "Z"), "time %q is not UTC", ts)
	assert.Equal(t, "INFO", line["level"])
}
