package bench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/daprc"
)

// Hop is the smallest gateway there can be: an HTTP server whose one handler
// makes the gateway's backend call the way the gateway makes it by default
// (the sidecar's HTTP invocation API; -grpc: the go-sdk over its gRPC API)
// and writes back what it got. The benchmark runs it as its own process to
// show what the extra process alone costs, GraphQL aside.
func Hop(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("daca hop", flag.ContinueOnError)
	grpcAddr := fs.String("grpc", "", "call the sidecar's gRPC API at this address (go-sdk) instead of its HTTP API")
	httpPort := fs.Int("http-port", 0, "the sidecar's HTTP API port")
	if err := fs.Parse(args); err != nil {
		return UsageError(err.Error())
	}
	token := os.Getenv("DACA_HOP_TOKEN")
	var invoke func(ctx context.Context, method string) ([]byte, error)
	if *grpcAddr != "" {
		sdk, err := daprc.Dial(ctx, *grpcAddr, token, slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		defer sdk.Close()
		invoke = func(ctx context.Context, method string) ([]byte, error) {
			return sdk.InvokeMethod(ctx, contract.MemoryApp, method, http.MethodGet)
		}
	} else {
		sidecar := daprc.NewHTTP(*httpPort, token)
		invoke = func(ctx context.Context, method string) ([]byte, error) {
			status, b, err := sidecar.Invoke(ctx, contract.MemoryApp, method, http.MethodGet, nil, nil)
			if err == nil && status != http.StatusOK {
				err = fmt.Errorf("status %d", status)
			}
			return b, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := invoke(r.Context(), strings.TrimPrefix(r.URL.Path, "/"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "daca hop:", err)
			http.Error(w, "backend call failed", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})}
	go func() { <-ctx.Done(); srv.Close() }()
	fmt.Println(ln.Addr().String())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startHop runs `daca hop` as a child process and returns its base URL.
func startHop(ctx context.Context, httpPort int, token string) (string, *exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, self, "hop", "-http-port", strconv.Itoa(httpPort))
	cmd.Env = append(os.Environ(), "DACA_HOP_TOKEN="+token)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		addr <- strings.TrimSpace(line)
	}()
	select {
	case a := <-addr:
		if a == "" {
			cmd.Process.Kill()
			cmd.Wait()
			return "", nil, errors.New("bench: daca hop did not start")
		}
		return "http://" + a, cmd, nil
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		return "", nil, errors.New("bench: daca hop did not start within 30s")
	}
}
