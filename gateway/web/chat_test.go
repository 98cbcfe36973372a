package web

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestChatServes(t *testing.T) {
	h := Chat()
	tests := []struct {
		path, wantType, wantBody string
		status                   int
	}{
		{"/chat", "text/html", `<script src="/chat/assets/chat.js"`, 200},
		{"/chat/", "text/html", `id="messages"`, 200},
		{"/chat/assets/chat.js", "javascript", "chatStream(instanceId", 200},
		{"/chat/assets/chat.css", "text/css", ".msg", 200},
		{"/chat/assets/nope.js", "", "", 404},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, tt.path, nil))
		if w.Code != tt.status || !strings.Contains(w.Header().Get("Content-Type"), tt.wantType) || !strings.Contains(w.Body.String(), tt.wantBody) {
			t.Errorf("%s: %d %q %.80q", tt.path, w.Code, w.Header().Get("Content-Type"), w.Body.String())
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("%s: CSP %q", tt.path, csp)
		}
	}
}

// TestChatOperations: every operation the chat page sends is among the
// documents it ships (a plain template literal, so the text sent is the
// text hashed).
func TestChatOperations(t *testing.T) {
	ops := ChatOperations()
	b, err := fs.ReadFile(files, "chat/chat.js")
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	want := strings.Count(src, "`query") + strings.Count(src, "`mutation") + strings.Count(src, "`subscription")
	if len(ops) != want || want < 8 {
		t.Fatalf("%d operations found; the page has %d", len(ops), want)
	}
	for _, op := range ops {
		if strings.Contains(op, "${") {
			t.Errorf("operation %q is built at run time: its text cannot be trusted ahead", op)
		}
	}
}
