// Package env reads configuration from environment variables with defaults,
// collecting every invalid value so a service can refuse to start with one
// clear message.
package env

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Reader reads variables from a lookup function (os.LookupEnv by default).
type Reader struct {
	Lookup func(string) (string, bool)
	errs   []error
}

// New returns a Reader of the process environment.
func New() *Reader { return &Reader{Lookup: os.LookupEnv} }

func (r *Reader) get(k string) (string, bool) {
	v, ok := r.Lookup(k)
	return v, ok && v != ""
}

// String returns the variable or def.
func (r *Reader) String(k, def string) string {
	if v, ok := r.get(k); ok {
		return v
	}
	return def
}

// Int returns the variable as an int in [min, max], or def.
func (r *Reader) Int(k string, def, min, max int) int {
	v, ok := r.get(k)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		r.errs = append(r.errs, fmt.Errorf("%s=%q: want an integer from %d to %d", k, v, min, max))
		return def
	}
	return n
}

// Duration returns the variable as a positive duration, or def.
func (r *Reader) Duration(k string, def time.Duration) time.Duration {
	v, ok := r.get(k)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		r.errs = append(r.errs, fmt.Errorf("%s=%q: want a duration such as 30s", k, v))
		return def
	}
	return d
}

// Bool returns the variable as a bool, or def.
func (r *Reader) Bool(k string, def bool) bool {
	v, ok := r.get(k)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("%s=%q: want true or false", k, v))
		return def
	}
	return b
}

// Err returns every invalid value found so far.
func (r *Reader) Err() error { return errors.Join(r.errs...) }
