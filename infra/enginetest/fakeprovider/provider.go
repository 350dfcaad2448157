// Package fakeprovider holds TEST DOUBLES for the docker and random resource
// providers at the Pulumi plugin boundary. They create nothing: no Docker
// daemon is contacted and no randomness is used. They answer the engine's
// gRPC calls the way the real providers would for the resources the NBMS
// program registers — inputs echoed as outputs, deterministic ids, the few
// computed outputs the program reads — and record every call, so engine
// tests can assert what the engine asked a provider to do and in which order.
//
// The engine attaches to them instead of launching plugins when the test
// process names them in PULUMI_DEBUG_PROVIDERS=docker:PORT,random:PORT
// (see Env).
package fakeprovider

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/big"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Type tokens the doubles give special answers for.
const (
	ContainerType   = "docker:index/container:Container"
	ImageType       = "docker:index/image:Image"
	RemoteImageType = "docker:index/remoteImage:RemoteImage"
	PasswordType    = "random:index/randomPassword:RandomPassword"
)

// containerInPlace are the docker Container inputs a change of which the
// real provider (bridged kreuzwerker v3.8.0) applies without replacing the
// container: the ones ContainerUpdate applies, and the ones it only records.
// Every other Container input is ForceNew, i.e. a replacement.
var containerInPlace = []string{
	"restart", "maxRetryCount", "cpuShares", "memory", "memoryReservation", "cpuSet", "memorySwap",
	"healthcheck", "wait", "waitTimeout", "mustRun", "tmpfs", "cpuPeriod", "cpuQuota", "init", "destroyGraceSeconds",
}

// Call is one resource operation the engine sent.
type Call struct {
	Method  string // Check, Diff, Create, Update, Delete
	Type    string // type token
	Name    string // logical name (last URN segment)
	URN     string
	Preview bool // Create/Update during a preview: nothing would be done
	// Diffs and Replaces are what Diff answered (changed keys, and those
	// that force a replacement).
	Diffs, Replaces []string
}

// Provider is one fake provider plugin (docker or random).
type Provider struct {
	pulumirpc.UnimplementedResourceProviderServer

	pkg, version string
	mu           sync.Mutex
	calls        []Call
	generated    []string
	// addresses are container IPv4 addresses a test set, by container
	// name (the "name" input); other containers get a made-up one.
	addresses map[string]string
	// exitCodes are one-shot exit codes a test set, by container name
	// prefix; other one-shots exit 0.
	exitCodes map[string]int
}

// New returns a fake provider for the package pkg ("docker" or "random")
// reporting version.
func New(pkg, version string) *Provider { return &Provider{pkg: pkg, version: version} }

// Package is the provider's package name, as PULUMI_DEBUG_PROVIDERS wants it.
func (p *Provider) Package() string { return p.pkg }

// Calls returns a copy of the call log, in the order the engine called.
func (p *Provider) Calls() []Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

// Generated returns every password result handed out by a (non-preview)
// Create, for tests that search the state for leaked secrets.
func (p *Provider) Generated() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.generated)
}

// SetAddress makes the container named name report addr as its address
// on every network it joins, e.g. where a test serves its stand-in. A
// name also stands for every container named name-<suffix> (each release
// of the app) that has no address of its own.
func (p *Provider) SetAddress(name, addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.addresses == nil {
		p.addresses = map[string]string{}
	}
	p.addresses[name] = addr
}

func (p *Provider) address(name string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if addr, ok := p.addresses[name]; ok {
		return addr
	}
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		return p.addresses[name[:i]]
	}
	return ""
}

// SetExitCode makes every one-shot (attached) container created from now
// on whose name starts with prefix exit with code, e.g. the migrate run of
// a release that fails; code 0 undoes it.
func (p *Provider) SetExitCode(prefix string, code int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exitCodes == nil {
		p.exitCodes = map[string]int{}
	}
	p.exitCodes[prefix] = code
}

func (p *Provider) exitCode(name string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for prefix, code := range p.exitCodes {
		if strings.HasPrefix(name, prefix) {
			return code
		}
	}
	return 0
}

// Reset empties the call log.
func (p *Provider) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = nil
}

func (p *Provider) record(c Call) {
	if i := strings.LastIndex(c.URN, "::"); i >= 0 {
		c.Name = c.URN[i+2:]
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, c)
}

// Serve serves the provider on 127.0.0.1 (a free port) until stop is called.
func (p *Provider) Serve() (port int, stop func(), err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, nil, err
	}
	srv := grpc.NewServer()
	pulumirpc.RegisterResourceProviderServer(srv, p)
	go func() { _ = srv.Serve(lis) }()
	return lis.Addr().(*net.TCPAddr).Port, srv.Stop, nil
}

