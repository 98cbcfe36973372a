package web

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The embedded files are exactly the ones whose hashes the page pins.
func TestAssetsMatchTheirIntegrityHashes(t *testing.T) {
	tests := []struct{ file, sri, ctype string }{
		{"graphiql.min.js", graphiqlJSSRI, "javascript"},
		{"graphiql.min.css", graphiqlCSSSRI, "text/css"},
		{"react.production.min.js", reactSRI, "javascript"},
		{"react-dom.production.min.js", reactDOMSRI, "javascript"},
	}
	h := PlaygroundAssets()
	page := httptest.NewRecorder()
	Playground("t", "/graphql").ServeHTTP(page, httptest.NewRequest(http.MethodGet, "/", nil))
	for _, tt := range tests {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, AssetsPath+tt.file, nil))
		if w.Code != http.StatusOK || !strings.Contains(w.Header().Get("Content-Type"), tt.ctype) {
			t.Fatalf("%s: %d %s", tt.file, w.Code, w.Header().Get("Content-Type"))
		}
		b, _ := io.ReadAll(w.Body)
		sum := sha256.Sum256(b)
		if got := "sha256-" + base64.StdEncoding.EncodeToString(sum[:]); got != tt.sri {
			t.Fatalf("%s: hash %s; want %s", tt.file, got, tt.sri)
		}
		if !strings.Contains(page.Body.String(), AssetsPath+tt.file) || !strings.Contains(page.Body.String(), strings.ReplaceAll(tt.sri, "+", "&#43;")) {
			t.Fatalf("the page does not load %s with its hash", tt.file)
		}
	}
	if strings.Contains(page.Body.String(), "cdn.jsdelivr.net/npm/graphiql") {
		t.Fatal("the page still loads GraphiQL from a CDN")
	}
}
