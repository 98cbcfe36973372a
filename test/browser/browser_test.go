// Package browser loads the GraphQL playground in headless Chromium (Debian's
// chromium package) against the real stack, runs a query from it and reads
// the result it shows.
package browser

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/daca-go/daca/internal/stack"
	"github.com/daca-go/daca/internal/stack/stacktest"
)

func TestMain(m *testing.M) {
	os.Exit(stacktest.Run(m, stacktest.Options{Apps: []stack.App{
		{ID: "agent-memory-service", Build: "./services/memory", HealthPath: "/health", Secrets: []string{"gemini-api-key"}},
		{ID: "chat-service", Build: "./services/chat", HealthPath: "/health", Secrets: []string{"gemini-api-key"}},
		{ID: "gateway", Build: "./gateway", HealthPath: "/healthz"},
	}}))
}

func chromium(t *testing.T) context.Context {
	t.Helper()
	bin, err := stack.EnsureDebianPackage(t.Context(), "chromium", "chromium", func(m string) { t.Log(m) })
	if err != nil {
		t.Fatalf("headless Chromium is needed: %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancelTimeout)
	return ctx
}

func TestPlaygroundRunsAQuery(t *testing.T) {
	st := stacktest.Stack(t)
	ctx := chromium(t)
	user := fmt.Sprintf("browser-%d", time.Now().UnixNano())
	query := fmt.Sprintf(`{ memory(userId: %q) { userId userSummary } health { llm } }`, user)
	page := st.App("gateway").AppURL() + "/?query=" + url.QueryEscape(query)

	err := chromedp.Do(ctx,
		chromedp.Navigate(page),
		chromedp.WaitVisible(`.graphiql-execute-button`),
		chromedp.Click(`.graphiql-execute-button`),
	)
	var result string
	if err == nil {
		result, err = chromedp.Run(ctx, chromedp.Poll[string](
			`(() => { const r = document.querySelector('.graphiql-response'); return r && r.innerText.includes('userSummary') ? r.innerText : null })()`,
			chromedp.WithPollingTimeout(30*time.Second)))
	}
	if err != nil {
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML("body"))
		t.Fatalf("playground: %v\npage: %.2000s", err, html)
	}
	for _, want := range []string{user + " is a new user.", `"llm": "offline"`} {
		if !strings.Contains(result, want) {
			t.Fatalf("result pane %q lacks %q", result, want)
		}
	}
}
