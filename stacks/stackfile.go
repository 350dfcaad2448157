package stacks

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// ParseStackFile reads the nbms:* keys of a Pulumi.<stack>.yaml written in
// this repository's flat style (one `  nbms:key: value` line per key, values
// plain or JSON) into the raw form Pulumi hands the program: strings as is,
// arrays and objects as JSON. `secure:` values are refused: the committed
// stack files carry no secret, even encrypted.
func ParseStackFile(data []byte) (map[string]string, error) {
	raw := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	inConfig := false
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
			continue
		case !strings.HasPrefix(line, " "):
			inConfig = trimmed == "config:"
			continue
		case !inConfig:
			continue
		}
		key, value, ok := strings.Cut(trimmed, ": ")
		if !ok {
			return nil, fmt.Errorf("line %d: want `%s:key: value`, got %q", n, Namespace, trimmed)
		}
		name, ok := strings.CutPrefix(key, Namespace+":")
		if !ok {
			continue // another provider's key, e.g. docker:host
		}
		switch {
		case strings.HasPrefix(value, "secure:"):
			return nil, fmt.Errorf("line %d: %s is encrypted; committed stack files carry no secret", n, key)
		case strings.HasPrefix(value, `"`):
			if err := json.Unmarshal([]byte(value), &value); err != nil {
				return nil, fmt.Errorf("line %d: %s: %v", n, key, err)
			}
		case strings.HasPrefix(value, "[") || strings.HasPrefix(value, "{"):
			if !json.Valid([]byte(value)) {
				return nil, fmt.Errorf("line %d: %s: not a JSON flow value", n, key)
			}
		}
		raw[name] = value
	}
	return raw, sc.Err()
}
