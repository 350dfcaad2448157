//go:build tools

// Package tools pins the Pulumi CLI that `make tools` builds from the Go
// module proxy, for machines that cannot install Pulumi the usual way.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