// Env is the PULUMI_DEBUG_PROVIDERS value naming the served providers.
func Env(ports map[*Provider]int) string {
	var parts []string
	for p, port := range ports {
		parts = append(parts, fmt.Sprintf("%s:%d", p.pkg, port))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

var marshal = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, KeepResources: true, KeepOutputValues: true}

func unmarshal(s *structpb.Struct) (resource.PropertyMap, error) {
	m, err := plugin.UnmarshalProperties(s, marshal)
	if m == nil {
		m = resource.PropertyMap{}
	}
	return m, err
}

// Attach is what the engine calls first on a provider it attached to
// instead of launching; without it the attach fails.
func (p *Provider) Attach(context.Context, *pulumirpc.PluginAttach) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// GetPluginInfo reports the version.
func (p *Provider) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: p.version}, nil
}

// CheckConfig accepts any provider configuration.
func (p *Provider) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

// DiffConfig never asks for a provider replacement.
func (p *Provider) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
}

// Configure accepts secrets (so they stay secret in state) and previews.
func (p *Provider) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: true, AcceptResources: true}, nil
}

// Check echoes the inputs: the doubles fill in no provider defaults.
func (p *Provider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	p.record(Call{Method: "Check", Type: req.GetType(), URN: req.GetUrn()})
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

// Diff compares the new inputs key by key with the old state, and says
// which changed keys force a replacement, as the real (bridged Terraform)
// provider does: the old value of a key is what Create or Read stored in
// the state, which for some keys is not what the program wrote but how
// Docker reported it back (see readBack). Keys only in the old inputs
// count too (a removed setting).
func (p *Provider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	oldsPB := req.GetOldInputs()
	if oldsPB == nil {
		oldsPB = req.GetOlds()
	}
	olds, err := unmarshal(oldsPB)
	if err != nil {
		return nil, err
	}
	state, err := unmarshal(req.GetOlds())
	if err != nil {
		return nil, err
	}
	for k, v := range state {
		if _, ok := olds[k]; ok {
			olds[k] = v
		}
	}
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	var diffs, replaces []string
	keys := map[resource.PropertyKey]bool{}
	for k := range olds {
		keys[k] = true
	}
	for k := range news {
		keys[k] = true
	}
	for k := range keys {
		o, n := olds[k], news[k]
		if !n.ContainsUnknowns() && o.DeepEquals(n) {
			continue
		}
		diffs = append(diffs, string(k))
		if forcesReplacement(req.GetType(), string(k)) {
			replaces = append(replaces, string(k))
		}
	}
	slices.Sort(diffs)
	slices.Sort(replaces)
	p.record(Call{Method: "Diff", Type: req.GetType(), URN: req.GetUrn(), Diffs: diffs, Replaces: replaces})
	changes := pulumirpc.DiffResponse_DIFF_NONE
	if len(diffs) > 0 {
		changes = pulumirpc.DiffResponse_DIFF_SOME
	}
	return &pulumirpc.DiffResponse{Changes: changes, Diffs: diffs, Replaces: replaces}, nil
}

// forcesReplacement reports whether changing key of a resource of type typ forces a
// replacement at the real provider.
func forcesReplacement(typ, key string) bool {
	switch typ {
	case ImageType:
		return false // rebuilt in place, never replaced
	case ContainerType:
		return !slices.Contains(containerInPlace, key)
	}
	// Network, Volume, RemoteImage (every input ForceNew) and the random
	// resources (any input change generates a new value).
	return true
}

// Create returns the inputs as outputs plus the computed outputs the
// program reads; in a preview those are unknown, as with the real providers.
func (p *Provider) Create(_ context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	p.record(Call{Method: "Create", Type: req.GetType(), URN: req.GetUrn(), Preview: req.GetPreview()})
	ins, err := unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	outs := p.computed(req.GetType(), req.GetUrn(), ins, req.GetPreview())
	id := ""
	if !req.GetPreview() {
		id = "fake-" + shortHash(req.GetUrn())
		if req.GetType() == PasswordType {
			p.mu.Lock()
			p.generated = append(p.generated, outs["result"].SecretValue().Element.StringValue())
			p.mu.Unlock()
		}
	}
	props, err := plugin.MarshalProperties(outs, marshal)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: props}, nil
}

// Update returns the new inputs as outputs, recomputed as by Create.
func (p *Provider) Update(_ context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	p.record(Call{Method: "Update", Type: req.GetType(), URN: req.GetUrn(), Preview: req.GetPreview()})
	ins, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	props, err := plugin.MarshalProperties(p.computed(req.GetType(), req.GetUrn(), ins, req.GetPreview()), marshal)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: props}, nil
}

// Delete only records the call.
func (p *Provider) Delete(_ context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	p.record(Call{Method: "Delete", Type: req.GetType(), URN: req.GetUrn()})
	return &emptypb.Empty{}, nil
}

