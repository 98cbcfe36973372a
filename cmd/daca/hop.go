package main

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
	"strings"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/daprc"
)

// hop is the smallest gateway there can be: an HTTP server whose one handler
// makes the gateway's backend call (go-sdk, the sidecar's gRPC API) and
// writes back what it got. The benchmark runs it as its own process to show
// what the extra process alone costs, GraphQL aside.
func hop(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("daca hop", flag.ContinueOnError)
	grpcAddr := fs.String("grpc", "", "the sidecar's gRPC API address")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	sdk, err := daprc.Dial(ctx, *grpcAddr, os.Getenv("DACA_HOP_TOKEN"), slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer sdk.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := sdk.InvokeMethod(r.Context(), contract.MemoryApp, strings.TrimPrefix(r.URL.Path, "/"), http.MethodGet)
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
func startHop(ctx context.Context, grpcAddr, token string) (string, *exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, self, "hop", "-grpc", grpcAddr)
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
