package fanout

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFiltersAndDelivery(t *testing.T) {
	t.Parallel()
	b := New[int](8, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	even := b.Subscribe(ctx, func(v int) bool { return v%2 == 0 }, nil)
	all := b.Subscribe(ctx, nil, nil)
	for i := range 4 {
		b.Publish(i)
	}
	tests := []struct {
		name string
		sub  <-chan int
		want []int
	}{{"even", even, []int{0, 2}}, {"all", all, []int{0, 1, 2, 3}}}
	for _, tt := range tests {
		for _, w := range tt.want {
			if got := <-tt.sub; got != w {
				t.Fatalf("%s: got %d; want %d", tt.name, got, w)
			}
		}
		select {
		case v := <-tt.sub:
			t.Fatalf("%s: unexpected %d", tt.name, v)
		default:
		}
	}
}

// TestWakeOncePerQueuedEventAndClose: wake counts exactly what a reader may
// take without blocking: each event queued (not those filtered out or
// dropped for a full buffer), then the close.
func TestWakeOncePerQueuedEventAndClose(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		match     func(int) bool
		publish   int
		wantWakes int
		wantRead  []int
	}{
		{"every event, then the close", nil, 3, 4, []int{0, 1, 2}},
		{"filtered events do not wake", func(v int) bool { return v == 1 }, 3, 2, []int{1}},
		{"a full buffer drops the subscriber: the close wakes once", nil, 6, 5, []int{0, 1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New[int](4, nil)
			ctx, cancel := context.WithCancel(t.Context())
			woken := make(chan struct{}, 16)
			sub := b.Subscribe(ctx, tt.match, func() { woken <- struct{}{} })
			for i := range tt.publish {
				b.Publish(i)
			}
			cancel()
			var read []int
			for v := range sub { // ends: the channel is closed on cancel or drop
				read = append(read, v)
			}
			if !slices.Equal(read, tt.wantRead) {
				t.Fatalf("read %v; want %v", read, tt.wantRead)
			}
			// The close's wake may follow the close itself: wait for it.
			deadline := time.After(5 * time.Second)
			for i := range tt.wantWakes {
				select {
				case <-woken:
				case <-deadline:
					t.Fatalf("%d wakes; want %d", i, tt.wantWakes)
				}
			}
			if n := len(woken); n != 0 {
				t.Fatalf("%d wakes more than %d", n, tt.wantWakes)
			}
		})
	}
}

func TestSlowSubscriberDroppedOthersServed(t *testing.T) {
	t.Parallel()
	type key struct{}
	drops := 0
	var b *Broker[int]
	b = New[int](2, func(ctx context.Context) {
		drops++
		if ctx.Value(key{}) != "slow" {
			t.Errorf("drop reported with the context of %v; want the slow subscriber's", ctx.Value(key{}))
		}
		if b.Len() != 1 {
			t.Errorf("drop reported while the subscriber is still registered")
		}
	})
	slow := b.Subscribe(context.WithValue(t.Context(), key{}, "slow"), nil, nil) // never reads
	fast := b.Subscribe(t.Context(), nil, nil)
	got := make(chan int)
	go func() {
		for v := range fast {
			got <- v
		}
		close(got)
	}()
	for i := range 100 {
		b.Publish(i) // never blocks, whatever the slow subscriber does
		select {
		case v := <-got:
			if v != i {
				t.Fatalf("fast subscriber got %d; want %d", v, i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("fast subscriber starved at %d", i)
		}
	}
	if drops != 1 {
		t.Fatalf("%d drops reported; want the slow subscriber's", drops)
	}
	n := 0
	for range slow { // its buffered events, then closed
		n++
	}
	if n != 2 || drops != 1 || b.Len() != 1 {
		t.Fatalf("slow subscriber kept %d events, drops %d, subscribers %d", n, drops, b.Len())
	}
}

func TestThousandCyclesFreeEverything(t *testing.T) {
	t.Parallel()
	b := New[int](4, nil)
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	for range 1000 {
		ctx, cancel := context.WithCancel(context.Background())
		s := b.Subscribe(ctx, nil, nil)
		b.Publish(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range s {
			}
		}()
		cancel()
	}
	wg.Wait()
	if b.Len() != 0 {
		t.Fatalf("%d subscribers left", b.Len())
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if g := runtime.NumGoroutine(); g > before {
		t.Fatalf("goroutines %d > baseline %d", g, before)
	}
}

func TestConcurrentPublishAndCancel(t *testing.T) {
	t.Parallel()
	b := New[int](1, nil)
	var wg sync.WaitGroup
	for range 50 {
		ctx, cancel := context.WithCancel(context.Background())
		s := b.Subscribe(ctx, nil, nil)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range s {
			}
		}()
		go func() { defer wg.Done(); cancel() }()
	}
	for i := range 200 {
		b.Publish(i)
	}
	wg.Wait()
}

// TestKeepRecent: the broker remembers the last n events published, oldest
// first, whether anyone subscribed or not.
func TestKeepRecent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		keep, published int
		match           func(int) bool
		want            []int
	}{
		{3, 2, nil, []int{1, 2}},
		{3, 5, nil, []int{3, 4, 5}},
		{3, 7, nil, []int{5, 6, 7}},
		{4, 9, func(v int) bool { return v%2 == 0 }, []int{6, 8}},
	}
	for _, tt := range tests {
		b := New[int](1, nil).KeepRecent(tt.keep)
		for v := 1; v <= tt.published; v++ {
			b.Publish(v)
		}
		if got := b.Recent(tt.match); !slices.Equal(got, tt.want) {
			t.Errorf("keep %d, published %d: %v; want %v", tt.keep, tt.published, got, tt.want)
		}
	}
	if got := New[int](1, nil).Recent(nil); got != nil {
		t.Errorf("without KeepRecent: %v", got)
	}
}
