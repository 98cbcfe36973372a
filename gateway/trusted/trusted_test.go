package trusted

import (
	"os"
	"path/filepath"
	"testing"
)

func TestManifests(t *testing.T) {
	t.Parallel()
	q1, q2 := "query A { health { status } }", "query B { tools { name } }"
	dir := t.TempDir()
	apollo := filepath.Join(dir, "apollo.json")
	os.WriteFile(apollo, []byte(`{"format":"apollo-persisted-query-manifest","version":1,"operations":[{"id":"`+Hash(q1)+`","name":"A","type":"query","body":"`+q1+`"}]}`), 0o644)
	codegen := filepath.Join(dir, "persisted-documents.json")
	os.WriteFile(codegen, []byte(`{"`+Hash(q2)+`":"`+q2+`"}`), 0o644)
	m := New("query Page { health { status } }")
	if err := m.Load(apollo, codegen); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id, want string
		ok       bool
	}{
		{Hash(q1), q1, true},
		{"sha256:" + Hash(q2), q2, true},
		{Hash("query Page { health { status } }"), "query Page { health { status } }", true},
		{Hash("{ x }"), "", false},
	}
	for _, tt := range tests {
		if got, ok := m.Lookup(tt.id); got != tt.want || ok != tt.ok {
			t.Errorf("Lookup(%s) = %q %v", tt.id, got, ok)
		}
	}
	if !m.Trusts(q2) || m.Trusts(q2+" ") || m.Len() != 3 {
		t.Fatalf("Trusts / Len wrong: %d", m.Len())
	}
	for _, bad := range []string{`{"format":"other","operations":[]}`, `[1,2]`, `{"x":""}`} {
		if err := New().Parse([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	if _, err := ParseMode("strict"); err == nil {
		t.Error("a bad mode accepted")
	}
	if m, err := ParseMode(""); err != nil || m != Off {
		t.Errorf("default mode %q %v", m, err)
	}
}
