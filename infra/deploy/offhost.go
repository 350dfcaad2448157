package deploy

import (
	"maps"
	"net"
	"strconv"
	"time"

	"github.com/pulumi/pulumi-docker/sdk/v4/go/docker"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/nginx"
	"github.com/nbms-deploy/nbms/infra/pgbackrest"
	"github.com/nbms-deploy/nbms/stacks"
)

// The off-host repository (pgBackRest's repo2), as the database and the
// backup scheduler reach it. Neither gets a route off the host: the
// repository's names resolve, in their hosts files, to the backup relay's
// fixed address on the backup network, and the relay (nginx's stream
// module, in the proxy image) passes the TCP connection on from the
// egress network. pgBackRest's TLS runs end to end through it, verified
// against the repository's own certificate.
const (
	// offHostCAPath is where the stack's CA certificates for the
	// repository land (a rendered file: certificates are not secret).
	offHostCAPath = "/tmp/nbms/offhost-ca.pem"
	// pgSpoolPath is archive-async's spool, on the containers' tmpfs: it
	// holds only the status of WAL segments being pushed (the segments
	// themselves stay in pg_wal until both repositories have them), so
	// losing it at a restart loses nothing.
	pgSpoolPath = "/tmp/nbms/spool"
	// offHostSecretsFile holds the repository's keys and cipher
	// passphrase, on the tier's secrets volume, where pgBackRest includes
	// it from (PGBACKREST_CONFIG_INCLUDE_PATH: every *.conf file there).
	offHostSecretsFile = "pgbackrest-offhost.conf"
	relayConfPath      = "/tmp/nbms/relay.conf"
	relayPidPath       = "/tmp/nbms/relay.pid"
	// dockerDNS is Docker's embedded DNS server, which the relay asks for
	// the repository's addresses when the stack gives none.
	dockerDNS = "127.0.0.11"
)

// relayParams is the relay's nginx config for cfg's off-host repository.
func relayParams(cfg *stacks.Config) nginx.RelayParams {
	o := cfg.Backup.OffHost
	port := o.HTTPSPort()
	p := nginx.RelayParams{Listen: port, PidPath: relayPidPath}
	if o.Address != "" {
		p.Upstream = net.JoinHostPort(o.Address, strconv.Itoa(port))
	} else {
		p.Upstream, p.Resolver = net.JoinHostPort(o.Endpoint, strconv.Itoa(port)), dockerDNS
	}
	return p
}

// offHostAccess is what the database and the backup scheduler add to
// their containers to reach the off-host repository.
type offHostAccess struct {
	relay    *docker.Container
	networks []attachment
	hosts    map[string]string
	files    []renderedFile
	env      map[string]string
	// secrets is the include file with the keys and the passphrase.
	secrets secretFile
}

// newOffHostAccess registers the backup relay; nil without an off-host
// repository.
func (d *deployment) newOffHostAccess(ctx *pulumi.Context, parent pulumi.Resource, net *Network, sec *Secrets, relayImage *docker.Image) (*offHostAccess, error) {
	o := d.cfg.Backup.OffHost
	if o == nil {
		return nil, nil
	}
	relayIP := d.cfg.BackupRelayAddress()
	entry, cmd := withFiles([]renderedFile{{path: relayConfPath, content: d.rendered.relayConf}},
		"nginx", "-e", "stderr", "-c", relayConfPath, "-g", "daemon off;")
	relay, err := d.newContainer(ctx, parent, containerSpec{
		role: conventions.RoleBackupRelay, image: relayImage.RepoDigest, user: proxyUID,
		entrypoint: entry, command: cmd,
		// The master writes its pid once its listening socket is open; a
		// failed listen ends the process (and the container).
		healthcheck: shellHealthcheck(checkTiming{10 * time.Second, 3 * time.Second, 10 * time.Second, 3}, `kill -0 "$(cat `+relayPidPath+`)"`),
		networks: []attachment{
			{network: net.Backup, name: net.BackupName, ipv4: relayIP},
			{network: net.Egress, name: net.EgressName},
		},
		tmpfs: map[string]string{"/tmp": tmpfsOptions(8)},
		// The repository's port is usually 443.
		sysctls:     map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"},
		wait:        true,
		stopTimeout: 10,
	})
	if err != nil {
		return nil, err
	}
	repo := d.cfg.Backup.OffHostRepo(offHostCAPath, pgSpoolPath)
	hosts := map[string]string{}
	for _, h := range repo.Hosts() {
		hosts[h] = relayIP
	}
	var files []renderedFile
	if o.CACertificates != "" {
		files = append(files, renderedFile{path: offHostCAPath, content: o.CACertificates})
	}
	include := pulumi.All(d.cfg.BackupS3Key.Output(), d.cfg.BackupS3KeySecret.Output(), sec.BackupCipherPass).ApplyT(func(v []any) (string, error) {
		return pgbackrest.RenderSecrets(pgbackrest.S3Secrets{AccessKey: v[0].(string), SecretKey: v[1].(string), CipherPass: v[2].(string)})
	}).(pulumi.StringOutput)
	return &offHostAccess{
		relay:    relay,
		networks: []attachment{{network: net.Backup, name: net.BackupName}},
		hosts:    hosts,
		files:    files,
		env: map[string]string{
			"PGBACKREST_CONFIG_INCLUDE_PATH": conventions.SecretsDir,
		},
		secrets: secretFile{name: offHostSecretsFile, value: include},
	}, nil
}

// policyEnv is what the policy pack reads of the off-host repository on
// the backup scheduler: where it is and how it is encrypted.
func (a *offHostAccess) policyEnv(cfg *stacks.Config) map[string]string {
	if a == nil {
		return nil
	}
	o := cfg.Backup.OffHost
	return map[string]string{
		conventions.EnvBackupOffHostRepo:   "s3://" + net.JoinHostPort(o.Endpoint, strconv.Itoa(o.HTTPSPort())) + "/" + o.Bucket + o.Path,
		conventions.EnvBackupOffHostCipher: conventions.BackupOffHostCipher,
	}
}

// add puts a's networks, hosts, files and environment into spec (a nil a
// adds nothing).
func (a *offHostAccess) add(spec *containerSpec, files *[]renderedFile, env map[string]string) {
	if a == nil {
		return
	}
	spec.networks = append(spec.networks, a.networks...)
	spec.hosts = a.hosts
	*files = append(*files, a.files...)
	maps.Copy(env, a.env)
	spec.dependsOn = append(spec.dependsOn, a.relay)
}
