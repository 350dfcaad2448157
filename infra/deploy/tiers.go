package deploy

import (
	"strconv"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/pulumi/pulumi-docker/sdk/v4/go/docker"
	"github.com/pulumi/pulumi-random/sdk/v4/go/random"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Component type tokens, one per tier.
const (
	typeNetwork  = "nbms:deploy:Network"
	typeImages   = "nbms:deploy:Images"
	typeSecrets  = "nbms:deploy:Secrets"
	typeDatabase = "nbms:deploy:Database"
	typeCache    = "nbms:deploy:Cache"
	typeApp      = "nbms:deploy:App"
	typeProxy    = "nbms:deploy:Proxy"
)

// Network is the edge network (nginx and the app) and the internal one
// (everything else; no route out). With an off-host repository, also the
// backup network (the database, the backup scheduler and the backup
// relay; no route out either) and the egress network (the relay's way
// off the host).
type Network struct {
	pulumi.ResourceState
	Edge, Internal         *docker.Network
	EdgeName, InternalName string
	// Backup and Egress are nil without an off-host repository.
	Backup, Egress         *docker.Network
	BackupName, EgressName string
}

func (d *deployment) newNetwork(ctx *pulumi.Context) (*Network, error) {
	n := &Network{EdgeName: conventions.EdgeNetwork(d.cfg.Stack), InternalName: conventions.InternalNetwork(d.cfg.Stack)}
	if err := ctx.RegisterComponentResource(typeNetwork, "network", n); err != nil {
		return nil, err
	}
	labels := docker.NetworkLabelArray{docker.NetworkLabelArgs{Label: pulumi.String(LabelStack), Value: pulumi.String(d.cfg.Stack)}}
	var err error
	// The edge subnet is fixed because the app trusts X-Forwarded-* from it
	// (TRUSTED_PROXY_CIDRS); only nginx and the app's releases join it.
	// Docker picks their addresses from its upper half only; nginx finds
	// the live release by its container name (the switch's upstream file).
	n.Edge, err = docker.NewNetwork(ctx, "edge", &docker.NetworkArgs{
		Name:   pulumi.String(n.EdgeName),
		Driver: pulumi.String("bridge"),
		IpamConfigs: docker.NetworkIpamConfigArray{docker.NetworkIpamConfigArgs{
			Subnet: pulumi.String(d.cfg.EdgeSubnet), IpRange: pulumi.String(d.cfg.EdgeDynamicRange()),
		}},
		Labels: labels,
	}, pulumi.Parent(n))
	if err != nil {
		return nil, err
	}
	// A fixed subnet too: Docker numbers networks round-robin from its
	// pools, and a number it picked could contain the edge's range.
	n.Internal, err = docker.NewNetwork(ctx, "internal", &docker.NetworkArgs{
		Name:        pulumi.String(n.InternalName),
		Driver:      pulumi.String("bridge"),
		Internal:    pulumi.Bool(true),
		IpamConfigs: docker.NetworkIpamConfigArray{docker.NetworkIpamConfigArgs{Subnet: pulumi.String(d.cfg.InternalSubnet)}},
		Labels:      labels,
	}, pulumi.Parent(n))
	if err != nil {
		return nil, err
	}
	outputs := pulumi.Map{"edge": pulumi.String(n.EdgeName), "internal": pulumi.String(n.InternalName)}
	if d.cfg.Backup.OffHost != nil {
		n.BackupName, n.EgressName = conventions.BackupNetwork(d.cfg.Stack), conventions.EgressNetwork(d.cfg.Stack)
		// Fixed, with Docker's addresses in the upper half only: the
		// relay's address (the lower half's) is in the database's hosts
		// file, so no other container may ever take it.
		n.Backup, err = docker.NewNetwork(ctx, "backup", &docker.NetworkArgs{
			Name:     pulumi.String(n.BackupName),
			Driver:   pulumi.String("bridge"),
			Internal: pulumi.Bool(true),
			IpamConfigs: docker.NetworkIpamConfigArray{docker.NetworkIpamConfigArgs{
				Subnet: pulumi.String(d.cfg.BackupSubnet), IpRange: pulumi.String(d.cfg.BackupDynamicRange()),
			}},
			Labels: labels,
		}, pulumi.Parent(n))
		if err != nil {
			return nil, err
		}
		// Docker numbers this one: nothing depends on its addresses.
		n.Egress, err = docker.NewNetwork(ctx, "egress", &docker.NetworkArgs{
			Name:   pulumi.String(n.EgressName),
			Driver: pulumi.String("bridge"),
			Labels: labels,
		}, pulumi.Parent(n))
		if err != nil {
			return nil, err
		}
		outputs["backup"], outputs["egress"] = pulumi.String(n.BackupName), pulumi.String(n.EgressName)
	}
	return n, ctx.RegisterResourceOutputs(n, outputs)
}

// generationKeepers are a generated secret's keepers for its generation
// (nbms:secretGenerations): a change of keepers makes the random provider
// generate the value anew. Generation 0 has none, as every secret had
// before generations existed, so that a stack's first values stay.
func generationKeepers(generation int) pulumi.StringMapInput {
	if generation == 0 {
		return nil
	}
	return pulumi.StringMap{"generation": pulumi.String(strconv.Itoa(generation))}
}

// Secrets are the generated credentials, secret end to end.
type Secrets struct {
	pulumi.ResourceState
	DBSuperuserPassword pulumi.StringOutput
	AppDBPassword       pulumi.StringOutput
	RedisPassword       pulumi.StringOutput
	SecretKey           pulumi.StringOutput
	// BackupCipherPass encrypts the off-host repository (aes-256-cbc);
	// only a stack with one has it. It never rotates: pgBackRest fixes a
	// repository's passphrase when it creates the stanza, and the
	// repository's backups are unreadable without it.
	BackupCipherPass pulumi.StringOutput
}

func (d *deployment) newSecrets(ctx *pulumi.Context) (*Secrets, error) {
	s := &Secrets{}
	if err := ctx.RegisterComponentResource(typeSecrets, "secrets", s); err != nil {
		return nil, err
	}
	gen := d.cfg.SecretGenerations
	// Passwords go into postgres:// and redis:// URLs unescaped, so they are
	// letters and digits only; 32 of them is ~190 bits.
	password := func(name string, generation int) (pulumi.StringOutput, error) {
		p, err := random.NewRandomPassword(ctx, name, &random.RandomPasswordArgs{
			Length: pulumi.Int(32), Special: pulumi.Bool(false),
			MinUpper: pulumi.Int(2), MinLower: pulumi.Int(2), MinNumeric: pulumi.Int(2),
			Keepers: generationKeepers(generation),
		}, pulumi.Parent(s))
		if err != nil {
			return pulumi.StringOutput{}, err
		}
		// The engine marks Result secret too; wrapping here keeps it secret
		// whatever the engine (or a mock) does.
		return pulumi.ToSecret(p.Result).(pulumi.StringOutput), nil
	}
	var err error
	if s.DBSuperuserPassword, err = password("db-superuser-password", gen.DBSuperuserPassword); err != nil {
		return nil, err
	}
	if s.AppDBPassword, err = password("app-db-password", gen.AppDBPassword); err != nil {
		return nil, err
	}
	if s.RedisPassword, err = password("redis-password", gen.RedisPassword); err != nil {
		return nil, err
	}
	// SECRET_KEY: 64 characters (the contract wants >= 50 and 16 distinct).
	key, err := random.NewRandomPassword(ctx, "app-secret-key", &random.RandomPasswordArgs{
		Length: pulumi.Int(64), Special: pulumi.Bool(true), OverrideSpecial: pulumi.String("-_"),
		MinUpper: pulumi.Int(4), MinLower: pulumi.Int(4), MinNumeric: pulumi.Int(4),
		Keepers: generationKeepers(gen.SecretKey),
	}, pulumi.Parent(s))
	if err != nil {
		return nil, err
	}
	s.SecretKey = pulumi.ToSecret(key.Result).(pulumi.StringOutput)
	switch {
	case d.cfg.Backup.OffHost == nil:
	case d.cfg.BackupCipherPass.IsSet():
		// The operator's: a stack recovered without its state opens its
		// repository with the passphrase kept off the host.
		s.BackupCipherPass = d.cfg.BackupCipherPass.Output()
	default:
		// 64 letters and digits, ~380 bits. Protected like the data
		// volumes: `pulumi destroy` of a stack must not take with it the
		// one thing that reads its off-host backups.
		pass, err := random.NewRandomPassword(ctx, "backup-cipher-pass", &random.RandomPasswordArgs{
			Length: pulumi.Int(64), Special: pulumi.Bool(false),
			MinUpper: pulumi.Int(4), MinLower: pulumi.Int(4), MinNumeric: pulumi.Int(4),
		}, pulumi.Parent(s), pulumi.Protect(d.cfg.ProtectVolumes))
		if err != nil {
			return nil, err
		}
		s.BackupCipherPass = pulumi.ToSecret(pass.Result).(pulumi.StringOutput)
	}
	return s, ctx.RegisterResourceOutputs(s, pulumi.Map{})
}
