package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-playground/validator/v10"
	"github.com/joho/godotenv"
)

// ExitConfig is the process exit status for a configuration error
// (EX_CONFIG from sysexits.h), so orchestrators can tell it from a crash.
const ExitConfig = 78

// Problem is one missing or invalid variable.
type Problem struct {
	Var string
	// Check is the deploy check ID when the problem comes from one.
	Check  string
	Reason string
}

func (p Problem) String() string {
	if p.Check != "" {
		return fmt.Sprintf("%s: [%s] %s", p.Var, p.Check, p.Reason)
	}
	return p.Var + ": " + p.Reason
}

// Error lists every problem found while loading, so that an operator fixes
// them all in one round instead of one per restart. It never contains the
// value of a secret variable.
type Error struct {
	Profile  Profile
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	profile := string(e.Profile)
	if profile == "" {
		profile = "unknown; prod rules applied"
	}
	n := len(e.Problems)
	fmt.Fprintf(&b, "invalid configuration (profile %s): %d problem", profile, n)
	if n != 1 {
		b.WriteString("s")
	}
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Vars names the variables with problems, in contract order, without repeats.
func (e *Error) Vars() []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range e.Problems {
		if !seen[p.Var] {
			seen[p.Var] = true
			out = append(out, p.Var)
		}
	}
	return out
}

// Load reads the process environment (and a .env file when allowed) and
// validates it. On failure it returns the partially filled settings and an
// *Error; callers should print the error and exit with ExitConfig.
func Load() (*Settings, error) {
	return LoadFrom(os.LookupEnv)
}

// LoadFrom is Load over an arbitrary variable source (tests, the policy
// pack). The .env rule: the file is read only when NBMS_READ_DOTENV is true,
// which by default it is in dev alone; NBMS_ENV, NBMS_READ_DOTENV and
// NBMS_DOTENV_PATH come only from the real source, and its values always
// win over the file's.
func LoadFrom(lookup func(string) (string, bool)) (*Settings, error) {
	profile, _ := lookup(EnvProfile)
	profile = strings.TrimSpace(profile)
	read := Profile(profile) == Dev
	var early []Problem
	if raw, ok := lookup(EnvReadDotenv); ok && strings.TrimSpace(raw) != "" {
		b, err := strconv.ParseBool(strings.TrimSpace(raw))
		if err != nil {
			early = append(early, Problem{Var: EnvReadDotenv, Reason: fmt.Sprintf("%q is not a boolean (true or false)", clip(raw))})
		}
		read = b
	}
	if !read {
		s, err := parse(lookup, readSecretFile, early)
		if s != nil {
			s.ReadDotenv = false
		}
		return s, err
	}
	path := ".env"
	if raw, ok := lookup(EnvDotenvPath); ok && strings.TrimSpace(raw) != "" {
		path = strings.TrimSpace(raw)
	}
	file, err := godotenv.Read(path)
	_, explicit := lookup(EnvReadDotenv)
	switch {
	case errors.Is(err, os.ErrNotExist) && !explicit:
		// dev's default: a missing .env is normal.
	case err != nil:
		// The parse error may quote the file's lines, which may be secrets.
		early = append(early, Problem{Var: EnvDotenvPath, Reason: fmt.Sprintf("cannot read %s: %s", path, dotenvErrorKind(err))})
	}
	merged := func(name string) (string, bool) {
		if v, ok := lookup(name); ok {
			return v, true
		}
		switch name {
		case EnvProfile, EnvReadDotenv, EnvDotenvPath:
			return "", false
		}
		v, ok := file[name]
		return v, ok
	}
	s, perr := parse(merged, readSecretFile, early)
	if s != nil {
		s.ReadDotenv = true
		s.DotenvPath = path
	}
	return s, perr
}

func dotenvErrorKind(err error) string {
	if errors.Is(err, os.ErrNotExist) {
		return "file does not exist"
	}
	if errors.Is(err, os.ErrPermission) {
		return "permission denied"
	}
	return "syntax error"
}

// Parse validates a complete variable map (the .env rule does not apply).
// The policy pack uses it on a container's declared environment, which
// names secret files it cannot read: a secret given as NAME_FILE counts as
// set, its value is not validated (its field stays zero), and the deploy
// checks that read it are skipped.
func Parse(env map[string]string) (*Settings, error) {
	return parse(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil, nil)
}

