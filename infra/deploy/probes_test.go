package deploy

import (
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// networkAddress reads the docker provider's networkDatas output, as a
// created container reports it to the app's hook.
func TestNetworkAddress(t *testing.T) {
	outputs := resource.NewPropertyMapFromMap(map[string]any{
		"networkDatas": []any{
			map[string]any{"networkName": "prod-internal", "ipAddress": "172.18.0.4"},
			map[string]any{"networkName": "prod-edge", "ipAddress": "172.30.0.3", "gateway": "172.30.0.1"},
		},
	})
	addr, err := networkAddress(outputs, "prod-edge")
	require.NoError(t, err)
	assert.Equal(t, "172.30.0.3", addr)

	_, err = networkAddress(outputs, "prod-other")
	assert.EqualError(t, err, "no address on network prod-other")
	_, err = networkAddress(resource.PropertyMap{}, "prod-edge")
	assert.EqualError(t, err, "the provider reported no network addresses")
	empty := resource.NewPropertyMapFromMap(map[string]any{
		"networkDatas": []any{map[string]any{"networkName": "prod-edge", "ipAddress": ""}},
	})
	_, err = networkAddress(empty, "prod-edge")
	assert.Error(t, err, "an empty address is no address")
}
