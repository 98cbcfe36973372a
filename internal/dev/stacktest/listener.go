package stacktest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/dev/stack"
)

// Event is a CloudEvent a Listener received.
type Event struct {
	ID    string          `json:"id"`
	Topic string          `json:"topic"`
	Data  json.RawMessage `json:"data"`
}

// Listener is a tiny Dapr app inside the test binary that subscribes to
// pub/sub topics (as its own consumer group) and records every event.
type Listener struct {
	ID     string
	Topics []string
	ln     net.Listener
	srv    *http.Server

	mu     sync.Mutex
	events []Event
	notify chan struct{}
}

// NewListener opens the listener's port; App returns its stack.App.
func NewListener(appID string, topics ...string) (*Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &Listener{ID: appID, Topics: topics, ln: ln, notify: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /dapr/subscribe", func(w http.ResponseWriter, r *http.Request) {
		var subs []contract.Subscription
		for _, t := range topics {
			subs = append(subs, contract.Subscription{PubSubName: contract.PubSub, Topic: t, Routes: map[string]string{"default": "/events/" + t}})
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(subs)
	})
	mux.HandleFunc("POST /events/{topic}", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var ev Event
		if err := json.Unmarshal(b, &ev); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		l.mu.Lock()
		l.events = append(l.events, ev)
		close(l.notify)
		l.notify = make(chan struct{})
		l.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"SUCCESS"}`)
	})
	l.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go l.srv.Serve(ln)
	return l, nil
}

// App is the stack.App of the listener (its sidecar; the app is in-process).
func (l *Listener) App() stack.App {
	return stack.App{ID: l.ID, AppPort: l.ln.Addr().(*net.TCPAddr).Port}
}

// Close stops the listener's HTTP server.
func (l *Listener) Close() { l.srv.Close() }

// Matching returns the events of topic whose data contains every fragment.
func (l *Listener) Matching(topic string, fragments ...string) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
next:
	for _, ev := range l.events {
		if ev.Topic != topic {
			continue
		}
		for _, f := range fragments {
			if !strings.Contains(string(ev.Data), f) {
				continue next
			}
		}
		out = append(out, ev)
	}
	return out
}

// Await waits until at least n events of topic contain every fragment.
func (l *Listener) Await(timeout time.Duration, n int, topic string, fragments ...string) ([]Event, error) {
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		ch := l.notify
		l.mu.Unlock()
		if got := l.Matching(topic, fragments...); len(got) >= n {
			return got, nil
		}
		select {
		case <-ch:
		case <-deadline:
			got := l.Matching(topic, fragments...)
			return got, fmt.Errorf("%d of %d events on %s matching %q within %s", len(got), n, topic, fragments, timeout)
		}
	}
}
