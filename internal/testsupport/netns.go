package testsupport

import (
	"os/exec"
	"strings"
	"testing"
)

// OtherHost is a network namespace of this machine standing for another
// host: a veth pair joins it to the machine, with HostIP on the machine's
// side and IP on its own, and its default route back through the
// machine. Traffic to it is routed, as to a host on the LAN, so that
// Docker's rules for an internal network (drop what leaves it) apply to
// it, which they do not to an address of the machine itself.
type OtherHost struct {
	Name, HostIP, IP string
}

// NewOtherHost makes the namespace name (at most 11 characters: the veth
// ends are name-h and name-n) on the /30 that starts at base (e.g.
// "10.254.253.0"), replacing one a crashed run left, and removes it at
// cleanup.
func NewOtherHost(t testing.TB, name, base string) *OtherHost {
	t.Helper()
	prefix := strings.TrimSuffix(base, ".0")
	h := &OtherHost{Name: name, HostIP: prefix + ".1", IP: prefix + ".2"}
	remove := func() {
		_ = exec.Command("ip", "netns", "del", name).Run()
		_ = exec.Command("ip", "link", "del", name+"-h").Run()
	}
	remove()
	for _, args := range [][]string{
		{"netns", "add", name},
		{"link", "add", name + "-h", "type", "veth", "peer", "name", name + "-n"},
		{"link", "set", name + "-n", "netns", name},
		{"addr", "add", h.HostIP + "/30", "dev", name + "-h"},
		{"link", "set", name + "-h", "up"},
		{"netns", "exec", name, "ip", "addr", "add", h.IP + "/30", "dev", name + "-n"},
		{"netns", "exec", name, "ip", "link", "set", name + "-n", "up"},
		{"netns", "exec", name, "ip", "link", "set", "lo", "up"},
		{"netns", "exec", name, "ip", "route", "add", "default", "via", h.HostIP},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			remove()
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(remove)
	return h
}

// Command is argv run inside the namespace.
func (h *OtherHost) Command(argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.Name}, argv...)...)
}
