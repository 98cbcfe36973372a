package bench

import (
	"strings"
	"testing"
	"time"
)

func TestOwnTimes(t *testing.T) {
	t.Parallel()
	const (
		c   = "127.0.0.1.40000" // the load generator
		gw  = "127.0.0.1.8080"
		out = "127.0.0.1.50000" // the gateway's connection to its sidecar
		sc  = "127.0.0.1.3502"
		d   = "127.0.0.1.41000" // the sidecar delivering an event to the gateway
	)
	pkt := func(t, from, to string, n string) string { return t + " IP " + from + " > " + to + ": tcp " + n }
	us := func(n int) time.Duration { return time.Duration(n) * time.Microsecond }
	tests := []struct {
		name               string
		lines              []string
		before, after, tot []time.Duration
	}{
		{"one request", []string{
			pkt("100.000000", c, gw, "120"),
			pkt("100.000010", gw, c, "0"), // an ack: no payload
			pkt("100.000300", out, sc, "200"),
			pkt("100.003300", sc, out, "150"),
			pkt("100.003700", gw, c, "180"),
		}, []time.Duration{us(300)}, []time.Duration{us(400)}, []time.Duration{us(700)}},
		{"split request and answer: their last packets count", []string{
			pkt("100.000000", c, gw, "100"),
			pkt("100.000050", c, gw, "80"),
			pkt("100.000250", out, sc, "200"),
			pkt("100.000260", out, sc, "20"),
			pkt("100.003000", sc, out, "100"),
			pkt("100.003100", sc, out, "50"),
			pkt("100.003200", gw, c, "180"),
			pkt("100.003210", gw, c, "20"),
		}, []time.Duration{us(200)}, []time.Duration{us(100)}, []time.Duration{us(300)}},
		{"an event delivered between two requests is left out", []string{
			pkt("100.000000", d, gw, "300"),
			pkt("100.000400", gw, d, "20"),
			pkt("101.000000", c, gw, "120"),
			pkt("101.000100", out, sc, "200"),
			pkt("101.001000", sc, out, "150"),
			pkt("101.001500", gw, c, "180"),
			pkt("102.000000", c, gw, "120"),
			pkt("102.000200", out, sc, "200"),
			pkt("102.001000", sc, out, "150"),
			pkt("102.001300", gw, c, "180"),
		}, []time.Duration{us(100), us(200)}, []time.Duration{us(300), us(500)}, []time.Duration{us(500), us(600)}},
		{"a call to the sidecar's gRPC port", []string{
			pkt("100.000000", c, gw, "120"),
			pkt("100.000100", out, "127.0.0.1.50003", "90"),
			pkt("100.002000", "127.0.0.1.50003", out, "60"),
			pkt("100.002200", gw, c, "180"),
		}, []time.Duration{us(100)}, []time.Duration{us(200)}, []time.Duration{us(300)}},
		{"a request without an answer counts nothing", []string{
			pkt("100.000000", c, gw, "120"),
			pkt("100.000300", out, sc, "200"),
			"tcpdump: garbage",
		}, nil, nil, nil},
	}
	near := func(a, b []time.Duration) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if d := a[i] - b[i]; d > time.Microsecond || d < -time.Microsecond {
				return false
			}
		}
		return true
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ownTimes(strings.NewReader(strings.Join(tt.lines, "\n")), 8080, 3502, 50003)
			if !near(o.before, tt.before) || !near(o.after, tt.after) || !near(o.total, tt.tot) {
				t.Fatalf("before %v, after %v, total %v; want %v, %v, %v", o.before, o.after, o.total, tt.before, tt.after, tt.tot)
			}
		})
	}
}
