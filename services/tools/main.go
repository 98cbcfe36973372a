// Command tools is the reference tool server (Dapr app id tool-server): an
// MCP server written with the official Go SDK, over streamable HTTP on
// contract.ToolPath, that chat-service's sidecar calls through Dapr's MCP
// workflows (components/mcpserver-tools.yaml). Its tools (tools.go) show both
// kinds an agent uses: read-only ones (convert_units, calculate, list_notes)
// and ones that change something (create_note, delete_note), marked with
// MCP's annotations. Notes are kept per user in the Dapr state store
// (notes.go), through the app's own sidecar.
//
// Only chat-service's sidecar may call the tools: every MCP request must
// carry the token (X-Tool-Token) that the MCPServer resource sends, read
// from the secret store (tool-server-token) on both sides (http.go). A token
// rather than Dapr service invocation: the MCP client of chat-service's
// sidecar talks streamable HTTP straight to the server, which Dapr's
// MCPServer supports with headers from the secret store, without a second
// proxy hop per message.
package main

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/env"
	"github.com/daca-go/daca/internal/service"
)

const appID = contract.ToolApp

type config struct {
	service.Common
	// For the fault suite only (unset in production): every tool call
	// waits delay first (TOOLS_DELAY), and every executed call is appended
	// to executions (TOOLS_EXECUTIONS_FILE) as "<call id> <tool>", a count
	// read from outside that survives the server's own restarts.
	delay      time.Duration
	executions string
}

func loadConfig() (config, error) {
	r := env.New()
	c := config{Common: service.ReadCommon(r, 8020),
		delay: r.Duration("TOOLS_DELAY", 0), executions: r.String("TOOLS_EXECUTIONS_FILE", "")}
	return c, r.Err()
}

func main() {
	cfg, err := loadConfig()
	service.Main(appID, err, cfg.Port, "/health", func(ctx context.Context) error { return run(ctx, cfg) })
}

func run(ctx context.Context, cfg config) error {
	var s *srv
	st, err := service.Start(ctx, appID, cfg.Common, nil, 10*time.Second, func(log *slog.Logger) http.Handler {
		s = newServer(log, cfg.AppToken)
		s.delay, s.executions = cfg.delay, cfg.executions
		return s.routes()
	})
	if err != nil {
		return err
	}
	defer st.Close()
	secret, err := st.Dapr.GetSecret(st.Init, contract.SecretStore, contract.SecretToolToken, nil)
	if err != nil {
		return err
	}
	s.ready(secret[contract.SecretToolToken], &notes{state: st.Dapr}, st.Dapr)
	st.Log.Info("ready", "mcp", contract.ToolPath)
	return st.Wait()
}
