package standby

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A server that accepts the connection and never answers is a failed
// check within --timeout, not a hung health check.
func TestStatusTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	o := opts()
	o.Primary = "host=127.0.0.1 port=" + strconv.Itoa(port) + " user=postgres dbname=postgres sslmode=disable"
	o.Timeout = 500 * time.Millisecond
	start := time.Now()
	r, err := Status(context.Background(), o)
	require.NoError(t, err)
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.False(t, r.OK)
	require.Len(t, r.Checks, 1)
	assert.Equal(t, "primary", r.Checks[0].Name)
	assert.Contains(t, r.Checks[0].Detail, "no answer in time (--timeout)")
}
