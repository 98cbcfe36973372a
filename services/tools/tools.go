package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/daca-go/daca/internal/contract"
)

// The tools and their annotations: read-only ones (readOnlyHint) never
// change anything; the others do (create_note adds, delete_note destroys:
// destructiveHint), which the approval of tool calls goes by.
func newMCPServer(n *notes, log *slog.Logger, delay time.Duration, executionsFile string) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "daca-tools", Version: "v1"}, &mcp.ServerOptions{Logger: log})
	s.AddReceivingMiddleware(executions(log, delay, executionsFile))
	no := false
	yes := true
	mcp.AddTool(s, &mcp.Tool{Name: "convert_units", Title: "Convert units",
		Description: "Convert a quantity between units of length (mm, cm, m, km, in, ft, yd, mi), mass (g, kg, oz, lb) or temperature (C, F, K).",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: &no}}, convertUnits)
	mcp.AddTool(s, &mcp.Tool{Name: "calculate", Title: "Calculate",
		Description: "Evaluate an arithmetic expression with + - * / ^ and parentheses, e.g. (2+3)*4.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: &no}}, calculate)
	mcp.AddTool(s, &mcp.Tool{Name: "create_note", Title: "Create a note",
		Description: "Keep a note (or reminder) for the user. A repeated attempt of one call keeps it once.",
		Annotations: &mcp.ToolAnnotations{DestructiveHint: &no, OpenWorldHint: &no}}, n.create)
	mcp.AddTool(s, &mcp.Tool{Name: "list_notes", Title: "List notes",
		Description: "List the user's notes, oldest first, with their ids.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: &no}}, n.list)
	mcp.AddTool(s, &mcp.Tool{Name: "delete_note", Title: "Delete a note",
		Description: "Delete one of the user's notes by its id.",
		Annotations: &mcp.ToolAnnotations{DestructiveHint: &yes, IdempotentHint: true, OpenWorldHint: &no}}, n.delete)
	return s
}

// executions logs every tool call the server executed, with its call id
// when chat-service passed one (contract.ToolCallArg), never its arguments
// or result; with a file (the fault suite's), it also appends
// "<call id> <tool>" there. delay (the fault suite's) holds every call
// first, so that a kill finds calls in flight.
func executions(log *slog.Logger, delay time.Duration, file string) mcp.Middleware {
	var mu sync.Mutex
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			r, ok := req.(*mcp.CallToolRequest)
			if !ok || r.Params == nil {
				return next(ctx, method, req)
			}
			if delay > 0 {
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			res, err := next(ctx, method, req)
			if err != nil {
				return res, err
			}
			var args struct {
				CallID string `json:"_call_id"`
			}
			_ = json.Unmarshal(r.Params.Arguments, &args)
			log.Info("tool executed", "tool", r.Params.Name, "call_id", args.CallID)
			if file != "" {
				mu.Lock()
				if f, ferr := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); ferr == nil {
					fmt.Fprintf(f, "%s %s\n", args.CallID, r.Params.Name)
					f.Close()
				}
				mu.Unlock()
			}
			return res, nil
		}
	}
}

// text is a tool's answer as one text block.
func text(format string, args ...any) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf(format, args...)}}}
}

// failed is a tool's error the model can read (isError), not a protocol
// error.
func failed(format string, args ...any) *mcp.CallToolResult {
	r := text(format, args...)
	r.IsError = true
	return r
}

type convertIn struct {
	Value float64 `json:"value" jsonschema:"the quantity to convert"`
	From  string  `json:"from" jsonschema:"the unit of value, e.g. km, lb or C"`
	To    string  `json:"to" jsonschema:"the unit to convert to"`
}

// units maps a unit to its dimension and its size in the dimension's base
// unit (m, kg); temperatures are converted apart.
var units = map[string]struct {
	dim  string
	base float64
}{
	"mm": {"length", 0.001}, "cm": {"length", 0.01}, "m": {"length", 1}, "km": {"length", 1000},
	"in": {"length", 0.0254}, "ft": {"length", 0.3048}, "yd": {"length", 0.9144}, "mi": {"length", 1609.344},
	"g": {"mass", 0.001}, "kg": {"mass", 1}, "oz": {"mass", 0.028349523125}, "lb": {"mass", 0.45359237},
	"c": {"temperature", 0}, "f": {"temperature", 0}, "k": {"temperature", 0},
}

func convertUnits(_ context.Context, _ *mcp.CallToolRequest, in convertIn) (*mcp.CallToolResult, any, error) {
	from, to := strings.ToLower(strings.TrimSpace(in.From)), strings.ToLower(strings.TrimSpace(in.To))
	f, okF := units[from]
	t, okT := units[to]
	switch {
	case !okF:
		return failed("unknown unit %q", in.From), nil, nil
	case !okT:
		return failed("unknown unit %q", in.To), nil, nil
	case f.dim != t.dim:
		return failed("cannot convert %s (%s) to %s (%s)", in.From, f.dim, in.To, t.dim), nil, nil
	}
	var out float64
	if f.dim == "temperature" {
		kelvin := map[string]func(float64) float64{"c": func(v float64) float64 { return v + 273.15 },
			"f": func(v float64) float64 { return (v-32)*5/9 + 273.15 }, "k": func(v float64) float64 { return v }}[from](in.Value)
		out = map[string]func(float64) float64{"c": func(k float64) float64 { return k - 273.15 },
			"f": func(k float64) float64 { return (k-273.15)*9/5 + 32 }, "k": func(k float64) float64 { return k }}[to](kelvin)
	} else {
		out = in.Value * f.base / t.base
	}
	return text("%s %s = %s %s", num(in.Value), in.From, num(out), in.To), nil, nil
}

// num prints a number with at most 6 decimals, without trailing zeros.
func num(v float64) string {
	return strconv.FormatFloat(math.Round(v*1e6)/1e6, 'f', -1, 64)
}

type calcIn struct {
	Expression string `json:"expression" jsonschema:"the arithmetic expression, e.g. (2+3)*4 or 2^10"`
}

func calculate(_ context.Context, _ *mcp.CallToolRequest, in calcIn) (*mcp.CallToolResult, any, error) {
	v, err := evaluate(in.Expression)
	if err != nil {
		return failed("%v", err), nil, nil
	}
	return text("%s = %s", strings.TrimSpace(in.Expression), num(v)), nil, nil
}

// user is the turn's user that chat-service put in the arguments.
func user(id string) (string, *mcp.CallToolResult) {
	if err := contract.CheckID(contract.ToolUserArg, id); err != nil {
		return "", failed("this tool acts for a user, and none was given")
	}
	return id, nil
}
