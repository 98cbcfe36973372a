package stacktest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// Response is an HTTP answer with its JSON body decoded (when it is JSON).
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any
}

var client = &http.Client{Timeout: 90 * time.Second}

// Do sends a request; body may be nil, a string, []byte or a value to encode
// as JSON. Headers come in pairs. A transport error fails the test: call
// it from the test's goroutine only (Call from others).
func Do(t testing.TB, method, url string, body any, headers ...string) Response {
	t.Helper()
	r, err := Call(t.Context(), method, url, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Call is Do without a test: it returns the error, so any goroutine may
// call it.
func Call(ctx context.Context, method, url string, body any, headers ...string) (Response, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = bytes.NewBufferString(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			return Response{}, err
		}
		r = bytes.NewReader(enc)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return Response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	_ = json.Unmarshal(b, &out.JSON)
	return out, nil
}
