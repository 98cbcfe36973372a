package stack

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/contract"
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
			start := time.Now()
			err := checkFree(tt.ports, time.Minute, io.Discard)
			if time.Since(start) > 10*time.Second {
				t.Fatalf("checkFree waited %s for a port held by a listener", time.Since(start))
			}
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

func TestHolderOf(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:C351 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C352 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:C353 0100007F:1F90 06 00000000:00000000 03:00000F9E 00000000     0        0 0 3 0000000000000000
   3: 0100007F:C354 0100007F:1F90 06 00000000:00000000 03:00000F9E 00000000     0        0 0 3 0000000000000000
   4: 0100007F:C354 0100007F:1F91 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
`
	tests := []struct {
		port int
		want string
	}{
		{0xC351, holderListener},
		{0xC352, holderConnection},
		{0xC353, holderClosed},
		{0xC354, holderConnection}, // one open beside one closed
		{0xC355, ""},
	}
	for _, tt := range tests {
		if got := holderOf(tcpStates(table, tt.port)); got != tt.want {
			t.Errorf("port %d: %q; want %q", tt.port, got, tt.want)
		}
	}
}

// TestPortHeldByAConnection: a configured port that an open connection uses
// as its local port (the kernel hands out Dapr's default ports to outgoing
// connections) is told apart from a listener, waited for, and named in the
// error when it stays taken.
func TestPortHeldByAConnection(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			defer c.Close()
			io.Copy(io.Discard, c)
		}
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	port := conn.LocalAddr().(*net.TCPAddr).Port
	if h := portHolder(port); h != holderConnection {
		t.Fatalf("portHolder(%d) = %q; want %q", port, h, holderConnection)
	}
	if h := portHolder(l.Addr().(*net.TCPAddr).Port); h != holderListener {
		t.Fatalf("the listener's port: %q; want %q", h, holderListener)
	}
	var progress strings.Builder
	err = checkFree([]namedPort{{"agent-memory-service sidecar gRPC", port}}, 1500*time.Millisecond, &progress)
	var pe *PortInUseError
	if !errors.As(err, &pe) || pe.Holder != holderConnection || !strings.Contains(err.Error(), "local port of an open TCP connection") {
		t.Fatalf("err = %v; want a PortInUseError saying an open connection holds it", err)
	}
	if !strings.Contains(progress.String(), "waiting up to 2s") {
		t.Fatalf("progress %q; want it to say it waits", progress.String())
	}
}

// TestResourcesDir: another broker's files replace those of the same name in
// components/, and everything else is the components directory's own.
func TestResourcesDir(t *testing.T) {
	comp := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(comp, "pubsub.yaml"), "redis")
	write(filepath.Join(comp, "statestore.yaml"), "state")
	write(filepath.Join(comp, "brokers", "rabbitmq", "pubsub.yaml"), "rabbitmq")
	write(filepath.Join(comp, mcpServerFile), "url: http://"+toolAddr+"/mcp")

	tests := []struct {
		broker string
		want   map[string]string // file: content; nil: the components directory itself
		err    string
	}{
		{BrokerRedis, map[string]string{"pubsub.yaml": "redis", "statestore.yaml": "state", mcpServerFile: "url: http://127.0.0.1:9123/mcp"}, ""},
		{BrokerRabbitMQ, map[string]string{"pubsub.yaml": "rabbitmq", "statestore.yaml": "state", mcpServerFile: "url: http://127.0.0.1:9123/mcp"}, ""},
		{"nats", nil, "no component files"},
	}
	for _, tt := range tests {
		t.Run(tt.broker, func(t *testing.T) {
			c := Config{Components: comp, RunDir: t.TempDir(), Broker: tt.broker}
			dir, err := c.resourcesDir(9123) // the stack's tool server on 9123
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v; want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			entries, _ := os.ReadDir(dir)
			got := map[string]string{}
			for _, e := range entries {
				b, err := os.ReadFile(filepath.Join(dir, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				got[e.Name()] = string(b)
			}
			if !maps.Equal(got, tt.want) {
				t.Fatalf("resources %v; want %v", got, tt.want)
			}
		})
	}
}

// TestRabbitDefinitions: the committed definitions gain a user with
// RabbitMQ's salted SHA-256 hash of the password and rights on every vhost.
func TestRabbitDefinitions(t *testing.T) {
	b, err := rabbitDefinitions("../../../components/brokers/rabbitmq/definitions.json", "u", "secret")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Users []struct {
			Name         string
			PasswordHash string `json:"password_hash"`
		}
		Permissions []struct{ User, VHost string }
		Policies    []struct{ Pattern string }
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Users) != 1 || len(d.Permissions) != 1 || d.Permissions[0].VHost != "/" || len(d.Policies) != 1 || d.Policies[0].Pattern != "^gateway-" {
		t.Fatalf("definitions: %s", b)
	}
	raw, err := base64.StdEncoding.DecodeString(d.Users[0].PasswordHash)
	if err != nil || len(raw) != 4+sha256.Size {
		t.Fatalf("hash %q: %v", d.Users[0].PasswordHash, err)
	}
	sum := sha256.Sum256(append(append([]byte{}, raw[:4]...), "secret"...))
	if !bytes.Equal(raw[4:], sum[:]) {
		t.Fatal("the hash is not sha256(salt ‖ password)")
	}
	if strings.Contains(string(b), "secret") {
		t.Fatal("the password is in the definitions")
	}
}

// TestResourcesWithoutToolServer: a stack without the tool server gives
// chat-service's sidecar no MCPServer to discover.
func TestResourcesWithoutToolServer(t *testing.T) {
	t.Parallel()
	comp := t.TempDir()
	os.WriteFile(filepath.Join(comp, "pubsub.yaml"), []byte("redis"), 0o644)
	os.WriteFile(filepath.Join(comp, mcpServerFile), []byte("url: http://"+toolAddr+"/mcp"), 0o644)
	c := Config{Components: comp, RunDir: t.TempDir(), Broker: BrokerRedis}
	dir, err := c.resourcesDir(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, mcpServerFile)); !os.IsNotExist(err) {
		t.Fatalf("%s in a stack without the tool server: %v", mcpServerFile, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pubsub.yaml")); err != nil {
		t.Fatal(err)
	}
}

// TestEnsureToolToken: a secrets file without a tool token gets a random
// one, keeping its other secrets; one with a token is left alone.
func TestEnsureToolToken(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "secrets.json")
	os.WriteFile(path, []byte(`{"gemini-api-key": "k", "tool-server-token": ""}`), 0o600)
	wrote, err := ensureToolToken(path)
	if err != nil || !wrote {
		t.Fatalf("ensureToolToken = %v, %v; want a token written", wrote, err)
	}
	var got map[string]string
	b, _ := os.ReadFile(path)
	json.Unmarshal(b, &got)
	if got["gemini-api-key"] != "k" || len(got[contract.SecretToolToken]) < 16 {
		t.Fatalf("secrets %v", got)
	}
	if wrote, err = ensureToolToken(path); err != nil || wrote {
		t.Fatalf("second call: %v, %v; want nothing written", wrote, err)
	}
	b2, _ := os.ReadFile(path)
	if string(b2) != string(b) {
		t.Fatal("the token changed")
	}
}
