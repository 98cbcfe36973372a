package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// toolRounds and toolTurns: the tool part alternates rounds of toolTurns
// plain turns and toolTurns turns with one tool call, at one client.
const (
	toolRounds = 5
	toolTurns  = 20
)

// benchTools measures a chat turn with one tool call — convert_units on the
// reference tool server, a step of the turn's workflow run by Dapr's MCP
// workflow — beside a plain turn, at one client, in alternating rounds (the
// same machine for both). The tool turn has a second round of the model (its
// answer with the result): what it adds over the plain turn is what a tool
// step costs the loop, the tool's own work (a unit conversion: microseconds)
// included.
func benchTools(ctx context.Context, call func(method, url string, body []byte) error, chatURL string) error {
	var seq atomic.Int64
	turn := func(tool bool) func() error {
		return func() error {
			n := seq.Add(1)
			text := fmt.Sprintf("hello %d", n)
			if tool {
				text = fmt.Sprintf("convert %d km to m", n)
			}
			b, _ := json.Marshal(map[string]any{"user_id": "bench-tools", "text": text,
				"metadata": map[string]string{"session_id": fmt.Sprintf("bench-tools-%d", n%benchSessions)}})
			return call("POST", chatURL, b)
		}
	}
	for range 4 { // warm up both paths (the sessions' claims, the tool server's first requests)
		if err := turn(false)(); err != nil {
			return err
		}
		if err := turn(true)(); err != nil {
			return err
		}
	}
	var plain, tool []time.Duration
	errs := 0
	for range toolRounds {
		for _, k := range []struct {
			tool bool
			into *[]time.Duration
		}{{false, &plain}, {true, &tool}} {
			lat, e, _ := load(turn(k.tool), toolTurns, 1)
			*k.into = append(*k.into, lat...)
			errs += e
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	slices.Sort(plain)
	slices.Sort(tool)
	added50, added99 := pct(tool, 50)-pct(plain, 50), pct(tool, 99)-pct(plain, 99)
	fmt.Println()
	fmt.Printf("Agent tools: a turn with one MCP tool call beside a plain turn, one client, %d alternating rounds of %d each\n", toolRounds, toolTurns)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "turn\tturns\tp50\tp99\terrors\t")
	fmt.Fprintf(tw, "plain\t%d\t%s\t%s\t\t\n", len(plain), ms(pct(plain, 50)), ms(pct(plain, 99)))
	fmt.Fprintf(tw, "one tool call (convert_units)\t%d\t%s\t%s\t%d\t\n", len(tool), ms(pct(tool, 50)), ms(pct(tool, 99)), errs)
	fmt.Fprintf(tw, "a tool step adds\t\t%s\t%s\t\t\n", ms(added50), ms(added99))
	tw.Flush()
	verdict := "met"
	if added50 > 15*time.Millisecond {
		verdict = "missed"
	}
	fmt.Printf("target: a tool step adds at most 15 ms at p50: %s\n", verdict)
	return nil
}
