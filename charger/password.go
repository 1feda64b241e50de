package charger

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// Password hashes use Mosquitto's own password-file format ("$7$": PBKDF2
// with HMAC-SHA512, `$7$<iterations>$<base64 salt>$<base64 key>`, 12-byte
// salt, 64-byte key), so one hash from the charger registry works both in
// the embedded broker and in a mosquitto password_file
// (`<charger id>:<hash>` per line). mosquitto_passwd writes 101 iterations;
// we write more, which Mosquitto 2 reads from the hash itself.
const (
	hashIterations = 20000 // charger passwords are random machine secrets; this bounds reconnect-storm CPU
	hashSaltLen    = 12
	hashKeyLen     = 64
	hashPrefix     = "$7$"
)

// HashPassword returns a salted PBKDF2-SHA512 hash of pw in Mosquitto's
// "$7$" format, for the charger registry and deploy/mosquitto password files.
func HashPassword(pw string) (string, error) {
	salt := make([]byte, hashSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: salt: %w", err)
	}
	key, err := pbkdf2.Key(sha512.New, pw, salt, hashIterations, hashKeyLen)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return hashPrefix + strconv.Itoa(hashIterations) + "$" + base64.StdEncoding.EncodeToString(salt) + "$" +
		base64.StdEncoding.EncodeToString(key), nil
}

// CheckPassword reports whether pw matches hash (a "$7$" hash as written by
// HashPassword or mosquitto_passwd). A malformed hash never matches. The
// comparison is constant-time.
func CheckPassword(hash, pw string) bool {
	rest, ok := strings.CutPrefix(hash, hashPrefix)
	if !ok {
		return false
	}
	parts := strings.Split(rest, "$")
	if len(parts) != 3 {
		return false
	}
	iter, err := strconv.Atoi(parts[0])
	// The upper bound keeps a corrupt registry entry from pinning a CPU.
	if err != nil || iter < 1 || iter > 10_000_000 {
		return false
	}
	salt, err1 := base64.StdEncoding.DecodeString(parts[1])
	want, err2 := base64.StdEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || len(salt) == 0 || len(want) == 0 {
		return false
	}
	got, err := pbkdf2.Key(sha512.New, pw, salt, iter, len(want))
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(got, want) == 1
}
