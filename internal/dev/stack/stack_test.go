package stack

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestSecretsYAML(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{nil, "[]"},
		{[]string{"gemini-api-key"}, `["gemini-api-key"]`},
		{[]string{"a", "b"}, `["a", "b"]`},
	}
	for _, tt := range tests {
		if got := SecretsYAML(tt.in); got != tt.want {
			t.Errorf("SecretsYAML(%v) = %s; want %s", tt.in, got, tt.want)
		}
	}
}

func TestCheckFreeNamesTheTakenPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	free, _ := FreePort()
	tests := []struct {
		name  string
		ports []namedPort
		want  string
	}{
		{"free", []namedPort{{"a", free}}, ""},
		{"taken", []namedPort{{"a", free}, {"chat-service app", taken}}, "port " + strconv.Itoa(taken) + " (chat-service app) is already in use"},
		{"twice", []namedPort{{"a", free}, {"b", free}}, "configured twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkFree(tt.ports)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want %q", err, tt.want)
			}
			var pe *PortInUseError
			if tt.name == "taken" && (!errors.As(err, &pe) || pe.Port != taken) {
				t.Fatalf("not a PortInUseError: %v", err)
			}
		})
	}
}

func TestFreePortNeverRepeatsNorHandsOutAReservedPort(t *testing.T) {
	reserved, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	reserve([]namedPort{{"reserved", reserved + 1}})
	seen := map[int]bool{reserved: true}
	for range 200 {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] || p == reserved+1 {
			t.Fatalf("port %d handed out twice, or reserved", p)
		}
		seen[p] = true
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
