package graph

import (
	"errors"
	"testing"
)

// TestOnItsOwnStack: the setup's value, error and panic come back to the
// caller.
func TestOnItsOwnStack(t *testing.T) {
	tests := []struct {
		name    string
		setup   func() (int, error)
		want    int
		wantErr bool
		panics  bool
	}{
		{"a value", func() (int, error) { return 7, nil }, 7, false, false},
		{"an error", func() (int, error) { return 0, errors.New("no") }, 0, true, false},
		{"a panic", func() (int, error) { panic("boom") }, 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if p := recover(); (p != nil) != tt.panics {
					t.Fatalf("panic %v; want one: %v", p, tt.panics)
				}
			}()
			got, err := onItsOwnStack(tt.setup)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("%d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
