package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/daca-go/daca/gateway/trusted"
	"github.com/daca-go/daca/gateway/web"
	"github.com/daca-go/daca/graph/graphtest"
)

// TestTrustedDocuments: GRAPHQL_TRUSTED_DOCUMENTS — documentId (GraphQL
// over HTTP, POST and GET) and Apollo's persisted query hash run a listed
// document in every mode; under require nothing else runs (an unlisted
// text, an unlisted id, an APQ registration) and the playground says it is
// disabled, while the chat page's own operations run; under log an
// unlisted text runs.
func TestTrustedDocuments(t *testing.T) {
	const listed = "query Listed { health { status } }"
	id := trusted.Hash(listed)
	apqExt := `"extensions":{"persistedQuery":{"version":1,"sha256Hash":"` + id + `"}}`
	chatOp := web.ChatOperations()[0]
	chatBody, _ := json.Marshal(map[string]any{"query": chatOp, "variables": map[string]any{"id": "x", "ok": true, "u": "ana", "s": "s1"}})
	tests := []struct {
		name   string
		mode   trusted.Mode
		method string
		body   string // POST body, or GET query string
		want   string // in the answer
	}{
		{"documentId over POST", trusted.Require, "POST", `{"documentId":"sha256:` + id + `"}`, `{"data":{"health":{"status":`},
		{"documentId over GET", trusted.Require, "GET", "documentId=sha256:" + id, `{"data":{"health":{"status":`},
		{"Apollo's hash alone", trusted.Require, "POST", `{` + apqExt + `}`, `{"data":{"health":{"status":`},
		{"a listed text sent whole", trusted.Require, "POST", `{"query":"` + listed + `"}`, `{"data":{"health":{"status":`},
		{"the chat page's operation", trusted.Require, "POST", string(chatBody), `"data"`},
		{"an unlisted text", trusted.Require, "POST", `{"query":"{ health { authMode } }"}`, "PERSISTED_QUERY_NOT_IN_LIST"},
		{"an unlisted id", trusted.Require, "POST", `{"documentId":"sha256:` + trusted.Hash("x") + `"}`, "PERSISTED_QUERY_NOT_IN_LIST"},
		{"an APQ registration", trusted.Require, "POST", `{"query":"{ health { authMode } }","extensions":{"persistedQuery":{"version":1,"sha256Hash":"` + trusted.Hash("{ health { authMode } }") + `"}}}`, "PERSISTED_QUERY_NOT_IN_LIST"},
		{"log: an unlisted text runs", trusted.Log, "POST", `{"query":"{ health { authMode } }"}`, `{"data":{"health":{"authMode":`},
		{"log: documentId", trusted.Log, "POST", `{"documentId":"` + id + `"}`, `{"data":{"health":{"status":`},
		{"log: an unknown documentId", trusted.Log, "POST", `{"documentId":"` + trusted.Hash("y") + `"}`, "PERSISTED_QUERY_NOT_FOUND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, h := newServer(graphtest.New(), Config{Trusted: tt.mode, TrustedDocuments: trusted.New(listed)}, 0, nil)
			var req *http.Request
			if tt.method == "GET" {
				req = httptest.NewRequest(http.MethodGet, "/graphql?"+strings.ReplaceAll(tt.body, ":", url.QueryEscape(":")), nil)
			} else {
				req = httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(tt.body))
				req.Header.Set("Content-Type", "application/json")
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if !strings.Contains(w.Body.String(), tt.want) {
				t.Fatalf("%d %s; want %q", w.Code, w.Body, tt.want)
			}
			if tt.name == "the chat page's operation" && strings.Contains(w.Body.String(), "PERSISTED_QUERY") {
				t.Fatalf("the chat page's operation refused: %s", w.Body)
			}
		})
	}
	// The playground: disabled under require, as it says.
	for mode, want := range map[trusted.Mode]string{trusted.Require: "The GraphQL playground is disabled", trusted.Log: "graphiql"} {
		_, h := newServer(graphtest.New(), Config{Trusted: mode}, 0, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("%s: the page on / lacks %q", mode, want)
		}
	}
}
