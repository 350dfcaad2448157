package deploy

import (
	"maps"
	"slices"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Why files arrive this way: the provider's Uploads extract a tar at "/"
// (kreuzwerker v3.8.0 CopyToContainer with dstPath "/"), and Docker refuses
// any archive into a read-only root filesystem unless the destination
// itself is a volume. "/" never is, so Uploads and ReadOnly cannot be
// combined. Instead each container that needs rendered files starts through
// a POSIX sh prologue that writes them into its tmpfs and then execs the
// real process. Non-secret file contents travel as arguments (visible in
// `pulumi preview` diffs); secret ones as environment variables, which the
// prologue unsets before exec.

// renderedFile is one file the prologue writes.
type renderedFile struct {
	path string
	// content is written verbatim; fromEnv, when set, names the variable
	// holding the content instead (secrets). It is a constant of this
	// package, never config: the prologue evals it.
	content string
	fromEnv string
}

// FilesPrologue is the sh script: it consumes "path content" pairs up to
// "--" (content "@VAR" means: take it from $VAR, then unset VAR), writes
// each file with mode 0600 and execs the rest of its arguments.
const FilesPrologue = `set -eu
umask 077
while [ "$1" != "--" ]; do
  path=$1 content=$2
  shift 2
  case $content in
    @*) var=${content#@}; eval "content=\${$var}"; unset "$var" ;;
  esac
  mkdir -p "${path%/*}"
  printf '%s\n' "$content" > "$path"
done
shift
exec "$@"`

// withFiles returns the entrypoint and command that write files and then
// run cmd.
func withFiles(files []renderedFile, cmd ...string) ([]string, pulumi.StringArray) {
	args := pulumi.StringArray{}
	for _, f := range files {
		content := f.content
		if f.fromEnv != "" {
			content = "@" + f.fromEnv
		}
		args = append(args, pulumi.String(f.path), pulumi.String(content))
	}
	args = append(args, pulumi.String("--"))
	for _, c := range cmd {
		args = append(args, pulumi.String(c))
	}
	return []string{"/bin/sh", "-c", FilesPrologue, "nbms-files"}, args
}

// envList turns name=value pairs into an Envs value; secret values keep
// their secretness and make the whole list secret (the provider stores
// envs as one array).
func envList(plain map[string]string, secret map[string]pulumi.StringInput) pulumi.StringArrayInput {
	arr := pulumi.StringArray{}
	for _, k := range slices.Sorted(maps.Keys(plain)) {
		arr = append(arr, pulumi.String(k+"="+plain[k]))
	}
	if len(secret) == 0 {
		return arr
	}
	for _, k := range slices.Sorted(maps.Keys(secret)) {
		arr = append(arr, pulumi.Sprintf("%s=%s", k, secret[k]))
	}
	return pulumi.ToSecret(arr).(pulumi.StringArrayOutput)
}
