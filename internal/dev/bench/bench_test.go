package bench

import "testing"

// TestMetricSum: labelled samples add up by label, an unlabelled metric is
// read whole, a longer name with the same prefix is not taken, and a
// missing metric says so.
func TestMetricSum(t *testing.T) {
	t.Parallel()
	text := `# HELP x
daca_gateway_open_subscriptions{topic="conversations"} 3
daca_gateway_open_subscriptions{topic="memory-updates"} 5
go_memstats_heap_inuse_bytes 1.5e+06
go_memstats_heap_inuse_bytes_total 9
`
	tests := []struct {
		metric, label string
		want          float64
		found         bool
	}{
		{"daca_gateway_open_subscriptions", `topic="conversations"`, 3, true},
		{"daca_gateway_open_subscriptions", "", 8, true},
		{"go_memstats_heap_inuse_bytes", "", 1.5e6, true},
		{"go_memstats_stack_inuse_bytes", "", 0, false},
	}
	for _, tt := range tests {
		got, found := metricSum(text, tt.metric, tt.label)
		if got != tt.want || found != tt.found {
			t.Errorf("metricSum(%s, %q) = %v, %v; want %v, %v", tt.metric, tt.label, got, found, tt.want, tt.found)
		}
	}
}
