package deploy

import (
	"cmp"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/pulumi/pulumi-docker/sdk/v4/go/docker"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Label keys shared with the policy pack (package conventions).
const (
	LabelRole    = conventions.LabelRole
	LabelStack   = conventions.LabelStack
	LabelProfile = conventions.LabelProfile
	LabelRelease = conventions.LabelRelease
)

// dockerStopTimeout is Docker's own stop timeout, in seconds, for a
// container that sets none.
const dockerStopTimeout = 10

// tmpfsOptions is the mount option string of every tmpfs: private scratch
// space that can hold no executable or device.
func tmpfsOptions(sizeMB int) string {
	return "rw,noexec,nosuid,nodev,size=" + strconv.Itoa(sizeMB) + "m"
}

// volumeMount attaches a named volume (by its fixed name, so that preview
// knows it).
type volumeMount struct {
	volume   *docker.Volume
	name     string
	path     string
	readOnly bool
}

// attachment puts a container on a network under extra DNS aliases, at a
// fixed IPv4 address when ipv4 is set.
type attachment struct {
	network *docker.Network
	name    string
	aliases []string
	ipv4    string
}

// containerSpec is what differs between containers; everything that must
// hold for all of them (the hardening baseline) is applied by newContainer.
type containerSpec struct {
	role string
	// instance names the container when a role has several (the app's
	// releases): its resource name and its Docker name's suffix. Empty
	// means the role's name.
	instance string
	// labels are added to the baseline labels.
	labels map[string]string
	image  pulumi.StringInput
	user   string
	// groups are supplementary group IDs, for files another container
	// writes and this one reads.
	groups      []string
	entrypoint  []string
	command     pulumi.StringArrayInput
	envs        pulumi.StringArrayInput
	healthcheck *docker.ContainerHealthcheckArgs
	networks    []attachment
	volumes     []volumeMount
	tmpfs       map[string]string
	sysctls     map[string]string
	// hosts are /etc/hosts entries, name to address.
	hosts map[string]string
	ports docker.ContainerPortArray
	// wait makes creation block until the health check passes, so that
	// dependents start against a ready service.
	wait        bool
	stopTimeout int
	shmSizeMB   int
	init        bool
	// uploads are files copied into the container before it starts (only
	// a container with a writable root can take them: see secretfiles.go).
	uploads docker.ContainerUploadArrayInput
	// writableRootReason, when set, leaves the root filesystem writable
	// and tells the policy pack why (the exemption label).
	writableRootReason string
	// noNetwork runs the container on no network at all.
	noNetwork bool
	dependsOn []pulumi.Resource
	opts      []pulumi.ResourceOption
}

// newContainer registers one container with the hardening every container
// gets: fixed name, read-only root, all capabilities dropped, no new
// privileges, memory/CPU/nproc limits, rotated logs, labels, and the
// replacement options the provider needs.
func (d *deployment) newContainer(ctx *pulumi.Context, parent pulumi.Resource, spec containerSpec) (*docker.Container, error) {
	args, deps := d.containerArgs(spec)
	if conventions.OneShot(spec.role) {
		// What a one-shot printed may quote a setting or a secret it was
		// given: its logs are encrypted in the state like every secret.
		spec.opts = append(spec.opts, pulumi.AdditionalSecretOutputs([]string{"containerLogs"}))
	}
	opts := append([]pulumi.ResourceOption{
		pulumi.Parent(parent),
		pulumi.DependsOn(deps),
		// Fixed names (and nginx's fixed host ports) collide under
		// create-before-delete.
		pulumi.DeleteBeforeReplace(true),
		// The provider records but never applies these to a running
		// container; only a replacement does.
		pulumi.ReplaceOnChanges([]string{"healthcheck", "tmpfs"}),
	}, spec.opts...)
	return docker.NewContainer(ctx, cmp.Or(spec.instance, spec.role), args, opts...)
}

// containerArgs is everything newContainer writes into the container of
// spec, and the resources it depends on. The app's release hashes it (see
// appRelease and settingsDigest), so it must be all of it.
func (d *deployment) containerArgs(spec containerSpec) (*docker.ContainerArgs, []pulumi.Resource) {
	limit := d.cfg.Limits[spec.role]
	instance := cmp.Or(spec.instance, spec.role)
	labels := docker.ContainerLabelArray{
		docker.ContainerLabelArgs{Label: pulumi.String(LabelRole), Value: pulumi.String(spec.role)},
		docker.ContainerLabelArgs{Label: pulumi.String(LabelStack), Value: pulumi.String(d.cfg.Stack)},
		docker.ContainerLabelArgs{Label: pulumi.String(LabelProfile), Value: pulumi.String(d.cfg.Profile)},
	}
	extra := maps.Clone(spec.labels)
	if spec.writableRootReason != "" {
		if extra == nil {
			extra = map[string]string{}
		}
		extra[conventions.LabelReadOnlyExempt] = spec.writableRootReason
	}
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		labels = append(labels, docker.ContainerLabelArgs{Label: pulumi.String(k), Value: pulumi.String(extra[k])})
	}
	args := &docker.ContainerArgs{
		Name:         pulumi.String(d.name(instance)),
		Image:        spec.image,
		User:         pulumi.String(spec.user),
		Command:      spec.command,
		Envs:         spec.envs,
		Healthcheck:  spec.healthcheck,
		ReadOnly:     pulumi.Bool(spec.writableRootReason == ""),
		Capabilities: &docker.ContainerCapabilitiesArgs{Drops: pulumi.StringArray{pulumi.String("ALL")}},
		SecurityOpts: pulumi.StringArray{pulumi.String("no-new-privileges:true")},
		Memory:       pulumi.Int(limit.MemoryMB),
		// Equal to Memory: no swap, so the limit is a real limit.
		MemorySwap: pulumi.Int(limit.MemoryMB),
		Cpus:       pulumi.String(cpusValue(limit.CPUs)),
		// pulumi-docker v4.10 cannot set a pids cgroup limit (CIS 5.29);
		// RLIMIT_NPROC is the bound available.
		Ulimits: docker.ContainerUlimitArray{docker.ContainerUlimitArgs{
			Name: pulumi.String("nproc"), Soft: pulumi.Int(limit.Nproc), Hard: pulumi.Int(limit.Nproc),
		}},
		LogDriver: pulumi.String("json-file"),
		LogOpts: pulumi.StringMap{
			"max-size": pulumi.String(d.cfg.Logs.MaxSize),
			"max-file": pulumi.String(strconv.Itoa(d.cfg.Logs.MaxFile)),
		},
		Labels: labels,
		Ports:  spec.ports,
	}
	if len(spec.entrypoint) > 0 {
		args.Entrypoints = pulumi.ToStringArray(spec.entrypoint)
	}
	if len(spec.groups) > 0 {
		args.GroupAdds = pulumi.ToStringArray(spec.groups)
	}
	if len(spec.tmpfs) > 0 {
		args.Tmpfs = pulumi.ToStringMap(spec.tmpfs)
	}
	if len(spec.sysctls) > 0 {
		args.Sysctls = pulumi.ToStringMap(spec.sysctls)
	}
	if spec.stopTimeout > 0 {
		args.StopTimeout = pulumi.Int(spec.stopTimeout)
	}
	if spec.shmSizeMB > 0 {
		args.ShmSize = pulumi.Int(spec.shmSizeMB)
	}
	if spec.init {
		args.Init = pulumi.Bool(true)
	}
	if spec.uploads != nil {
		args.Uploads = spec.uploads
	}
	if spec.noNetwork {
		args.NetworkMode = pulumi.String("none")
	}
	if len(spec.hosts) > 0 {
		var hosts docker.ContainerHostArray
		for _, name := range slices.Sorted(maps.Keys(spec.hosts)) {
			hosts = append(hosts, docker.ContainerHostArgs{Host: pulumi.String(name), Ip: pulumi.String(spec.hosts[name])})
		}
		args.Hosts = hosts
	}
	deps := append([]pulumi.Resource{}, spec.dependsOn...)
	var networks docker.ContainerNetworksAdvancedArray
	for _, n := range spec.networks {
		network := docker.ContainerNetworksAdvancedArgs{
			Name:    pulumi.String(n.name),
			Aliases: pulumi.ToStringArray(n.aliases),
		}
		if n.ipv4 != "" {
			network.Ipv4Address = pulumi.String(n.ipv4)
		}
		networks = append(networks, network)
		deps = append(deps, n.network)
	}
	args.NetworksAdvanced = networks
	var volumes docker.ContainerVolumeArray
	for _, v := range spec.volumes {
		volumes = append(volumes, docker.ContainerVolumeArgs{
			VolumeName:    pulumi.String(v.name),
			ContainerPath: pulumi.String(v.path),
			ReadOnly:      pulumi.Bool(v.readOnly),
		})
		deps = append(deps, v.volume)
	}
	if len(volumes) > 0 {
		args.Volumes = volumes
	}
	if conventions.OneShot(spec.role) {
		// One-shot roles run to completion once per replacement; the
		// program reads their exit code (see awaitSuccess).
		// Attach: creation returns when the process exits, with its exit
		// code in state. MustRun off: an exited one-shot is not a failure
		// to refresh away. Restart "no": it runs once per replacement.
		args.Attach = pulumi.Bool(true)
		args.Logs = pulumi.Bool(true)
		args.MustRun = pulumi.Bool(false)
		args.Restart = pulumi.String("no")
	} else {
		args.Restart = pulumi.String("unless-stopped")
		args.MustRun = pulumi.Bool(true)
		// A delete, a replacement's included, stops the container first
		// (its stop signal, then as long as its stop timeout gives it)
		// instead of the provider's default forced removal, a SIGKILL: the
		// app's in-flight requests finish after its drain delay, and
		// PostgreSQL shuts down cleanly instead of recovering at its next
		// start.
		args.DestroyGraceSeconds = pulumi.Int(cmp.Or(spec.stopTimeout, dockerStopTimeout))
		if spec.wait {
			args.Wait = pulumi.Bool(true)
			args.WaitTimeout = pulumi.Int(180)
		}
	}
	return args, deps
}

