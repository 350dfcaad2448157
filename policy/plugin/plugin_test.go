package plugin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	rplugin "github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/sig"
	"github.com/pulumi/pulumi/sdk/v3/go/property"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nbms-deploy/nbms/policy/internal/fixture"
	"github.com/nbms-deploy/nbms/policy/plugin"
	"github.com/nbms-deploy/nbms/policy/rules"
)

// startPack builds the real binary and starts it the way the engine does:
// engine address and directory as arguments, port read from stdout.
func startPack(t *testing.T) pulumirpc.AnalyzerClient {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nbms-policy")
	build := exec.Command("go", "build", "-o", bin, "github.com/nbms-deploy/nbms/policy/cmd/nbms-policy")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	cmd := exec.Command(bin, "127.0.0.1:1", ".")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	portc := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		portc <- strings.TrimSpace(line)
	}()
	var port string
	select {
	case port = <-portc:
	case <-time.After(30 * time.Second):
		t.Fatal("plugin did not print its port")
	}
	require.Regexp(t, `^[0-9]+$`, port)
	conn, err := grpc.NewClient("127.0.0.1:"+port, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return pulumirpc.NewAnalyzerClient(conn)
}

// toProperty converts fixture data (serialized secrets and unknown
// sentinels) into the property values the engine sends.
func toProperty(v any) property.Value {
	switch t := v.(type) {
	case string:
		if sig.IsUnknown(t) {
			return property.New(property.Computed)
		}
		return property.New(t)
	case bool:
		return property.New(t)
	case float64:
		return property.New(t)
	case []any:
		items := make([]property.Value, len(t))
		for i, item := range t {
			items[i] = toProperty(item)
		}
		return property.New(items)
	case map[string]any:
		if t[sig.Key] == sig.Secret {
			var inner any
			_ = json.Unmarshal([]byte(t["plaintext"].(string)), &inner)
			return toProperty(inner).WithSecret(true)
		}
		fields := map[string]property.Value{}
		for k, item := range t {
			fields[k] = toProperty(item)
		}
		return property.New(fields)
	}
	return property.Value{}
}

func marshal(t *testing.T, inputs map[string]any) *structpb.Struct {
	t.Helper()
	pm := resource.ToResourcePropertyMap(toProperty(inputs).AsMap())
	s, err := rplugin.MarshalProperties(pm, rplugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true})
	require.NoError(t, err)
	return s
}

func analyzeRequest(t *testing.T, r fixture.Res) *pulumirpc.AnalyzeRequest {
	return &pulumirpc.AnalyzeRequest{Urn: r.URN, Type: r.Type, Name: r.URN[strings.LastIndex(r.URN, "::")+2:], Properties: marshal(t, r.Inputs)}
}

func byPolicy(ds []*pulumirpc.AnalyzeDiagnostic) map[string][]*pulumirpc.AnalyzeDiagnostic {
	m := map[string][]*pulumirpc.AnalyzeDiagnostic{}
	for _, d := range ds {
		m[d.PolicyName] = append(m[d.PolicyName], d)
	}
	return m
}

func assertNoSecrets(t *testing.T, ds []*pulumirpc.AnalyzeDiagnostic) {
	t.Helper()
	for _, d := range ds {
		for _, s := range fixture.SecretStrings {
			assert.NotContains(t, d.Message, s)
		}
	}
}

