package password_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/password"
)

// cheap keeps the tests fast where the cost itself is not under test.
var cheap = password.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func newHasher(t testing.TB, p password.Params, n int) *password.Hasher {
	t.Helper()
	h, err := password.NewHasher(p, n)
	require.NoError(t, err)
	return h
}

func TestDefaultParamsMeetOWASPMinimum(t *testing.T) {
	p := password.DefaultParams
	// OWASP's equivalent minimums: memory (KiB) needed for a given t.
	owasp := map[uint32]uint32{1: 47104, 2: 19456, 3: 12288, 4: 9216, 5: 7168}
	need, ok := owasp[min(p.Time, 5)]
	require.True(t, ok)
	assert.GreaterOrEqual(t, p.Memory, need)
	assert.GreaterOrEqual(t, p.SaltLen, uint32(16))
	assert.GreaterOrEqual(t, p.KeyLen, uint32(32))
	assert.Equal(t, p, password.Default().Params())
}

func TestHashFormatAndRoundTrip(t *testing.T) {
	ctx := context.Background()
	hash, err := password.Hash(ctx, "correct horse battery staple")
	require.NoError(t, err)
	assert.Regexp(t, `^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`, hash)

	ok, rehash, err := password.Verify(ctx, hash, "correct horse battery staple")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.False(t, rehash)

	ok, rehash, err = password.Verify(ctx, hash, "correct horse battery stapl")
	require.NoError(t, err)
	assert.False(t, ok)
	assert.False(t, rehash)

	again, err := password.Hash(ctx, "correct horse battery staple")
	require.NoError(t, err)
	assert.NotEqual(t, hash, again, "every hash has its own salt")
}

func TestLongPasswords(t *testing.T) {
	h := newHasher(t, cheap, 2)
	ctx := context.Background()
	cases := []struct {
		name    string
		pw      string
		wantErr error
	}{
		{"64 chars", strings.Repeat("a", 64), nil},
		{"128 chars", strings.Repeat("b", 128), nil},
		{"1024 bytes", strings.Repeat("c", 1024), nil},
		{"64 four-byte chars", strings.Repeat("𝄞", 64), nil},
		{"1025 bytes", strings.Repeat("d", 1025), password.ErrTooLong},
		{"empty", "", password.ErrEmpty},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hash, err := h.Hash(ctx, tc.pw)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				assert.Empty(t, hash)
				_, _, err = h.Verify(ctx, mustHash(t, h, "x"), tc.pw)
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			ok, _, err := h.Verify(ctx, hash, tc.pw)
			require.NoError(t, err)
			assert.True(t, ok)
			// No truncation: changing only the last byte must fail.
			ok, _, err = h.Verify(ctx, hash, tc.pw[:len(tc.pw)-1]+"Z")
			require.NoError(t, err)
			assert.False(t, ok)
		})
	}
}

func TestCheckPolicy(t *testing.T) {
	cases := []struct {
		pw   string
		want error
	}{
		{strings.Repeat("a", password.MinLength-1), password.ErrTooShort},
		{strings.Repeat("a", password.MinLength), nil},
		{strings.Repeat("é", password.MinLength), nil}, // counted in characters, not bytes
		{strings.Repeat("é", password.MinLength-1), password.ErrTooShort},
		{strings.Repeat("a", password.MaxBytes), nil},
		{strings.Repeat("a", password.MaxBytes+1), password.ErrTooLong},
		{"", password.ErrTooShort},
	}
	for _, tc := range cases {
		err := password.CheckPolicy(tc.pw)
		if tc.want == nil {
			assert.NoError(t, err, "len %d", len(tc.pw))
		} else {
			assert.ErrorIs(t, err, tc.want, "len %d", len(tc.pw))
		}
	}
}

func mustHash(t testing.TB, h *password.Hasher, pw string) string {
	t.Helper()
	hash, err := h.Hash(context.Background(), pw)
	require.NoError(t, err)
	return hash
}

