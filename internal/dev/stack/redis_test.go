package stack

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/testkit"
)

func TestReadReply(t *testing.T) {
	tests := []struct {
		in   string
		want any
		err  string
	}{
		{"+OK\r\n", "OK", ""},
		{":42\r\n", int64(42), ""},
		{"$5\r\nhello\r\n", "hello", ""},
		{"$-1\r\n", nil, ""},
		{"*2\r\n$4\r\nname\r\n$9\r\ngateway-1\r\n", []any{"name", "gateway-1"}, ""},
		{"*1\r\n*2\r\n$3\r\nlag\r\n:0\r\n", []any{[]any{"lag", int64(0)}}, ""},
		{"-ERR no such key\r\n", nil, "ERR no such key"},
		{"?\r\n", nil, "unexpected reply"},
	}
	for _, tt := range tests {
		got, err := readReply(bufio.NewReader(strings.NewReader(tt.in)))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err %v; want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q = %#v, %v; want %#v", tt.in, got, err, tt.want)
		}
	}
}

// TestPruneGatewayGroups runs against a real redis-server.
func TestPruneGatewayGroups(t *testing.T) {
	if testing.Short() {
		t.Skip("needs redis-server")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	testkit.WaitFor(t, 10*time.Second, "redis-server to answer", func() error { return redisPing(addr) })
	if n, err := pruneGatewayGroups(addr); err != nil || n != 0 {
		t.Fatalf("empty Redis: %d, %v", n, err)
	}
	c, err := dialRedis(addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	do := func(args ...string) any {
		t.Helper()
		v, err := c.do(args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return v
	}
	for _, s := range contract.Topics {
		for _, g := range []string{"gateway-a", "gateway-b", "agent-memory-service"} {
			do("XGROUP", "CREATE", s, g, "$", "MKSTREAM")
		}
	}
	if n, err := pruneGatewayGroups(addr); err != nil || n != 2*len(contract.Topics) {
		t.Fatalf("pruned %d, %v; want the %d gateway groups", n, err, 2*len(contract.Topics))
	}
	for _, s := range contract.Topics {
		groups := do("XINFO", "GROUPS", s).([]any)
		if len(groups) != 1 || groups[0].([]any)[1] != "agent-memory-service" {
			t.Fatalf("%s keeps %v; want only agent-memory-service", s, groups)
		}
	}
}
