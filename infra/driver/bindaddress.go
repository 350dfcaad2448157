package driver

import (
	"bufio"
	"bytes"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/nbms-deploy/nbms/stacks"
)

// checkBindAddress refuses a bindAddress that is not an address of this
// host, when the Docker engine runs on this host: Docker could not publish
// nginx's ports on it, and would only say so after the images are built.
func (r *run) checkBindAddress() error {
	value := r.raw["bindAddress"]
	if value == "" {
		value = stacks.Defaults().BindAddress
	}
	if elsewhere := dockerElsewhere(r.stackFile, os.Getenv); elsewhere != "" {
		r.printf("Note: not checking that nbms:bindAddress %s is an address of the Docker host: %s.\n", value, elsewhere)
		return nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		r.printf("Note: not checking nbms:bindAddress %s: cannot list this host's addresses: %v\n", value, err)
		return nil
	}
	return hostAddressProblem(value, addrs)
}

// hostAddressProblem reports a bindAddress that the local Docker engine
// cannot publish on: neither 0.0.0.0 / :: nor assigned to one of this
// host's interfaces (addrs, as net.InterfaceAddrs lists them; any
// 127.0.0.0/8 address counts when a loopback interface holds that
// network). A value that is not an IP address is left to the stack
// validation.
func hostAddressProblem(value string, addrs []net.Addr) error {
	a, err := netip.ParseAddr(value)
	if err != nil {
		return nil
	}
	a = a.Unmap().WithZone("")
	if a.IsUnspecified() {
		return nil
	}
	var have []string
	for _, addr := range addrs {
		prefix, ok := interfacePrefix(addr)
		if !ok {
			continue
		}
		if prefix.Addr() == a || (a.IsLoopback() && prefix.Addr().IsLoopback() && prefix.Contains(a)) {
			return nil
		}
		have = append(have, prefix.Addr().String())
	}
	return usageErr("nbms:bindAddress %s is not an address of this host, where the Docker engine publishes nginx's ports; this host's addresses: %s (set nbms:bindAddress in the stack file to the one that should serve traffic)",
		value, strings.Join(have, ", "))
}

// interfacePrefix is an interface address as a prefix (address and
// network length).
func interfacePrefix(addr net.Addr) (netip.Prefix, bool) {
	var ip net.IP
	bits := -1
	switch v := addr.(type) {
	case *net.IPNet:
		ip = v.IP
		bits, _ = v.Mask.Size()
	case *net.IPAddr:
		ip = v.IP
	default:
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	if bits < 0 || bits > a.BitLen() {
		bits = a.BitLen()
	}
	return netip.PrefixFrom(a, bits), true
}

// dockerElsewhere says why the docker provider may not talk to this host's
// engine, or returns "" when it does: docker:host in the stack file or
// DOCKER_HOST (the provider's order) naming a non-local endpoint, a
// DOCKER_CONTEXT other than the default, or a docker provider attached
// through PULUMI_DEBUG_PROVIDERS (an engine test's stand-in).
func dockerElsewhere(stackFile []byte, getenv func(string) string) string {
	host, from := stackDockerHost(stackFile), "docker:host"
	if host == "" {
		host, from = getenv("DOCKER_HOST"), "DOCKER_HOST"
	}
	if host != "" && !strings.HasPrefix(host, "unix://") && !strings.HasPrefix(host, "npipe://") {
		return from + "=" + host + " is a remote Docker engine"
	}
	if c := getenv("DOCKER_CONTEXT"); c != "" && c != "default" {
		return "DOCKER_CONTEXT=" + c + " may name a remote Docker engine"
	}
	for p := range strings.SplitSeq(getenv("PULUMI_DEBUG_PROVIDERS"), ",") {
		if name, _, _ := strings.Cut(p, ":"); name == "docker" {
			return "the docker provider is attached through PULUMI_DEBUG_PROVIDERS"
		}
	}
	return ""
}

// stackDockerHost is the docker:host setting of a stack file, or "".
func stackDockerHost(stackFile []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(stackFile))
	for sc.Scan() {
		value, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "docker:host:")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		if unquoted, err := strconv.Unquote(value); err == nil {
			value = unquoted
		}
		return strings.Trim(value, "'")
	}
	return ""
}
