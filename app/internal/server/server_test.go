package server_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/health"
	"github.com/nbms-deploy/nbms/app/internal/server"
)

// Every profile's defaults must make a server: a dev machine with nothing
// but NBMS_ENV set starts (plain HTTP, no HSTS).
func TestEveryProfilesDefaultsMakeAServer(t *testing.T) {
	for _, p := range []config.Profile{config.Dev, config.Test} {
		t.Run(string(p), func(t *testing.T) {
			s, err := config.Parse(map[string]string{"NBMS_ENV": string(p)})
			require.NoError(t, err)
			h, err := server.New(server.Deps{Settings: s, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Health: health.New(health.Options{})})
			require.NoError(t, err)
			r := httptest.NewRequest("GET", "http://localhost:8000/", nil)
			r.RemoteAddr = "127.0.0.1:50000"
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			assert.Equal(t, http.StatusOK, w.Code)
			assert.Empty(t, w.Header().Get("Strict-Transport-Security"), "no HSTS over dev's plain HTTP")
			assert.NotEmpty(t, w.Header().Get("Content-Security-Policy"))
		})
	}
}
