package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzRoutes: any body, Idempotency-Key and instance id gets a JSON answer;
// bad input is a 4xx (the fake workflow engine completes every turn, so a
// 5xx would be the service's own fault).
func FuzzRoutes(f *testing.F) {
	routes := []struct{ method, path string }{
		{http.MethodPost, "/chat"},
		{http.MethodPost, "/chat/async"},
		{http.MethodGet, "/chat/%s"},
	}
	f.Add(uint8(0), "", []byte(`{"user_id":"ana","text":"What time is it?"}`))
	f.Add(uint8(0), "key-1", []byte(`{"user_id":"ana","text":"hi","metadata":{"session_id":"s1"},"tags":["a"]}`))
	f.Add(uint8(1), "", []byte(`{"user_id":"","text":"hi"}`))
	f.Add(uint8(0), "", []byte(`{"user_id":"ana","text":5}`))
	f.Add(uint8(2), "wf-1", []byte(nil))
	f.Add(uint8(0), "\x00", []byte(`[`))
	f.Fuzz(func(t *testing.T, route uint8, key string, body []byte) {
		s, _ := newTestServer("completed", 5*time.Second)
		h := s.routes()
		r := routes[int(route)%len(routes)]
		u, err := url.Parse(strings.Replace(r.path, "%s", url.PathEscape(key), 1))
		if err != nil {
			t.Skip()
		}
		req := httptest.NewRequest(r.method, "/", bytes.NewReader(body))
		req.URL = u
		req.Header.Set("Content-Type", "application/json")
		if r.method == http.MethodPost && key != "" && !strings.ContainsAny(key, "\r\n\x00") {
			req.Header.Set("Idempotency-Key", key)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s %.200q: %d %.300s", r.method, u, body, w.Code, w.Body)
		}
		if w.Code != http.StatusNotFound && w.Code != http.StatusMethodNotAllowed && !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %s: not JSON: %d %.300s", r.method, u, w.Code, w.Body)
		}
	})
}
