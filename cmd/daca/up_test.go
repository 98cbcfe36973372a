package main

import (
	"slices"
	"testing"
)

func TestPassThrough(t *testing.T) {
	got := passThrough([]string{"LLM_BASE_URL=http://x", "HOME=/root", "AUTH_MODE=jwt", "DAPR_API_TOKEN=secret",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://c", "GEMINI_API_KEY=nope", "CHAT_TIMEOUT=30s"})
	want := []string{"LLM_BASE_URL=http://x", "AUTH_MODE=jwt", "OTEL_EXPORTER_OTLP_ENDPOINT=http://c", "CHAT_TIMEOUT=30s"}
	if !slices.Equal(got, want) {
		t.Fatalf("passThrough = %v; want %v", got, want)
	}
}

func TestHasMain(t *testing.T) {
	for dir, want := range map[string]bool{"../../services/chat": true, "../../gateway": true, "../../internal/chat": false, "../../nope": false} {
		if got := hasMain(dir); got != want {
			t.Errorf("hasMain(%s) = %v; want %v", dir, got, want)
		}
	}
}
