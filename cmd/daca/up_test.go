package main

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/daca-go/daca/internal/dev/stack"
)

func TestPassThrough(t *testing.T) {
	got := passThrough([]string{"LLM_BASE_URL=http://x", "HOME=/root", "AUTH_MODE=jwt", "DAPR_API_TOKEN=secret",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://c", "GEMINI_API_KEY=nope", "CHAT_TIMEOUT=30s"})
	want := []string{"LLM_BASE_URL=http://x", "AUTH_MODE=jwt", "OTEL_EXPORTER_OTLP_ENDPOINT=http://c", "CHAT_TIMEOUT=30s"}
	if !slices.Equal(got, want) {
		t.Fatalf("passThrough = %v; want %v", got, want)
	}
}

// TestUpConfig: daca up runs the system's apps (stack.System) on the
// tutorial's ports unless the environment or a flag says otherwise; flags
// win.
func TestUpConfig(t *testing.T) {
	t.Setenv("CHAT_PORT", "9010")
	t.Setenv("GATEWAY_DAPR_GRPC_PORT", "51003")
	c, err := parseUp([]string{"-root", "../..", "-gateway-port", "9080"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.stackConfig("/nonexistent/secrets.json")
	got := map[string][3]int{}
	for _, a := range cfg.Apps {
		if a.Build == "" || a.Command != nil {
			t.Errorf("%s is not built through the stack: Build %q", a.ID, a.Build)
		}
		got[a.ID] = [3]int{a.AppPort, a.HTTPPort, a.GRPCPort}
	}
	want := map[string][3]int{
		stack.Memory.ID:  {8001, 3501, 50002},
		stack.Tools.ID:   {8020, 3503, 50004},
		stack.Chat.ID:    {9010, 3500, 50001},
		stack.Gateway.ID: {9080, 3502, 51003},
	}
	if !maps.Equal(got, want) || cfg.PlacementPort != 50005 || cfg.SchedulerPort != 50006 || cfg.RedisPort != 6390 {
		t.Fatalf("apps %v, placement %d, scheduler %d, redis %d; want %v, 50005, 50006, 6390", got, cfg.PlacementPort, cfg.SchedulerPort, cfg.RedisPort, want)
	}
	if cfg.Broker != stack.BrokerRedis {
		t.Fatalf("default broker %q", cfg.Broker)
	}
	t.Setenv("BROKER", "rabbitmq")
	if c, err := parseUp([]string{"-root", "../.."}); err != nil || c.stackConfig("x").Broker != stack.BrokerRabbitMQ {
		t.Fatalf("BROKER=rabbitmq: %v", err)
	}
	if _, err := parseUp([]string{"-root", "../..", "-broker", "kafka"}); err == nil || !strings.Contains(err.Error(), "unknown broker") {
		t.Fatalf("-broker kafka: %v", err)
	}
	t.Setenv("BROKER", "")
	t.Setenv("CHAT_PORT", "port")
	if _, err := parseUp(nil); err == nil || !strings.Contains(err.Error(), "CHAT_PORT") {
		t.Fatalf("a bad port in the environment: %v", err)
	}
}
