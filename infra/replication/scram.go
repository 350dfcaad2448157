package replication

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// scramIterations is PostgreSQL 15's scram_iterations (fixed at 4096
// before PostgreSQL 16 made it a setting).
const scramIterations = 4096

// minSaltLen is the length of the salts PostgreSQL makes itself.
const minSaltLen = 16

// ValidPassword reports whether password can be the replication role's:
// printable ASCII without spaces. So SASLprep, which PostgreSQL and libpq
// apply to a SCRAM password, leaves it as it is (SCRAMVerifier needs no
// Unicode normalisation), and it is one line of the password file.
func ValidPassword(password string) bool { return checkPassword(password) == nil }

func checkPassword(password string) error {
	if password == "" || strings.ContainsFunc(password, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		// Never the value: it is a secret.
		return errors.New("replication: the password must be non-empty printable ASCII without spaces")
	}
	return nil
}

// SCRAMVerifier returns the SCRAM-SHA-256 verifier of password with salt,
// in the form PostgreSQL stores (pg_authid.rolpassword) and accepts in
// ALTER ROLE ... PASSWORD as is (RFC 5802 and 7677):
//
//	SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
//
// with SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, 4096),
// StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key")) and ServerKey =
// HMAC(SaltedPassword, "Server Key"), all base64. The server can check a
// password against it but not recover the password. The same password
// and salt always give the same verifier: a caller that keeps its salt
// (the infra program, in its state) renders the same SQL at every deploy.
// The salt must be random, at least 16 bytes.
func SCRAMVerifier(password string, salt []byte) (string, error) {
	if err := checkPassword(password); err != nil {
		return "", err
	}
	if len(salt) < minSaltLen {
		return "", fmt.Errorf("replication: the SCRAM salt must be at least %d random bytes, got %d", minSaltLen, len(salt))
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, scramIterations, sha256.Size)
	if err != nil {
		return "", err
	}
	storedKey := sha256.Sum256(hmacSHA256(salted, "Client Key"))
	serverKey := hmacSHA256(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", scramIterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

func hmacSHA256(key []byte, message string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(message))
	return m.Sum(nil)
}