func TestParameterUpgradeNeedsRehash(t *testing.T) {
	ctx := context.Background()
	old := newHasher(t, cheap, 1)
	stronger := cheap
	stronger.Memory, stronger.Time = 128, 2
	current := newHasher(t, stronger, 1)

	oldHash := mustHash(t, old, "a password made long ago")
	cases := []struct {
		name       string
		hash, pw   string
		ok, rehash bool
	}{
		{"old params, right password", oldHash, "a password made long ago", true, true},
		{"old params, wrong password", oldHash, "a password made long ag0", false, false},
		{"current params", mustHash(t, current, "fresh"), "fresh", true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, rehash, err := current.Verify(ctx, tc.hash, tc.pw)
			require.NoError(t, err)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.rehash, rehash)
		})
	}
	// A salt length change alone is also an upgrade.
	longerSalt := stronger
	longerSalt.SaltLen = 32
	ok, rehash, err := newHasher(t, longerSalt, 1).Verify(ctx, mustHash(t, current, "salty"), "salty")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.True(t, rehash)
}

func TestMalformedHashes(t *testing.T) {
	h := newHasher(t, cheap, 2)
	good := mustHash(t, h, "pw")
	parts := strings.Split(good, "$") // "", argon2id, v=19, m=..., salt, key
	salt, key := parts[4], parts[5]
	cases := map[string]string{
		"empty":             "",
		"bcrypt":            "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		"argon2i":           "$argon2i$v=19$m=64,t=1,p=1$" + salt + "$" + key,
		"old version":       "$argon2id$v=16$m=64,t=1,p=1$" + salt + "$" + key,
		"no version":        "$argon2id$m=64,t=1,p=1$" + salt + "$" + key,
		"missing key":       "$argon2id$v=19$m=64,t=1,p=1$" + salt,
		"extra field":       good + "$x",
		"params reordered":  "$argon2id$v=19$t=1,m=64,p=1$" + salt + "$" + key,
		"leading zero":      "$argon2id$v=19$m=064,t=1,p=1$" + salt + "$" + key,
		"plus sign":         "$argon2id$v=19$m=+64,t=1,p=1$" + salt + "$" + key,
		"negative":          "$argon2id$v=19$m=-64,t=1,p=1$" + salt + "$" + key,
		"zero time":         "$argon2id$v=19$m=64,t=0,p=1$" + salt + "$" + key,
		"zero threads":      "$argon2id$v=19$m=64,t=1,p=0$" + salt + "$" + key,
		"threads overflow":  "$argon2id$v=19$m=64,t=1,p=256$" + salt + "$" + key,
		"huge memory":       "$argon2id$v=19$m=4294967295,t=1,p=1$" + salt + "$" + key,
		"memory overflow":   "$argon2id$v=19$m=4294967296,t=1,p=1$" + salt + "$" + key,
		"huge time":         "$argon2id$v=19$m=64,t=1000000,p=1$" + salt + "$" + key,
		"memory below 8p":   "$argon2id$v=19$m=8,t=1,p=2$" + salt + "$" + key,
		"padded base64":     "$argon2id$v=19$m=64,t=1,p=1$" + salt + "==$" + key,
		"not base64":        "$argon2id$v=19$m=64,t=1,p=1$!!!!$" + key,
		"short salt":        "$argon2id$v=19$m=64,t=1,p=1$AAAA$" + key,
		"empty key":         "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$",
		"short key":         "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$AAAAAAAA",
		"very long":         good + strings.Repeat("A", 1000),
		"non-canonical b64": "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + key[:len(key)-1] + "B",
	}
	for name, hash := range cases {
		t.Run(name, func(t *testing.T) {
			ok, rehash, err := h.Verify(context.Background(), hash, "pw")
			require.ErrorIs(t, err, password.ErrMalformedHash)
			assert.False(t, ok)
			assert.False(t, rehash)
		})
	}
}

