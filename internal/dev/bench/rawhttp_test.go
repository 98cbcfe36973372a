package bench

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestRawHTTP: the load generator's client reads answers with a length and
// chunked ones, keeps its connections, sends the body and headers it was
// given, and reports a non-2xx answer as an error.
func TestRawHTTP(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("dapr-api-token") != "tok" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/length":
			w.Write([]byte(`{"ok":true}`))
		case "/chunked":
			for range 3 {
				w.Write([]byte(strings.Repeat("x", 100)))
				w.(http.Flusher).Flush()
			}
		case "/echo":
			b := make([]byte, r.ContentLength)
			r.Body.Read(b)
			if string(b) != `{"q":1}` || r.Header.Get("Content-Type") != "application/json" {
				http.Error(w, "bad body", http.StatusBadRequest)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	tests := []struct {
		name, method, path string
		body               []byte
		token              string
		wantErr            bool
	}{
		{"an answer with a length", http.MethodGet, "/length", nil, "tok", false},
		{"a chunked answer", http.MethodGet, "/chunked", nil, "tok", false},
		{"a body and its type", http.MethodPost, "/echo", []byte(`{"q":1}`), "tok", false},
		{"404 is an error", http.MethodGet, "/nothing", nil, "tok", true},
		{"401 is an error", http.MethodGet, "/length", nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conns.Store(0)
			h, err := newRawHTTP(tt.method, srv.URL+tt.path, tt.body, map[string]string{"dapr-api-token": tt.token}, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer h.close()
			for i := range 5 {
				if err := h.do(); (err != nil) != tt.wantErr {
					t.Fatalf("request %d: %v; want error %v", i, err, tt.wantErr)
				}
			}
			if n := conns.Load(); n != 1 {
				t.Fatalf("%d connections for 5 requests in a row; want 1 (kept alive)", n)
			}
		})
	}
}
