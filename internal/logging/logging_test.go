package logging

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// countingHandler counts WithAttrs calls (the work With used to do on
// every request).
type countingHandler struct {
	slog.Handler
	mu    *sync.Mutex
	withs *int
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h.mu.Lock()
	*h.withs++
	h.mu.Unlock()
	return countingHandler{Handler: h.Handler.WithAttrs(as), mu: h.mu, withs: h.withs}
}

func TestWithCarriesAttributesAndIsBuiltOnFirstUse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		scopes [][]any // With calls, outermost first
		logs   int     // lines logged through From
		want   []string
		withs  int // WithAttrs calls made
	}{
		{name: "no With", logs: 1, want: []string{"msg=line"}},
		{name: "one With, no line", scopes: [][]any{{"request_id", "r1"}}, withs: 0},
		{name: "one With", scopes: [][]any{{"request_id", "r1"}}, logs: 2, want: []string{"request_id=r1"}, withs: 1},
		{name: "nested", scopes: [][]any{{"request_id", "r1"}, {"turn", "t1"}}, logs: 1, want: []string{"request_id=r1", "turn=t1"}, withs: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			n := 0
			base := slog.New(countingHandler{Handler: slog.NewTextHandler(&buf, nil), mu: &sync.Mutex{}, withs: &n})
			ctx := context.Background()
			for _, args := range tt.scopes {
				ctx = With(ctx, base, args...)
			}
			for range tt.logs {
				From(ctx, base).Info("line")
			}
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if tt.logs > 0 && len(lines) != tt.logs {
				t.Fatalf("%d lines, want %d: %q", len(lines), tt.logs, buf.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("line %q lacks %q", lines[0], w)
				}
			}
			if n != tt.withs {
				t.Errorf("WithAttrs called %d times, want %d", n, tt.withs)
			}
		})
	}
}

// TestFromIsSafeConcurrently: goroutines of one request share its logger.
func TestFromIsSafeConcurrently(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	var mu sync.Mutex
	base := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil))
	ctx := With(context.Background(), base, "request_id", "r1")
	var wg sync.WaitGroup
	got := make([]*slog.Logger, 8)
	for i := range got {
		wg.Go(func() { got[i] = From(ctx, base) })
	}
	wg.Wait()
	for _, l := range got {
		if l != got[0] {
			t.Fatal("From built more than one logger for one context")
		}
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
