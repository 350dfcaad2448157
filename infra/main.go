// Command infra runs the NBMS deployment program under the Pulumi CLI.
package main

import (
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/nbms-deploy/nbms/infra/deploy"
)

func main() { pulumi.Run(deploy.Program) }
