// Package password hashes and verifies account passwords with Argon2id.
//
// Hashes are PHC strings, $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<key>
// (base64 without padding), so each stored hash carries the parameters it
// was made with: raising DefaultParams later keeps old hashes verifiable,
// and Verify reports them as needing a re-hash at the next login.
//
// Argon2id is memory-hard on purpose, which makes every hash cost
// DefaultParams.Memory of RAM. A Hasher therefore runs at most a fixed
// number of hashes at once and queues the rest (respecting the caller's
// context), so a burst of logins costs latency, not the container's memory.
package password

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Params are Argon2id cost parameters.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32 // passes over memory
	Threads uint8  // lanes
	SaltLen uint32 // bytes
	KeyLen  uint32 // bytes
}

// DefaultParams is the one place the cost is decided.
//
// m=19456 KiB (19 MiB), t=2, p=1 is one of the equivalent Argon2id
// configurations the OWASP Password Storage Cheat Sheet lists as the
// minimum; the others trade memory for passes (46 MiB/t=1 … 7 MiB/t=5).
// This one keeps a verification near 20 ms on one core and 19 MiB of RAM,
// which with DefaultMaxConcurrent bounds login hashing to 76 MiB. Raise it
// here when hardware allows; existing hashes keep working and are upgraded
// on their owner's next login (Verify's needsRehash).
var DefaultParams = Params{Memory: 19 * 1024, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

// DefaultMaxConcurrent is how many hashes the default Hasher runs at once:
// 4 × 19 MiB of Argon2 memory at most, about as many as two cores can
// usefully compute anyway.
const DefaultMaxConcurrent = 4

// Length policy. Lengths are in characters (code points) for the minimum,
// because that is what a person counts, and in bytes for the maximum,
// because that is what costs memory and time.
const (
	// MinLength follows NIST SP 800-63B-4 for passwords used as the only
	// factor (15), which ASVS 5.0 6.2.1 "strongly recommends" over its
	// floor of 8. NBMS has no second factor, so the stricter value applies.
	MinLength = 15
	// MaxBytes lets passphrases and password-manager output well past the
	// 64 characters ASVS 5.0 6.2.9 requires (even 64 four-byte characters
	// fit), while keeping a request from hashing megabytes. Longer input
	// is refused, never truncated (ASVS 5.0 6.2.8).
	MaxBytes = 1024
)

// Errors; test with errors.Is.
var (
	// ErrTooLong: the password exceeds MaxBytes.
	ErrTooLong = fmt.Errorf("password is longer than %d bytes", MaxBytes)
	// ErrTooShort: the password has fewer than MinLength characters.
	ErrTooShort = fmt.Errorf("password must have at least %d characters", MinLength)
	// ErrEmpty: the password is empty.
	ErrEmpty = errors.New("password is empty")
	// ErrMalformedHash: a stored hash is not a PHC Argon2id string this
	// package can verify (wrong algorithm or version, out-of-range
	// parameters, bad base64).
	ErrMalformedHash = errors.New("malformed password hash")
)

// CheckPolicy reports whether pw may be set as a new password. It checks
// length only: ASVS 5.0 6.2.5 forbids composition rules.
func CheckPolicy(pw string) error {
	switch {
	case len(pw) > MaxBytes:
		return ErrTooLong
	case utf8.RuneCountInString(pw) < MinLength:
		return ErrTooShort
	}
	return nil
}

// Bounds on parameters read from a stored hash. A corrupted or planted
// hash must not make Verify allocate gigabytes or spin for minutes.
const (
	maxMemoryKiB = 1 << 18 // 256 MiB
	maxTime      = 32
	maxThreads   = 16
	minSaltLen   = 8
	maxSaltLen   = 64
	minKeyLen    = 16
	maxKeyLen    = 64
	// maxHashLen is far above any hash within the bounds above; longer
	// input is refused before it is split.
	maxHashLen = 512
)

// Hasher hashes and verifies with fixed parameters and a bound on
// concurrent hashes. It is safe for concurrent use.
type Hasher struct {
	params Params
	slots  chan struct{}
	// dummy is a hash of a random password with params, verified when a
	// login names an unknown user so that it takes as long as a real one.
	dummy string
}

// NewHasher returns a Hasher with params running at most maxConcurrent
// hashes at once (at least 1). It computes one hash (the dummy) before
// returning.
func NewHasher(params Params, maxConcurrent int) (*Hasher, error) {
	if err := params.validate(); err != nil {
		return nil, err
	}
	h := &Hasher{params: params, slots: make(chan struct{}, max(maxConcurrent, 1))}
	dummy, err := h.Hash(context.Background(), rand.Text())
	if err != nil {
		return nil, err
	}
	h.dummy = dummy
	return h, nil
}

var defaultHasher = sync.OnceValue(func() *Hasher {
	h, err := NewHasher(DefaultParams, DefaultMaxConcurrent)
	if err != nil {
		panic("password: DefaultParams are invalid: " + err.Error())
	}
	return h
})

// Default returns the process-wide Hasher with DefaultParams and
// DefaultMaxConcurrent. It is built on first use, so commands that never
// hash pay nothing; the bound on concurrent hashes is only a bound if the
// whole process shares it.
func Default() *Hasher { return defaultHasher() }

// Hash hashes pw with the default Hasher.
func Hash(ctx context.Context, pw string) (string, error) { return Default().Hash(ctx, pw) }

// Verify checks pw against hash with the default Hasher.
func Verify(ctx context.Context, hash, pw string) (ok, needsRehash bool, err error) {
	return Default().Verify(ctx, hash, pw)
}

// VerifyDummy spends the time of a verification with the default Hasher.
func VerifyDummy(ctx context.Context, pw string) error { return Default().VerifyDummy(ctx, pw) }

// Hash returns the PHC string of pw under a fresh random salt. It refuses
// an empty password and one longer than MaxBytes; the length policy for
// new passwords is CheckPolicy's job.
func (h *Hasher) Hash(ctx context.Context, pw string) (string, error) {
	if err := checkInput(pw); err != nil {
		return "", err
	}
	salt := make([]byte, h.params.SaltLen)
	_, _ = rand.Read(salt) // crypto/rand.Read never fails (Go 1.24+)
	key, err := h.derive(ctx, pw, salt, h.params)
	if err != nil {
		return "", err
	}
	return encode(h.params, salt, key), nil
}

// Verify reports whether pw matches hash, in time independent of where
// they differ. needsRehash is true when pw matched but hash was made with
// other parameters than the Hasher's: the caller should store a new Hash
// while it has the plain password.
func (h *Hasher) Verify(ctx context.Context, hash, pw string) (ok, needsRehash bool, err error) {
	if err := checkInput(pw); err != nil {
		return false, false, err
	}
	p, salt, key, err := decode(hash)
	if err != nil {
		return false, false, err
	}
	got, err := h.derive(ctx, pw, salt, p)
	if err != nil {
		return false, false, err
	}
	if subtle.ConstantTimeCompare(got, key) != 1 {
		return false, false, nil
	}
	return true, p != h.params, nil
}

// VerifyDummy verifies pw against a hash no password matches, for the
// login of an unknown user: the answer then takes as long as a wrong
// password for a real user (ASVS 5.0 6.3.8). It returns only errors of
// waiting (ctx) or input; the result is always "no match".
func (h *Hasher) VerifyDummy(ctx context.Context, pw string) error {
	_, _, err := h.Verify(ctx, h.dummy, pw)
	return err
}

// Params returns the parameters new hashes are made with.
func (h *Hasher) Params() Params { return h.params }

// derive runs Argon2id once a slot is free, or gives up when ctx ends.
func (h *Hasher) derive(ctx context.Context, pw string, salt []byte, p Params) ([]byte, error) {
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("password: waiting to hash: %w", ctx.Err())
	}
	defer func() { <-h.slots }()
	return argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLen), nil
}

