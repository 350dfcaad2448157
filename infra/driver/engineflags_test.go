package driver

import (
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/auto/optdestroy"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optpreview"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optup"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const appURN = "urn:pulumi:prod::nbms::nbms:deploy:App$docker:index/container:Container::app-0123456789ab"

func TestCheckEngineFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  Command
		opts Options
		want string // a part of the usage error; "" when accepted
	}{
		{"none", Outputs, Options{}, ""},
		{"refresh, replace and target on up", Up, Options{Refresh: true, Replace: []string{appURN}, Target: []string{appURN}}, ""},
		{"replace on preview", Preview, Options{Replace: []string{appURN}}, ""},
		{"refresh and target on destroy", Destroy, Options{Refresh: true, Target: []string{appURN}}, ""},
		{"replace on destroy", Destroy, Options{Replace: []string{appURN}}, "--replace applies to [preview up], not to destroy"},
		{"target on rollback: a rollback is the whole release", Rollback, Options{Target: []string{appURN}}, "--target applies to [preview up destroy], not to rollback"},
		{"refresh on outputs", Outputs, Options{Refresh: true}, "--refresh applies to [preview up rollback destroy], not to outputs"},
		{"another stack's URN", Up, Options{Replace: []string{"urn:pulumi:dev::nbms::docker:index/container:Container::app"}},
			`--replace "urn:pulumi:dev::nbms::docker:index/container:Container::app": not a URN of stack prod: it must start with "urn:pulumi:prod::"`},
		{"a resource name", Up, Options{Target: []string{"app-0123456789ab"}}, `--target "app-0123456789ab": not a URN of stack prod`},
		{"the prefix alone", Preview, Options{Target: []string{"urn:pulumi:prod::"}}, `--target "urn:pulumi:prod::"`},
		{"a stack whose name extends it", Up, Options{Target: []string{"urn:pulumi:prod2::nbms::t::n"}}, `--target "urn:pulumi:prod2::nbms::t::n"`},
		{"two URNs in one value", Up, Options{Replace: []string{appURN + " " + appURN}}, "--replace"},
		{"the second value is bad", Up, Options{Target: []string{appURN, "urn:pulumi:dev::x"}}, `--target "urn:pulumi:dev::x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Stack = "prod"
			err := checkEngineFlags(tc.cmd, tc.opts)
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.Equal(t, ExitUsage, ExitCode(err))
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

func TestEngineFlagOptions(t *testing.T) {
	r := &run{opts: Options{Stack: "prod"}}
	assert.Empty(t, r.previewFlags())
	assert.Empty(t, r.upFlags())
	r.opts = Options{Stack: "prod", Refresh: true, Replace: []string{appURN}, Target: []string{appURN + "-b"}}
	var p optpreview.Options
	for _, o := range r.previewFlags() {
		o.ApplyOption(&p)
	}
	assert.True(t, p.Refresh)
	assert.Equal(t, []string{appURN}, p.Replace)
	assert.Equal(t, []string{appURN + "-b"}, p.Target)
	var u optup.Options
	for _, o := range r.upFlags() {
		o.ApplyOption(&u)
	}
	assert.True(t, u.Refresh)
	assert.Equal(t, []string{appURN}, u.Replace)
	assert.Equal(t, []string{appURN + "-b"}, u.Target)
}

func destroyOptions(opts []optdestroy.Option) optdestroy.Options {
	var d optdestroy.Options
	for _, o := range opts {
		o.ApplyOption(&d)
	}
	return d
}

// destroy excludes the protected closure, or with --target destroys only
// the targets and refuses one of the closure.
func TestDestroyFlags(t *testing.T) {
	const volume = "urn:pulumi:prod::nbms::docker:index/volume:Volume::media"
	r := &run{opts: Options{Stack: "prod"}}
	opts, err := r.destroyFlags([]string{volume})
	require.NoError(t, err)
	assert.Equal(t, optdestroy.Options{Exclude: []string{volume}}, destroyOptions(opts))
	opts, err = r.destroyFlags(nil)
	require.NoError(t, err)
	assert.Empty(t, opts)

	r.opts.Refresh, r.opts.Target = true, []string{appURN}
	opts, err = r.destroyFlags([]string{volume})
	require.NoError(t, err)
	assert.Equal(t, optdestroy.Options{Refresh: true, Target: []string{appURN}}, destroyOptions(opts), "no exclude")

	r.opts.Target = []string{appURN, volume}
	_, err = r.destroyFlags([]string{volume})
	assert.Equal(t, ExitUsage, ExitCode(err))
	assert.ErrorContains(t, err, `--target "`+volume+`" is protected`)
}
