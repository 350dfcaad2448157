package driver

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// On this host: loopback and the unspecified addresses pass, an address
// from TEST-NET-1 (192.0.2.0/24, never assigned) is refused with exit 2,
// naming the key, the value and the host's addresses.
func TestHostAddressProblemOnThisHost(t *testing.T) {
	addrs, err := net.InterfaceAddrs()
	require.NoError(t, err)
	for _, ok := range []string{"127.0.0.1", "0.0.0.0", "::"} {
		assert.NoError(t, hostAddressProblem(ok, addrs), ok)
	}
	err = hostAddressProblem("192.0.2.10", addrs)
	require.Error(t, err)
	assert.Equal(t, ExitUsage, ExitCode(err))
	assert.ErrorContains(t, err, "nbms:bindAddress 192.0.2.10 is not an address of this host")
	assert.ErrorContains(t, err, "this host's addresses: ")
	assert.ErrorContains(t, err, "127.0.0.1")
}

func TestHostAddressProblem(t *testing.T) {
	cidr := func(s string) net.Addr {
		ip, n, err := net.ParseCIDR(s)
		require.NoError(t, err)
		n.IP = ip
		return n
	}
	host := []net.Addr{cidr("127.0.0.1/8"), cidr("::1/128"), cidr("10.1.2.3/24"), cidr("2001:db8::5/64"), &net.IPAddr{IP: net.ParseIP("198.51.100.7")}}
	for _, tc := range []struct {
		value string
		ok    bool
	}{
		{"10.1.2.3", true},
		{"2001:db8::5", true},
		{"::ffff:10.1.2.3", true},
		{"198.51.100.7", true},
		{"127.0.0.2", true}, // in the loopback interface's 127.0.0.0/8
		{"::", true},
		{"0.0.0.0", true},
		{"not-an-ip", true}, // left to the stack validation
		{"10.1.2.4", false}, // same network, not this host's address
		{"2001:db8::6", false},
		{"192.0.2.10", false},
	} {
		err := hostAddressProblem(tc.value, host)
		if tc.ok {
			assert.NoError(t, err, tc.value)
			continue
		}
		assert.Equal(t, ExitUsage, ExitCode(err), tc.value)
		assert.ErrorContains(t, err, "nbms:bindAddress "+tc.value+" ")
		assert.ErrorContains(t, err, "127.0.0.1, ::1, 10.1.2.3, 2001:db8::5, 198.51.100.7")
	}
}

// The check runs only when the docker provider talks to this host's engine.
func TestDockerElsewhere(t *testing.T) {
	stackFile := func(host string) []byte {
		return []byte("config:\n  nbms:profile: prod\n  docker:host: " + host + "\n  nbms:bindAddress: 10.0.0.1\n")
	}
	for _, tc := range []struct {
		name      string
		stackFile []byte
		env       map[string]string
		want      string // a part of the reason; "" when local
	}{
		{"nothing set", nil, nil, ""},
		{"a unix socket", nil, map[string]string{"DOCKER_HOST": "unix:///var/run/docker.sock"}, ""},
		{"a TCP engine", nil, map[string]string{"DOCKER_HOST": "tcp://10.0.0.9:2376"}, "DOCKER_HOST=tcp://10.0.0.9:2376 is a remote Docker engine"},
		{"an SSH engine", nil, map[string]string{"DOCKER_HOST": "ssh://deploy@host"}, "remote"},
		{"the stack's docker:host wins", stackFile(`"ssh://deploy@host"`), map[string]string{"DOCKER_HOST": "unix:///var/run/docker.sock"}, "docker:host=ssh://deploy@host"},
		{"the stack's local docker:host wins", stackFile("unix:///run/docker.sock"), map[string]string{"DOCKER_HOST": "tcp://10.0.0.9:2376"}, ""},
		{"the default context", nil, map[string]string{"DOCKER_CONTEXT": "default"}, ""},
		{"another context", nil, map[string]string{"DOCKER_CONTEXT": "prod"}, "DOCKER_CONTEXT=prod"},
		{"an attached docker provider", nil, map[string]string{"PULUMI_DEBUG_PROVIDERS": "random:4001,docker:4000"}, "PULUMI_DEBUG_PROVIDERS"},
		{"only another attached provider", nil, map[string]string{"PULUMI_DEBUG_PROVIDERS": "random:4001"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := dockerElsewhere(tc.stackFile, func(k string) string { return tc.env[k] })
			if tc.want == "" {
				assert.Empty(t, got)
			} else {
				assert.Contains(t, got, tc.want)
			}
		})
	}
}
