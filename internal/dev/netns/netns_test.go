package netns

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/daca-go/daca/internal/dev/testkit"
)

// TestNetwork: two hosts reach each other across the bridge (a listener on
// one, a dial from the other, and from the root namespace); a cut host
// reaches nobody until it is restored; Remove leaves nothing behind, and
// Create cleans up what a killed run left.
func TestNetwork(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	n, err := Create("dnt", "10.78.9", 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Remove() })
	h1, h2 := n.Host("h1"), n.Host("h2")
	if h1 == nil || h2 == nil || h1.Addr != "10.78.9.1" || h2.Addr != "10.78.9.2" || n.Bridge() != "10.78.9.254" {
		t.Fatalf("hosts %+v %+v", h1, h2)
	}
	// A listener on h2 (nc from Debian's netcat-openbsd is not always
	// there: python3 is).
	path, args := h2.Command("python3", "-c", `import socket
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("10.78.9.2", 7070)); s.listen(8)
while True:
    c,_=s.accept(); c.sendall(b"h2\n"); c.close()`)
	srv := exec.Command(path, args...)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	dial := func(from *Host) error {
		code := `import socket,sys
s=socket.create_connection(("10.78.9.2", 7070), timeout=1); sys.stdout.write(s.recv(10).decode())`
		var cmd *exec.Cmd
		if from == nil { // the root namespace, across the bridge
			c, err := net.DialTimeout("tcp", "10.78.9.2:7070", time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			b := make([]byte, 3)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := c.Read(b); err != nil || string(b) != "h2\n" {
				return fmt.Errorf("read %q: %v", b, err)
			}
			return nil
		}
		path, args := from.Command("python3", "-c", code)
		cmd = exec.Command(path, args...)
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "h2" {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	testkit.WaitFor(t, 10*time.Second, "h1 → h2 (the listener starting)", func() error { return dial(h1) })
	if err := dial(nil); err != nil {
		t.Fatalf("root → h2: %v", err)
	}
	if err := h2.Cut(); err != nil {
		t.Fatal(err)
	}
	if err := dial(h1); err == nil {
		t.Fatal("h1 reached h2 while h2 was cut off")
	}
	if err := h2.Restore(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "h1 → h2 after the link came back", func() error { return dial(h1) })

	// A run killed before it removed its network: the next Create cleans up.
	again, err := Create("dnt", "10.78.9", 1)
	if err != nil {
		t.Fatalf("create over a leftover network: %v", err)
	}
	if err := again.Remove(); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	if strings.Contains(string(out), "dnt-") || strings.Contains(string(links), "dnt-") {
		t.Fatalf("left behind:\n%s\n%s", out, links)
	}
}