// FileSuffix turns a secret variable's name into the name of the variable
// that gives the path of a file holding its value (SECRET_KEY_FILE): the
// convention of Docker's secrets and of the official database images, so
// that a secret never has to be in the container's environment, which
// `docker inspect` shows.
const FileSuffix = "_FILE"

// readSecretFile reads a secret file for LoadFrom. The value is the file's
// content; the surrounding white space (a trailing newline) is dropped like
// that of every value.
func readSecretFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	return string(data), err
}

// secretFileReason says why a secret file could not be read, without
// anything of its content.
func secretFileReason(path string, err error) string {
	kind := "read error"
	switch {
	case errors.Is(err, os.ErrNotExist):
		kind = "file does not exist"
	case errors.Is(err, os.ErrPermission):
		kind = "permission denied"
	}
	return fmt.Sprintf("cannot read %s: %s", path, kind)
}

var validate = sync.OnceValue(func() *validator.Validate { return validator.New() })

// parse reads every variable of the contract through lookup. A secret may
// come as NAME_FILE instead: readFile reads it, or, when readFile is nil
// (Parse), it counts as set without a value.
func parse(lookup func(string) (string, bool), readFile func(string) (string, error), problems []Problem) (*Settings, error) {
	s := &Settings{}
	rawProfile, _ := lookup(EnvProfile)
	profile := Profile(strings.TrimSpace(rawProfile))
	known := profile == Dev || profile == Test || profile == Prod
	rules := profile
	if !known {
		// Judge an unknown profile by the strictest rules, so the operator
		// sees everything production would demand in the same message.
		rules = Prod
	}
	bad := map[string]bool{}
	// unseen are secrets given as files that Parse cannot read.
	unseen := map[string]bool{}
	for _, v := range contract {
		if v.Name == EnvReadDotenv {
			continue // decided by LoadFrom from the real environment
		}
		raw, set := lookup(v.Name)
		raw = strings.TrimSpace(raw)
		if v.Secret {
			path, fromFile := lookup(v.Name + FileSuffix)
			path = strings.TrimSpace(path)
			switch {
			case !fromFile || path == "":
			case set && raw != "":
				problems = append(problems, Problem{Var: v.Name, Reason: "set either " + v.Name + " or " + v.Name + FileSuffix + ", not both"})
				bad[v.Name] = true
				continue
			case readFile == nil:
				unseen[v.Name] = true
				continue
			default:
				content, err := readFile(path)
				if err != nil {
					problems = append(problems, Problem{Var: v.Name + FileSuffix, Reason: secretFileReason(path, err)})
					bad[v.Name] = true
					continue
				}
				if raw, set = strings.TrimSpace(content), true; raw == "" {
					problems = append(problems, Problem{Var: v.Name + FileSuffix, Reason: path + " is empty"})
					bad[v.Name] = true
					continue
				}
			}
		}
		if !set || raw == "" {
			if v.RequiredIn(rules) {
				reason := fmt.Sprintf("required in %s but not set", rules)
				if v.Required == Always {
					reason = "required but not set"
				}
				problems = append(problems, Problem{Var: v.Name, Reason: reason})
				bad[v.Name] = true
				continue
			}
			raw = v.DefaultFor(rules)
		}
		if reason := v.assign(s, raw, rules == Prod); reason != "" {
			problems = append(problems, Problem{Var: v.Name, Reason: reason})
			bad[v.Name] = true
		}
	}
	if !known {
		s.Profile = ""
	}
	for _, c := range deployChecks {
		if !c.AppliesTo(rules) || anyBad(bad, c.Vars) || anyBad(unseen, c.Vars) {
			continue
		}
		if err := c.check(s); err != nil {
			problems = append(problems, Problem{Var: c.Vars[0], Check: c.ID, Reason: oneLine(err)})
		}
	}
	if len(problems) > 0 {
		return s, &Error{Profile: s.Profile, Problems: problems}
	}
	return s, nil
}

func anyBad(bad map[string]bool, names []string) bool {
	for _, n := range names {
		if bad[n] {
			return true
		}
	}
	return false
}