func TestPluginOverGRPC(t *testing.T) {
	client := startPack(t)
	ctx := context.Background()
	dir := t.TempDir()

	_, err := client.Handshake(ctx, &pulumirpc.AnalyzerHandshakeRequest{EngineAddress: "127.0.0.1:1", RootDirectory: &dir, ProgramDirectory: &dir})
	require.NoError(t, err)
	_, err = client.ConfigureStack(ctx, &pulumirpc.AnalyzerStackConfigureRequest{Stack: "prod", Project: "nbms", Organization: "organization", DryRun: true})
	require.NoError(t, err)

	info, err := client.GetAnalyzerInfo(ctx, &emptypb.Empty{})
	require.NoError(t, err)
	assert.Equal(t, plugin.PackName, info.Name)
	assert.Equal(t, plugin.Version, info.Version)
	assert.True(t, info.SupportsConfig)
	got := map[string]*pulumirpc.PolicyInfo{}
	for _, p := range info.Policies {
		got[p.Name] = p
	}
	for _, r := range rules.All() {
		p, ok := got[r.Name]
		require.True(t, ok, "policy %s not served", r.Name)
		assert.Equal(t, r.Description(), p.Description)
		assert.True(t, strings.HasPrefix(p.Description, "Checks that"), r.Name)
		assert.Equal(t, pulumirpc.EnforcementLevel_MANDATORY, p.EnforcementLevel, r.Name)
	}
	require.Contains(t, got, plugin.CannotEvaluatePolicy)
	assert.Equal(t, pulumirpc.EnforcementLevel_ADVISORY, got[plugin.CannotEvaluatePolicy].EnforcementLevel)
	assert.Equal(t, pulumirpc.EnforcementLevel_ADVISORY, got[plugin.CannotEvaluateStackPolicy].EnforcementLevel)
	memSchema := got["docker-container-configure-memory-limit"].ConfigSchema
	require.NotNil(t, memSchema)
	assert.Equal(t, "integer", memSchema.Properties.Fields["maxMemoryMb"].GetStructValue().Fields["type"].GetStringValue())
	hsts := got["nbms-app-configure-env-contract"].ConfigSchema.Properties.Fields["minHstsSeconds"].GetStructValue()
	assert.Equal(t, float64(31536000), hsts.Fields["default"].GetNumberValue())

	// Configure as the engine does from a policy config file: tighten the
	// memory ceiling, and turn the root-user policy advisory.
	props, err := structpb.NewStruct(map[string]any{"maxMemoryMb": 256})
	require.NoError(t, err)
	_, err = client.Configure(ctx, &pulumirpc.ConfigureAnalyzerRequest{PolicyConfig: map[string]*pulumirpc.PolicyConfig{
		"docker-container-configure-memory-limit": {EnforcementLevel: pulumirpc.EnforcementLevel_MANDATORY, Properties: props},
		"docker-container-disallow-root-user":     {EnforcementLevel: pulumirpc.EnforcementLevel_ADVISORY, Properties: &structpb.Struct{}},
	}})
	require.NoError(t, err)

	t.Run("good container passes except the configured memory ceiling", func(t *testing.T) {
		resp, err := client.Analyze(ctx, analyzeRequest(t, fixture.Res{URN: fixture.URN(rules.ContainerType, "app"), Type: rules.ContainerType, Inputs: fixture.Container("app")}))
		require.NoError(t, err)
		require.Len(t, resp.Diagnostics, 1, "%v", resp.Diagnostics)
		d := resp.Diagnostics[0]
		assert.Equal(t, "docker-container-configure-memory-limit", d.PolicyName)
		assert.Contains(t, d.Message, "above the ceiling of 256 MB")
		assertNoSecrets(t, resp.Diagnostics)
	})

	t.Run("bad container", func(t *testing.T) {
		bad := fixture.Container("app")
		bad["privileged"] = true
		bad["user"] = "root"
		bad["memory"] = 128.0
		env := append([]any{}, fixture.AppEnvWithValues()...)
		env = append(env, "CORS_ALLOWED_ORIGINS=*")
		bad["envs"] = env // plaintext: secrets not flagged
		resp, err := client.Analyze(ctx, analyzeRequest(t, fixture.Res{URN: fixture.URN(rules.ContainerType, "app"), Type: rules.ContainerType, Inputs: bad}))
		require.NoError(t, err)
		ds := byPolicy(resp.Diagnostics)
		require.Contains(t, ds, "docker-container-disallow-privileged")
		priv := ds["docker-container-disallow-privileged"][0]
		assert.Equal(t, pulumirpc.EnforcementLevel_MANDATORY, priv.EnforcementLevel)
		assert.Equal(t, plugin.PackName, priv.PolicyPackName)
		assert.Contains(t, priv.Message, "must not run privileged")
		rule, _ := rules.Lookup("docker-container-disallow-privileged")
		assert.Contains(t, priv.Message, "Remediation: "+rule.Remediation)

		require.Contains(t, ds, "docker-container-disallow-root-user")
		assert.Equal(t, pulumirpc.EnforcementLevel_ADVISORY, ds["docker-container-disallow-root-user"][0].EnforcementLevel, "config overrides the level")

		require.Contains(t, ds, "nbms-app-configure-env-contract")
		joined := ""
		for _, d := range ds["nbms-app-configure-env-contract"] {
			joined += d.Message + "\n"
		}
		assert.Contains(t, joined, "SECRET_KEY is a secret variable but is set in the container's environment")
		assert.Contains(t, joined, "DATABASE_URL is a secret variable")
		require.Contains(t, ds, "nbms-app-disallow-wildcard-cors")
		assert.Contains(t, ds["nbms-app-disallow-wildcard-cors"][0].Message, `wildcard origin "*"`)
		assertNoSecrets(t, resp.Diagnostics)
	})

	t.Run("unknown values become advisory cannot-evaluate", func(t *testing.T) {
		c := fixture.Container("app")
		c["envs"] = fixture.Unknown()
		c["image"] = fixture.Unknown()
		resp, err := client.Analyze(ctx, analyzeRequest(t, fixture.Res{URN: fixture.URN(rules.ContainerType, "app"), Type: rules.ContainerType, Inputs: c}))
		require.NoError(t, err)
		ds := byPolicy(resp.Diagnostics)
		assert.NotContains(t, ds, "nbms-app-configure-env-contract", "a mandatory policy must not block on an unknown")
		require.Contains(t, ds, plugin.CannotEvaluatePolicy)
		var msgs []string
		for _, d := range ds[plugin.CannotEvaluatePolicy] {
			assert.Equal(t, pulumirpc.EnforcementLevel_ADVISORY, d.EnforcementLevel)
			msgs = append(msgs, d.Message)
		}
		sort.Strings(msgs)
		all := strings.Join(msgs, "\n")
		assert.Contains(t, all, "[nbms-app-configure-env-contract] cannot evaluate envs")
		assert.Contains(t, all, "[docker-image-require-pinned-version] cannot evaluate image")
		assert.Contains(t, all, "value unknown during preview")
	})

	t.Run("AnalyzeStack", func(t *testing.T) {
		var good, bad []*pulumirpc.AnalyzerResource
		for _, r := range fixture.Good() {
			good = append(good, &pulumirpc.AnalyzerResource{Urn: r.URN, Type: r.Type, Properties: marshal(t, r.Inputs)})
			inputs := r.Inputs
			if r.URN == fixture.URN(rules.NetworkType, "internal") {
				inputs = fixture.Network(fixture.Stack+"-internal", false)
			}
			if r.URN == fixture.URN(rules.ContainerType, "backup") {
				continue
			}
			bad = append(bad, &pulumirpc.AnalyzerResource{Urn: r.URN, Type: r.Type, Properties: marshal(t, inputs)})
		}
		resp, err := client.AnalyzeStack(ctx, &pulumirpc.AnalyzeStackRequest{Resources: good})
		require.NoError(t, err)
		assert.Empty(t, resp.Diagnostics)

		resp, err = client.AnalyzeStack(ctx, &pulumirpc.AnalyzeStackRequest{Resources: bad})
		require.NoError(t, err)
		ds := byPolicy(resp.Diagnostics)
		require.Contains(t, ds, "nbms-stack-isolate-data-tier")
		iso := ds["nbms-stack-isolate-data-tier"][0]
		assert.Equal(t, fixture.URN(rules.NetworkType, "internal"), iso.Urn)
		assert.Contains(t, iso.Message, "internal = true")
		assert.Equal(t, pulumirpc.EnforcementLevel_MANDATORY, iso.EnforcementLevel)
		require.Contains(t, ds, "nbms-stack-require-backups")
		assert.Equal(t, fixture.URN(rules.ContainerType, "db"), ds["nbms-stack-require-backups"][0].Urn)
		assert.Contains(t, ds["nbms-stack-require-backups"][0].Message, "Remediation: ")
		assertNoSecrets(t, resp.Diagnostics)
	})
}
