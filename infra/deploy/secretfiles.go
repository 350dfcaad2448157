package deploy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pulumi/pulumi-docker/sdk/v4/go/docker"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/stacks"
)

// Why secrets arrive as files on a volume, filled by a one-shot holder:
//
//   - An environment variable (or a command-line argument) is part of the
//     container's configuration: `docker inspect` shows it to anyone who can
//     reach the Docker API, and so does every tool that lists containers.
//   - A file uploaded with the provider's Uploads is a `docker cp` into the
//     container before it starts: Docker keeps no record of its content.
//     But the provider extracts every upload at "/", and Docker refuses an
//     archive into a read-only root filesystem unless its destination is
//     itself a volume; "/" never is, so a hardened (read-only) container
//     cannot receive uploads.
//
// So each tier's secrets live on a volume of their own (SecretsDir,
// read-only in the containers that use them), and a one-shot holder
// container, the only one with a writable root, receives them as an upload
// onto that volume when it is created and then exits. It runs its image's
// most harmless command, on no network, with every other hardening of
// newContainer. In Pulumi's state the uploads are secrets (encrypted).
//
// The files are mode 0444, owned by root (the provider's tar headers carry
// no owner): the volume, mounted only by the tier's own containers, is
// what keeps them private.

// secretFile is one secret a container reads from SecretsDir/<name>.
type secretFile struct {
	name  string
	value pulumi.StringInput
	// generation is the nbms:secretGenerations entry of the generated
	// secret the value is made of (0 for any other): what stands for the
	// value in the app's release hash (releaseSecrets).
	generation int
}

// secretVolume is a tier's secrets volume, filled.
type secretVolume struct {
	// mount attaches the volume read-only at SecretsDir.
	mount volumeMount
	// holder received the files: the tier's containers depend on it, so
	// that they start only once their files are there.
	holder *docker.Container
	// replaceOnChange replaces a container that reads the files when their
	// content changes: a process reads its secrets at start, and a new
	// file under a running one would only take effect at its next restart
	// (a PostgreSQL still on the old role password, say). The trigger is a
	// digest of the contents, never a value.
	replaceOnChange pulumi.ResourceOption
}

// secretPath is where a container reads the secret name.
func secretPath(name string) string { return conventions.SecretsDir + "/" + name }

// fileEnv is the environment that points a program at its secret files:
// NAME_FILE=SecretsDir/NAME for each (the convention of the env contract
// and of the official database images).
func fileEnv(files []secretFile) map[string]string {
	env := make(map[string]string, len(files))
	for _, f := range files {
		env[f.name+"_FILE"] = secretPath(f.name)
	}
	return env
}

// holderTiming is the holder's health check: it runs for an instant.
var holderTiming = checkTiming{30 * time.Second, 5 * time.Second, 5 * time.Second, 1}

// newSecretVolume registers the secrets volume named instance and its
// holder (the same name), which runs run (argv, entrypoint first) from
// image as user once the files are in place; holderOpts are resource
// options of the holder.
func (d *deployment) newSecretVolume(ctx *pulumi.Context, parent pulumi.Resource, instance string, image pulumi.StringInput, user string, run []string, files []secretFile, holderOpts ...pulumi.ResourceOption) (*secretVolume, error) {
	vol, volName, err := d.newVolume(ctx, parent, instance, false)
	if err != nil {
		return nil, err
	}
	sorted := slices.SortedFunc(slices.Values(files), func(a, b secretFile) int { return strings.Compare(a.name, b.name) })
	var uploads docker.ContainerUploadArray
	for _, f := range sorted {
		uploads = append(uploads, docker.ContainerUploadArgs{
			File:        pulumi.String(secretPath(f.name)),
			Content:     pulumi.ToSecret(f.value).(pulumi.StringOutput),
			Permissions: pulumi.String("0444"),
		})
	}
	holder, err := d.newContainer(ctx, parent, containerSpec{
		role: stacks.RoleSecrets, instance: instance,
		image: image, user: user,
		entrypoint:  run[:1],
		command:     pulumi.ToStringArray(run[1:]),
		healthcheck: healthcheck(holderTiming, run...),
		volumes:     []volumeMount{{volume: vol, name: volName, path: conventions.SecretsDir}},
		uploads:     uploads,
		writableRootReason: "receives its tier's secret files as an upload (docker cp), which Docker refuses into a read-only root; " +
			"it runs one harmless command on no network and exits",
		noNetwork: true,
		opts:      holderOpts,
	})
	if err != nil {
		return nil, err
	}
	return &secretVolume{
		mount:           volumeMount{volume: vol, name: volName, path: conventions.SecretsDir, readOnly: true},
		holder:          holder,
		replaceOnChange: pulumi.ReplacementTrigger(contentDigest(sorted)),
	}, nil
}

// contentDigest is the SHA-256 of the files' names and contents.
func contentDigest(files []secretFile) pulumi.StringOutput {
	var values []any
	for _, f := range files {
		values = append(values, f.value)
	}
	return pulumi.All(values...).ApplyT(func(vs []any) string {
		h := sha256.New()
		for i, v := range vs {
			fmt.Fprintf(h, "%s\x00%d\x00%s", files[i].name, len(v.(string)), v.(string))
		}
		return hex.EncodeToString(h.Sum(nil))
	}).(pulumi.StringOutput)
}