// checkTiming is when a health check runs and how many failures in a row
// make the container unhealthy.
type checkTiming struct {
	interval, timeout, startPeriod time.Duration
	retries                        int
}

// healthcheck returns a Docker health check running test (exec form).
func healthcheck(t checkTiming, test ...string) *docker.ContainerHealthcheckArgs {
	return t.args(append([]string{"CMD"}, test...))
}

// shellHealthcheck returns a Docker health check running a shell command.
func shellHealthcheck(t checkTiming, command string) *docker.ContainerHealthcheckArgs {
	return t.args([]string{"CMD-SHELL", command})
}

// args writes the durations the way the provider reads them back from
// Docker (Go's time.Duration format, "1m0s" for a minute): any other
// spelling is a difference on every update, and a difference in a health
// check replaces the container. None may be zero: Docker fills a zero in
// from the image's HEALTHCHECK, which again reads back as a difference.
func (t checkTiming) args(test []string) *docker.ContainerHealthcheckArgs {
	return &docker.ContainerHealthcheckArgs{
		Tests:       pulumi.ToStringArray(test),
		Interval:    pulumi.String(t.interval.String()),
		Timeout:     pulumi.String(t.timeout.String()),
		StartPeriod: pulumi.String(t.startPeriod.String()),
		Retries:     pulumi.Int(t.retries),
	}
}