// computed adds to the inputs what the real provider computes and the
// program reads.
func (p *Provider) computed(typ, urn string, ins resource.PropertyMap, preview bool) resource.PropertyMap {
	outs := ins.Copy()
	set := func(key string, v resource.PropertyValue) {
		if preview {
			v = resource.MakeComputed(resource.NewStringProperty(""))
		}
		outs[resource.PropertyKey(key)] = v
	}
	switch typ {
	case PasswordType:
		n := int(ins["length"].NumberValue())
		// Secret, as the real random provider marks it.
		set("result", resource.MakeSecret(resource.NewStringProperty(Password(urn, n))))
	case ImageType:
		set("repoDigest", resource.NewStringProperty("sha256:"+fullHash("image", urn)))
	case RemoteImageType:
		set("imageId", resource.NewStringProperty("sha256:"+fullHash("remote", urn)))
		set("repoDigest", resource.NewStringProperty(ins["name"].StringValue()))
	case ContainerType:
		// A one-shot (attached) container exited, successfully unless a
		// test said otherwise.
		if a := ins["attach"]; a.IsBool() && a.BoolValue() {
			code := 0
			if n := ins["name"]; n.IsString() {
				code = p.exitCode(n.StringValue())
			}
			set("exitCode", resource.NewNumberProperty(float64(code)))
		}
		readBack(outs)
		// An address on each network it joined, as the provider reports
		// them (networkDatas).
		addr := ""
		if n := ins["name"]; n.IsString() {
			addr = p.address(n.StringValue())
		}
		if addr == "" {
			h := fullHash("address", urn)
			addr = fmt.Sprintf("10.%d.%d.%d", h[0], h[1], h[2])
		}
		var datas []resource.PropertyValue
		if nets := ins["networksAdvanced"]; nets.IsArray() {
			for _, n := range nets.ArrayValue() {
				if n.IsObject() && n.ObjectValue()["name"].IsString() {
					datas = append(datas, resource.NewObjectProperty(resource.PropertyMap{
						"networkName": n.ObjectValue()["name"], "ipAddress": resource.NewStringProperty(addr),
					}))
				}
			}
		}
		set("networkDatas", resource.NewArrayProperty(datas))
	}
	return outs
}

// readBack rewrites a container's settings the way the real provider
// stores them after reading the container back from Docker: durations in
// Go's format ("60s" becomes "1m0s"), a zero health-check duration as the
// image's value (Docker fills it in; 30s stands in for it here), and the
// CPU limit as NanoCPUs printed back ("1" becomes "1.0"). A program that
// writes them otherwise sees a difference on every update.
func readBack(outs resource.PropertyMap) {
	if c := outs["cpus"]; c.IsString() {
		if v, err := ReadBackCPUs(c.StringValue()); err == nil {
			outs["cpus"] = resource.NewStringProperty(v)
		}
	}
	if hc := outs["healthcheck"]; hc.IsObject() {
		check := hc.ObjectValue().Copy()
		for _, key := range []resource.PropertyKey{"interval", "timeout", "startPeriod"} {
			if v := check[key]; v.IsString() {
				if d, err := ReadBackDuration(v.StringValue()); err == nil {
					check[key] = resource.NewStringProperty(d)
				}
			}
		}
		outs["healthcheck"] = resource.NewObjectProperty(check)
	}
}

// ReadBackCPUs is a cpus value as the real provider stores it after
// reading the container's NanoCPUs (kreuzwerker's nanoInt64ToDecimalString):
// "1" becomes "1.0", "0.50" becomes "0.5".
func ReadBackCPUs(cpus string) (string, error) {
	f, err := strconv.ParseFloat(cpus, 64)
	if err != nil {
		return "", err
	}
	nano := new(big.Rat).SetFrac64(int64(math.Round(f*1e9)), 1e9)
	v := strings.TrimRight(nano.FloatString(9), "0")
	if strings.HasSuffix(v, ".") {
		return nano.FloatString(1), nil
	}
	return v, nil
}

// ReadBackDuration is a health-check duration as the real provider stores
// it after reading the container: Go's format ("60s" becomes "1m0s"), and a
// zero replaced by what Docker filled in from the image (30s stands in).
func ReadBackDuration(d string) (string, error) {
	v, err := time.ParseDuration(d)
	if err != nil {
		return "", err
	}
	if v == 0 {
		v = 30 * time.Second
	}
	return v.String(), nil
}

// Password is the deterministic "generated" value of a RandomPassword of
// the given URN and length: letters and digits, every class present.
func Password(urn string, length int) string {
	classes := []string{"ABCDEFGHJKLMNPQRSTUVWXYZ", "abcdefghijkmnopqrstuvwxyz", "23456789"}
	seed := sha256.Sum256([]byte(urn))
	out := make([]byte, length)
	for i := range out {
		if i%len(seed) == 0 && i > 0 {
			seed = sha256.Sum256(seed[:])
		}
		class := classes[i%len(classes)]
		out[i] = class[int(seed[i%len(seed)])%len(class)]
	}
	return string(out)
}

func fullHash(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:])
}

func shortHash(s string) string { return fullHash(s)[:12] }
