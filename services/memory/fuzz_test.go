package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzRoutes: any id and body on any route gets an answer in JSON and
// never a 5xx (the store here does not fail: a 5xx would be the service's
// own fault); an event the service cannot use is dropped, not retried.
func FuzzRoutes(f *testing.F) {
	routes := []struct{ method, path string }{
		{http.MethodGet, "/memories/%s"},
		{http.MethodPost, "/memories/%s/initialize"},
		{http.MethodDelete, "/memories/%s"},
		{http.MethodGet, "/conversations/%s"},
		{http.MethodPost, "/conversations/batch"},
		{http.MethodDelete, "/conversations/%s"},
		{http.MethodGet, "/users/%s/sessions"},
		{http.MethodPost, "/conversations"},
	}
	f.Add(uint8(0), "ana", []byte(nil))
	f.Add(uint8(1), "ana", []byte(`{"name":"Ana","preferred_style":"short"}`))
	f.Add(uint8(1), "ana", []byte(`{"name":5}`))
	f.Add(uint8(4), "", []byte(`{"session_ids":["s1","s2"],"last":2}`))
	f.Add(uint8(4), "", []byte(`{"session_ids":[]}`))
	f.Add(uint8(6), "a b", []byte(nil))
	f.Add(uint8(7), "", []byte(ceJSON("e1", map[string]string{"user_id": "u", "session_id": "s", "event_type": "ConversationUpdated", "user_message": "hi", "assistant_reply": "hello"})))
	f.Add(uint8(7), "", []byte(`{"id":"e2","data":"not an object"}`))
	h, _, _ := setup(nil)
	f.Fuzz(func(t *testing.T, route uint8, id string, body []byte) {
		r := routes[int(route)%len(routes)]
		path := strings.Replace(r.path, "%s", url.PathEscape(id), 1)
		u, err := url.Parse(path)
		if err != nil {
			t.Skip()
		}
		req := httptest.NewRequest(r.method, "/", bytes.NewReader(body))
		req.URL = u
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s %.200q: %d %.300s", r.method, path, body, w.Code, w.Body)
		}
		if w.Code != http.StatusNotFound && w.Code != http.StatusMethodNotAllowed && w.Body.Len() > 0 && !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %s: not JSON: %.300s", r.method, path, w.Body)
		}
		if r.path == "/conversations" {
			var out map[string]string
			json.Unmarshal(w.Body.Bytes(), &out)
			if out["status"] == "RETRY" {
				t.Fatalf("event %.200q answered RETRY: a bad event must be dropped, not redelivered forever", body)
			}
		}
	})
}
