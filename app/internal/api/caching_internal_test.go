package api

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPageCacheStaysWithinItsBounds(t *testing.T) {
	c := newPageCache(3, 10)
	c.put("a", []byte("1234"))
	c.put("b", []byte("5678"))
	got, ok := c.get("a")
	assert.True(t, ok)
	assert.Equal(t, "1234", string(got))

	c.put("c", []byte("90ab")) // 12 bytes would pass the 10-byte bound: start over
	_, ok = c.get("a")
	assert.False(t, ok, "the cache started over")
	got, ok = c.get("c")
	assert.True(t, ok)
	assert.Equal(t, "90ab", string(got))

	c.put("d", []byte("x"))
	c.put("e", []byte("y"))
	c.put("f", []byte("z")) // a fourth entry passes the 3-entry bound
	assert.LessOrEqual(t, len(c.pages), 3)
	assert.LessOrEqual(t, c.bytes, 10)

	c.put("huge", []byte(strings.Repeat("h", 11)))
	_, ok = c.get("huge")
	assert.False(t, ok, "a body larger than the whole cache is not kept")

	c.put("f", []byte("changed"))
	got, _ = c.get("f")
	assert.Equal(t, "z", string(got), "a tag names one body: the first one stays")
}
