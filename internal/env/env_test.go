package env

import (
	"strings"
	"testing"
	"time"
)

func reader(vars map[string]string) *Reader {
	return &Reader{Lookup: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }}
}

func TestReader(t *testing.T) {
	t.Parallel()
	r := reader(map[string]string{"S": "x", "EMPTY": "", "I": "7", "D": "1.5s", "B": "true"})
	if got := r.String("S", "d"); got != "x" {
		t.Errorf("String = %q", got)
	}
	if got := r.String("EMPTY", "d"); got != "d" {
		t.Errorf("an empty variable: %q; want the default", got)
	}
	if got := r.String("MISSING", "d"); got != "d" {
		t.Errorf("a missing variable: %q; want the default", got)
	}
	if got := r.Int("I", 1, 0, 10); got != 7 {
		t.Errorf("Int = %d", got)
	}
	if got := r.Duration("D", time.Second); got != 1500*time.Millisecond {
		t.Errorf("Duration = %s", got)
	}
	if got := r.Bool("B", false); !got {
		t.Error("Bool = false")
	}
	if err := r.Err(); err != nil {
		t.Errorf("valid values: %v", err)
	}
}

// TestReaderCollectsEveryInvalidValue: each bad value falls back to its
// default and is named in one error, so a service refuses to start with
// every problem at once.
func TestReaderCollectsEveryInvalidValue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, value string
		read        func(*Reader) any
		want        any
	}{
		{"not an int", "seven", func(r *Reader) any { return r.Int("V", 3, 0, 10) }, 3},
		{"below the range", "-1", func(r *Reader) any { return r.Int("V", 3, 0, 10) }, 3},
		{"above the range", "11", func(r *Reader) any { return r.Int("V", 3, 0, 10) }, 3},
		{"not a duration", "soon", func(r *Reader) any { return r.Duration("V", time.Second) }, time.Second},
		{"a negative duration", "-1s", func(r *Reader) any { return r.Duration("V", time.Second) }, time.Second},
		{"not a bool", "maybe", func(r *Reader) any { return r.Bool("V", true) }, true},
	}
	all := &Reader{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := reader(map[string]string{"V": tt.value})
			if got := tt.read(r); got != tt.want {
				t.Fatalf("got %v; want the default %v", got, tt.want)
			}
			if err := r.Err(); err == nil || !strings.Contains(err.Error(), "V="+`"`+tt.value+`"`) {
				t.Fatalf("err %v; want one naming V=%q", err, tt.value)
			}
			all.errs = append(all.errs, r.errs...)
		})
	}
	if n := strings.Count(all.Err().Error(), "V="); n != len(tests) {
		t.Fatalf("%d problems in the joined error; want %d", n, len(tests))
	}
}
