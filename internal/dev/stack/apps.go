package stack

import "github.com/daca-go/daca/internal/contract"

// Def is one of the system's apps, defined once: `daca up` runs it on the
// tutorial's ports, `daca bench` and every end-to-end TestMain on free ports.
type Def struct {
	ID      string
	Short   string // daca up's flag and environment prefix: memory, chat, gateway
	Dir     string // its main package, from the repository root
	Health  string // its health path
	Secrets []string
	// WaitReady: started and ready before the next app starts (App.WaitReady).
	WaitReady bool
	// HotReload: its sidecar loads changed resources without a restart
	// (DACA_HOT_RELOAD in components/config.yaml): chat-service's, for MCPServers.
	HotReload bool

	// The ports of `daca up` (the tutorial's): app, sidecar HTTP, sidecar gRPC.
	Port, HTTPPort, GRPCPort int
}

// The system's apps.
var (
	Memory = Def{ID: contract.MemoryApp, Short: "memory", Dir: "services/memory", Health: "/health",
		Secrets: []string{contract.SecretLLMKey}, Port: 8001, HTTPPort: 3501, GRPCPort: 50002}
	// Tools is the reference tool server (MCP), up before chat-service's
	// sidecar discovers its tools.
	Tools = Def{ID: contract.ToolApp, Short: "tools", Dir: "services/tools", Health: "/health",
		Secrets: []string{contract.SecretToolToken}, WaitReady: true, Port: 8020, HTTPPort: 3503, GRPCPort: 50004}
	Chat = Def{ID: contract.ChatApp, Short: "chat", Dir: "services/chat", Health: "/health",
		Secrets: []string{contract.SecretLLMKey, contract.SecretToolToken}, HotReload: true, Port: 8010, HTTPPort: 3500, GRPCPort: 50001}
	Gateway = Def{ID: contract.GatewayApp, Short: "gateway", Dir: "gateway", Health: "/healthz",
		Secrets: []string{contract.SecretJWT}, Port: 8080, HTTPPort: 3502, GRPCPort: 50003}

	// System is every app, in start order.
	System = []Def{Memory, Tools, Chat, Gateway}
)

// App is the app built from its package, on free ports, with env added to
// its environment.
func (d Def) App(env ...string) App {
	return App{ID: d.ID, Build: "./" + d.Dir, HealthPath: d.Health, Secrets: d.Secrets, Env: env, WaitReady: d.WaitReady, HotReload: d.HotReload}
}

// Named is App under another name: a second replica of the same app id.
func (d Def) Named(name string, env ...string) App {
	a := d.App(env...)
	a.Name = name
	return a
}

// Apps is every app of System, each with env.
func Apps(env ...string) []App {
	out := make([]App, len(System))
	for i, d := range System {
		out[i] = d.App(env...)
	}
	return out
}
