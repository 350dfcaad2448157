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
// real process. Their contents travel as arguments (visible in `pulumi
// preview` diffs and in `docker inspect`), so they are never secret:
// secrets arrive as files on a secrets volume (secretfiles.go).

// renderedFile is one file the prologue writes, content verbatim.
type renderedFile struct {
	path    string
	content string
}

// FilesPrologue is the sh script: it consumes "path content" pairs up to
// "--", writes each file with mode 0600 and execs the rest of its
// arguments.
const FilesPrologue = `set -eu
umask 077
while [ "$1" != "--" ]; do
  path=$1 content=$2
  shift 2
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
		args = append(args, pulumi.String(f.path), pulumi.String(f.content))
	}
	args = append(args, pulumi.String("--"))
	for _, c := range cmd {
		args = append(args, pulumi.String(c))
	}
	return []string{"/bin/sh", "-c", FilesPrologue, "nbms-files"}, args
}

// envList turns name=value pairs into an Envs value, sorted by name. It
// takes plain strings only: Docker shows a container's environment to
// anyone who may inspect it, so a secret never goes there (its file's path
// does, as NAME_FILE).
func envList(plain map[string]string) pulumi.StringArrayInput {
	arr := pulumi.StringArray{}
	for _, k := range slices.Sorted(maps.Keys(plain)) {
		arr = append(arr, pulumi.String(k+"="+plain[k]))
	}
	return arr
}
