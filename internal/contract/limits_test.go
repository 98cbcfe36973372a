package contract

import (
	"regexp"
	"strings"
	"testing"
)

// TestValidIDIsIDPattern: the byte loop accepts exactly what IDPattern,
// the documented rule, matches.
func TestValidIDIsIDPattern(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(IDPattern)
	tests := []struct {
		id   string
		want bool
	}{
		{"junaid", true},
		{"user@example.com", true},
		{"a:b-c_d.e", true},
		{"9", true},
		{"Z_", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{"a||b", false},
		{"-leading", false},
		{"_leading", false},
		{".", false},
		{"../etc", false},
		{"a b", false},
		{"a\n", false},
		{"ünï", false},
		{"a/b", false},
		{"a\x00", false},
	}
	for _, tt := range tests {
		if got := ValidID(tt.id); got != tt.want || re.MatchString(tt.id) != tt.want {
			t.Errorf("ValidID(%q) = %v, IDPattern matches: %v; want %v", tt.id, got, re.MatchString(tt.id), tt.want)
		}
	}
}

func FuzzValidIDIsIDPattern(f *testing.F) {
	re := regexp.MustCompile(IDPattern)
	for _, s := range []string{"a", "a-b", "-a", "a b", strings.Repeat("x", 128), "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidID(s) != re.MatchString(s) {
			t.Fatalf("ValidID(%q) = %v; IDPattern says %v", s, ValidID(s), re.MatchString(s))
		}
	})
}