// cpusValue is a CPU limit the way the provider reads it back from Docker's
// NanoCPUs: "1.0" for one CPU, "0.5" for half. Any other spelling ("1") is
// a difference on every update, which replaces the container.
func cpusValue(cpus float64) string {
	if cpus == math.Trunc(cpus) {
		return strconv.FormatFloat(cpus, 'f', 1, 64)
	}
	return strconv.FormatFloat(cpus, 'f', -1, 64)
}

// newVolume registers a named volume. Data volumes survive the stack: they
// are retained when deleted from the program and, when the stack says so,
// protected from `pulumi destroy`.
func (d *deployment) newVolume(ctx *pulumi.Context, parent pulumi.Resource, suffix string, data bool) (*docker.Volume, string, error) {
	name := d.name(suffix)
	opts := []pulumi.ResourceOption{pulumi.Parent(parent)}
	if data {
		opts = append(opts, pulumi.RetainOnDelete(true), pulumi.Protect(d.cfg.ProtectVolumes))
	}
	v, err := docker.NewVolume(ctx, suffix, &docker.VolumeArgs{
		Name: pulumi.String(name),
		Labels: docker.VolumeLabelArray{
			docker.VolumeLabelArgs{Label: pulumi.String(LabelStack), Value: pulumi.String(d.cfg.Stack)},
		},
	}, opts...)
	return v, name, err
}

// name is the Docker name of a stack object.
func (d *deployment) name(suffix string) string { return d.cfg.Stack + "-" + suffix }