func FuzzVerifyMalformed(f *testing.F) {
	h := newHasher(f, cheap, 2)
	good := mustHash(f, h, "pw")
	for _, seed := range []string{good, "", "$argon2id$v=19$", "$argon2id$v=19$m=64,t=1,p=1$$",
		"$argon2id$v=19$m=9999999999,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=64,t=1,p=1$" + strings.Repeat("$", 10)} {
		f.Add(seed, "pw")
	}
	f.Fuzz(func(t *testing.T, hash, pw string) {
		ok, rehash, err := h.Verify(context.Background(), hash, pw)
		if err != nil {
			assert.False(t, ok)
			assert.False(t, rehash)
			return
		}
		// Anything accepted must be a well-formed hash this package wrote.
		assert.True(t, strings.HasPrefix(hash, "$argon2id$v=19$m="), hash)
		if ok && hash == good {
			assert.Equal(t, "pw", pw)
		}
	})
}

func TestConcurrencyIsBounded(t *testing.T) {
	const limit = 2
	h := newHasher(t, password.Params{Memory: 4096, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}, limit)
	hash := mustHash(t, h, "pw")

	// Count hashes in flight by sampling the semaphore from outside:
	// password.InFlight is exported for tests only (export_test.go).
	var maxSeen atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n := int64(password.InFlight(h))
			for cur := maxSeen.Load(); n > cur && !maxSeen.CompareAndSwap(cur, n); cur = maxSeen.Load() {
			}
		}
	}()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			ok, _, err := h.Verify(context.Background(), hash, "pw")
			assert.NoError(t, err)
			assert.True(t, ok)
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	assert.Equal(t, int64(limit), maxSeen.Load(), "never more than the limit, and the limit is used")
}

func TestWaitingForASlotRespectsContext(t *testing.T) {
	h := newHasher(t, cheap, 1)
	hash := mustHash(t, h, "pw")
	release := password.HoldSlot(h) // the only slot is busy
	defer release()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	ok, _, err := h.Verify(ctx, hash, "pw")
	assert.False(t, ok)
	require.Error(t, err)
	assert.True(t, errors.Is(err, context.DeadlineExceeded))
	assert.Less(t, time.Since(start), 5*time.Second)

	_, err = h.Hash(ctx, "pw")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, h.VerifyDummy(ctx, "pw"), context.DeadlineExceeded)
}

func TestVerifyDummyNeverMatchesAndCostsAVerification(t *testing.T) {
	ctx := context.Background()
	h := password.Default()
	hash := mustHash(t, h, "a real password for a real user")
	const rounds = 5
	var real, dummy time.Duration
	for range rounds {
		start := time.Now()
		ok, _, err := h.Verify(ctx, hash, "a wrong password")
		real += time.Since(start)
		require.NoError(t, err)
		require.False(t, ok)

		start = time.Now()
		require.NoError(t, h.VerifyDummy(ctx, "a wrong password"))
		dummy += time.Since(start)
	}
	t.Logf("mean wrong-password verify %v, mean dummy verify %v", real/rounds, dummy/rounds)
	// Not a timing assertion: the dummy really runs Argon2 with the same
	// parameters, which is what makes the two comparable.
	assert.Equal(t, h.Params(), password.DummyParams(h))
	require.ErrorIs(t, h.VerifyDummy(ctx, strings.Repeat("x", password.MaxBytes+1)), password.ErrTooLong)
}

func TestNewHasherRejectsBadParams(t *testing.T) {
	cases := map[string]password.Params{
		"zero":       {},
		"no threads": {Memory: 64, Time: 1, SaltLen: 16, KeyLen: 32},
		"tiny salt":  {Memory: 64, Time: 1, Threads: 1, SaltLen: 4, KeyLen: 32},
		"tiny key":   {Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 4},
	}
	for name, p := range cases {
		_, err := password.NewHasher(p, 1)
		assert.Error(t, err, name)
	}
}