func checkInput(pw string) error {
	switch {
	case pw == "":
		return ErrEmpty
	case len(pw) > MaxBytes:
		return ErrTooLong
	}
	return nil
}

func (p Params) validate() error {
	switch {
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemoryKiB:
		return fmt.Errorf("password: memory %d KiB out of range", p.Memory)
	case p.Time < 1 || p.Time > maxTime:
		return fmt.Errorf("password: time %d out of range", p.Time)
	case p.Threads < 1 || p.Threads > maxThreads:
		return fmt.Errorf("password: threads %d out of range", p.Threads)
	case p.SaltLen < minSaltLen || p.SaltLen > maxSaltLen:
		return fmt.Errorf("password: salt length %d out of range", p.SaltLen)
	case p.KeyLen < minKeyLen || p.KeyLen > maxKeyLen:
		return fmt.Errorf("password: key length %d out of range", p.KeyLen)
	}
	return nil
}

const phcPrefix = "$argon2id$v=19$"

var b64 = base64.RawStdEncoding

func encode(p Params, salt, key []byte) string {
	return fmt.Sprintf("%sm=%d,t=%d,p=%d$%s$%s", phcPrefix, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// decode parses a PHC Argon2id string. Every failure is ErrMalformedHash;
// the reason is not worth more, and the hash itself must not be echoed.
func decode(hash string) (p Params, salt, key []byte, err error) {
	if len(hash) > maxHashLen {
		return Params{}, nil, nil, ErrMalformedHash
	}
	rest, ok := strings.CutPrefix(hash, phcPrefix)
	if !ok {
		return Params{}, nil, nil, ErrMalformedHash
	}
	fields := strings.Split(rest, "$")
	if len(fields) != 3 {
		return Params{}, nil, nil, ErrMalformedHash
	}
	m, t, threads, ok := parseCost(fields[0])
	if !ok {
		return Params{}, nil, nil, ErrMalformedHash
	}
	// Strict decoding: trailing bits must be zero, so every hash has one
	// spelling and a tampered last character is not silently accepted.
	salt, err1 := b64.Strict().DecodeString(fields[1])
	key, err2 := b64.Strict().DecodeString(fields[2])
	if err1 != nil || err2 != nil {
		return Params{}, nil, nil, ErrMalformedHash
	}
	p = Params{Memory: m, Time: t, Threads: threads, SaltLen: uint32(len(salt)), KeyLen: uint32(len(key))}
	if p.validate() != nil {
		return Params{}, nil, nil, ErrMalformedHash
	}
	return p, salt, key, nil
}

// parseCost parses "m=<uint>,t=<uint>,p=<uint>" in that order, the only
// order this package writes.
func parseCost(s string) (m, t uint32, p uint8, ok bool) {
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return 0, 0, 0, false
	}
	values := [3]uint64{}
	for i, name := range [3]string{"m=", "t=", "p="} {
		digits, found := strings.CutPrefix(parts[i], name)
		// Leading zeros or signs would give one hash several spellings.
		if !found || digits == "" || (len(digits) > 1 && digits[0] == '0') || digits[0] == '+' {
			return 0, 0, 0, false
		}
		v, err := strconv.ParseUint(digits, 10, 32)
		if err != nil {
			return 0, 0, 0, false
		}
		values[i] = v
	}
	if values[2] > 255 {
		return 0, 0, 0, false
	}
	return uint32(values[0]), uint32(values[1]), uint8(values[2]), true
}
