package backup

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// alerter POSTs a failure (a failed backup's Run, a failed drill's
// DrillResult) as JSON to an alert URL.
type alerter struct {
	url    string // "": no alerts
	client *http.Client
	logger *slog.Logger
}

func newAlerter(alertURL string, logger *slog.Logger) alerter {
	return alerter{url: alertURL, client: &http.Client{Timeout: 10 * time.Second}, logger: logger}
}

// checkAlertURL reports why u cannot be an alert URL.
func checkAlertURL(u string) error {
	parsed, err := url.Parse(u)
	if err != nil || (parsed.Scheme != "https" && parsed.Scheme != "http") || parsed.Host == "" {
		return fmt.Errorf("backup: alert URL %q must be an absolute http(s) URL", u)
	}
	return nil
}

// post sends failure. Its own failure is logged, never fatal: the failure
// it reports is already logged.
func (a alerter) post(failure any) {
	if a.url == "" {
		return
	}
	body, err := json.Marshal(failure)
	if err == nil {
		var resp *http.Response
		resp, err = a.client.Post(a.url, "application/json", bytes.NewReader(body))
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode >= 300 {
				err = fmt.Errorf("status %s", resp.Status)
			}
		}
	}
	if err != nil {
		// The URL often carries a token (chat webhooks): log the cause only.
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err
		}
		a.logger.Error("backup alert not delivered", "error", err.Error())
	}
}