// Validate applies the variable's own rules (type, validator rules,
// semantic check) in profile p to one raw value, as loading would: an empty
// value means unset. The rules over the settings as a whole (the deploy
// checks) need every variable and are Parse's. The error never quotes a
// secret value.
func (v Var) Validate(raw string, p Profile) error {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		if v.RequiredIn(p) {
			return fmt.Errorf("required in %s but not set", p)
		}
		return nil
	}
	if reason := v.assign(&Settings{}, raw, p == Prod); reason != "" {
		return errors.New(reason)
	}
	return nil
}

// assign decodes raw into the variable's field, applies its validator rules
// and its check, and returns the reason it is invalid ("" when valid).
func (v Var) assign(s *Settings, raw string, production bool) string {
	shown := func() string {
		if v.Secret {
			return "the value"
		}
		return strconv.Quote(clip(raw))
	}
	var value any
	switch f := v.field(s).(type) {
	case *string:
		*f = raw
		value = raw
	case *Profile:
		*f = Profile(raw)
		value = raw
	case *bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Sprintf("%s is not a boolean (true or false)", shown())
		}
		*f, value = b, b
	case *int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return fmt.Sprintf("%s is not a whole number", shown())
		}
		*f, value = n, n
	case *int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fmt.Sprintf("%s is not a whole number of bytes", shown())
		}
		*f, value = n, n
	case *time.Duration:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Sprintf("%s is not a duration (e.g. 500ms, 30s, 5m)", shown())
		}
		*f, value = d, d
	case *[]string:
		list := splitList(raw)
		*f, value = list, list
	case *Rate:
		r, err := ParseRate(raw)
		if err != nil {
			return fmt.Sprintf("%s is not a rate: %v", shown(), err)
		}
		*f, value = r, r
	case *[]netip.Prefix:
		var prefixes []netip.Prefix
		for _, item := range splitList(raw) {
			p, err := ParsePrefix(item)
			if err != nil {
				return fmt.Sprintf("%q is not an IP network (CIDR) or address", clip(item))
			}
			prefixes = append(prefixes, p)
		}
		*f, value = prefixes, prefixes
	default:
		panic(fmt.Sprintf("config: %s is bound to an unsupported field type %T", v.Name, f))
	}
	if raw == "" {
		// Unset optional variable with an empty default: the feature is off.
		return ""
	}
	if v.Rules != "" {
		if err := validate().Var(value, v.Rules); err != nil {
			return fmt.Sprintf("%s does not satisfy %q", shown(), v.Rules)
		}
	}
	if v.check != nil {
		if err := v.check(value, production); err != nil {
			return oneLine(err)
		}
	}
	return ""
}

// ParsePrefix accepts a CIDR or a bare address (a single-host network).
// Host bits are cleared and IPv4-mapped IPv6 entries become IPv4, which is
// how peers are compared; zones are refused (a prefix never contains a
// zoned address).
func ParsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, err
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a.Zone() != "" {
			return netip.Prefix{}, errors.New("zones are not allowed")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// ParseTrustedProxies parses a list of trusted-proxy networks by the
// contract's rules (TRUSTED_PROXY_CIDRS): blank entries skipped, each a
// CIDR or an address, never a trust-everyone /0.
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, raw := range list {
		entry := strings.TrimSpace(raw)
		if entry == "" {
			continue
		}
		p, err := ParsePrefix(entry)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP network (CIDR) or address", clip(entry))
		}
		if err := checkTrustedProxy(p); err != nil {
			return nil, fmt.Errorf("%q: %w", entry, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func splitList(raw string) []string {
	var out []string
	for _, item := range strings.Split(raw, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// SecretValues returns every secret the settings hold, including passwords
// embedded in connection URLs, for the log redactor to scrub verbatim.
func (s *Settings) SecretValues() []string {
	var out []string
	for _, v := range contract {
		if !v.Secret {
			continue
		}
		switch f := v.field(s).(type) {
		case *string:
			if *f == "" {
				continue
			}
			out = append(out, *f)
			if u, err := url.Parse(*f); err == nil && u.User != nil {
				if p, ok := u.User.Password(); ok && p != "" {
					out = append(out, p, url.QueryEscape(p))
				} else if v.Name == "SENTRY_DSN" {
					out = append(out, u.User.Username())
				}
			}
		case *[]string:
			out = append(out, *f...)
		}
	}
	return out
}

// Production reports whether the settings are for the prod profile.
func (s *Settings) Production() bool { return s.Profile == Prod }
