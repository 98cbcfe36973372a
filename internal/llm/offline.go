package llm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// ChatInstructions are the instructions of a chat turn (the tutorial's text).
func ChatInstructions(name, style, summary string) string {
	return fmt.Sprintf("You are a helpful chatbot. Respond in a %s way. "+
		"If the user asks for the time, use the get_current_time tool. "+
		"The user's name is %s. User summary: %s", style, name, summary)
}

// SummaryRequest is the last user message of a summary request.
const SummaryRequest = "Write the updated summary now."

// SummaryInstructions ask for an updated user summary.
func SummaryInstructions(name, summary string) string {
	return fmt.Sprintf("You maintain a short summary of what an assistant knows about a user. "+
		"The user's name is %s. Current summary: %s "+
		"Using the conversation above, write an updated summary of the user in at most three sentences. "+
		"Reply with the summary only.", name, summary)
}

var (
	styleRE   = regexp.MustCompile(`Respond in an? (.+?) way\.`)
	nameRE    = regexp.MustCompile(`The user's name is (.+?)\.( |$)`)
	summaryRE = regexp.MustCompile(`(?s)(?:User summary|Current summary): (.*?)(?: Using the conversation above|$)`)
	timeRE    = regexp.MustCompile(`(?i)\b(time|clock|what day|date)\b`)
	// What the offline model calls the tools for (nextCall).
	convertRE = regexp.MustCompile(`(?i)\bconvert\s+(-?[0-9.]+)\s*([a-z]+)\s+(?:to|in|into)\s+([a-z]+)`)
	calcRE    = regexp.MustCompile(`(?i)\b(?:calculate|compute|what is)\s+([0-9(][0-9+\-*/^(). ]*[0-9)])`)
	noteRE    = regexp.MustCompile(`(?i)\b(?:remind me (?:to |of |about )?|take a note:?|note that|note:)\s*(.+?)(?:[.!]|$|\s+and\s+(?:convert|calculate|what))`)
	listRE    = regexp.MustCompile(`(?i)\b(?:list|show) (?:my )?(?:notes|reminders)\b`)
	// "use <tool> with {json}" (several joined by "and", at the end of the
	// message): any offered tool by its full name, with those arguments as
	// they are (demos, and tests of bad arguments).
	useRE = regexp.MustCompile(`(?i)\buse (?:the tool )?([a-zA-Z0-9_-]{1,64}) with (\{.*?\})(?:\s+and\s|\s*$)`)
)

// Offline is the built-in deterministic model. It speaks the Chat
// Completions wire format as an http.RoundTripper, so go-openai and the whole
// client run unchanged. It calls get_current_time when asked for the time and
// otherwise answers from its instructions, so tests can see that the name,
// style, summary and recent history reached the prompt.
type Offline struct {
	Delay      time.Duration // answer after this long (crash tests)
	TokenDelay time.Duration // between the words of a streamed reply
}

func (o *Offline) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		defer req.Body.Close()
	}
	if req.Method != http.MethodPost || !strings.HasSuffix(req.URL.Path, "/chat/completions") {
		return jsonResponse(req, http.StatusNotFound, map[string]any{"error": map[string]any{"message": "offline model: only POST /chat/completions", "type": "invalid_request_error"}}), nil
	}
	var cr openai.ChatCompletionRequest
	if err := json.NewDecoder(req.Body).Decode(&cr); err != nil {
		return jsonResponse(req, http.StatusBadRequest, map[string]any{"error": map[string]any{"message": "offline model: bad JSON", "type": "invalid_request_error"}}), nil
	}
	if o.Delay > 0 {
		if err := sleep(req.Context(), o.Delay); err != nil {
			return nil, err
		}
	}
	msg, finish := o.answer(cr)
	if cr.Stream {
		return o.stream(req, cr, msg, finish), nil
	}
	resp := openai.ChatCompletionResponse{
		ID: "offline-" + fmt.Sprint(time.Now().UnixNano()), Object: "chat.completion", Created: time.Now().Unix(), Model: cr.Model,
		Choices: []openai.ChatCompletionChoice{{Index: 0, Message: msg, FinishReason: finish}},
		Usage:   openai.Usage{PromptTokens: words(cr.Messages), CompletionTokens: len(strings.Fields(msg.Content)), TotalTokens: words(cr.Messages) + len(strings.Fields(msg.Content))},
	}
	return jsonResponse(req, http.StatusOK, resp), nil
}

func words(msgs []openai.ChatCompletionMessage) int {
	n := 0
	for _, m := range msgs {
		n += len(strings.Fields(m.Content))
	}
	return n
}

func (o *Offline) answer(cr openai.ChatCompletionRequest) (openai.ChatCompletionMessage, openai.FinishReason) {
	var system string
	var convo []openai.ChatCompletionMessage
	for _, m := range cr.Messages {
		if m.Role == openai.ChatMessageRoleSystem {
			system = m.Content
		} else {
			convo = append(convo, m)
		}
	}
	reply := func(s string) (openai.ChatCompletionMessage, openai.FinishReason) {
		return openai.ChatCompletionMessage{Role: openai.ChatMessageRoleAssistant, Content: s}, openai.FinishReasonStop
	}
	if len(convo) == 0 {
		return reply("[offline model] Nothing to answer.")
	}
	last := convo[len(convo)-1]
	name := find(nameRE, system, "there")
	style := find(styleRE, system, "casual")
	summary := strings.TrimSpace(find(summaryRE, system, ""))

	// Summary request.
	if strings.Contains(system, "maintain a short summary") {
		var lastUser string
		n := 0
		for _, m := range convo {
			if m.Role == openai.ChatMessageRoleUser && m.Content != SummaryRequest {
				lastUser = m.Content
				n++
			}
		}
		return reply(fmt.Sprintf("%s has sent %d message(s) in this conversation; most recently: %q.", name, n, clip(lastUser, 120)))
	}
	// Tools: what the user's last message asks for, one call per round, in
	// the order asked; once every call has its result, a reply with them.
	asked, results := afterLastUser(convo)
	if call, ok := nextCall(asked.Content, cr.Tools, results); ok {
		idx := 0
		call.Index = &idx
		return openai.ChatCompletionMessage{Role: openai.ChatMessageRoleAssistant, ToolCalls: []openai.ToolCall{call}}, openai.FinishReasonToolCalls
	}
	if len(results) > 0 {
		parts := make([]string, len(results))
		for i, r := range results {
			if r.Name == TimeTool.Name {
				parts[i] = "the current time is " + r.Content
			} else {
				parts[i] = fmt.Sprintf("%s answered: %s", r.Name, r.Content)
			}
		}
		return reply(fmt.Sprintf("[offline model] %s, %s.", name, strings.Join(parts, "; ")))
	}
	// Otherwise: answer from the instructions and the history.
	earlier := len(convo) - 1
	var b strings.Builder
	fmt.Fprintf(&b, "[offline model] Hello %s! You said: %q. I answer in a %s way.", name, clip(last.Content, 200), style)
	if summary != "" {
		fmt.Fprintf(&b, " What I know about you: %s", summary)
		if !strings.HasSuffix(summary, ".") {
			b.WriteString(".")
		}
	}
	if earlier > 0 {
		fmt.Fprintf(&b, " We have exchanged %d earlier message(s); the last one was: %q.", earlier, clip(convo[earlier-1].Content, 120))
	}
	return reply(b.String())
}

// stream answers word by word as server-sent events, TokenDelay apart (in
// one chunk without a delay).
func (o *Offline) stream(req *http.Request, cr openai.ChatCompletionRequest, msg openai.ChatCompletionMessage, finish openai.FinishReason) *http.Response {
	id := "offline-" + fmt.Sprint(time.Now().UnixNano())
	var events [][]byte
	chunk := func(d openai.ChatCompletionStreamChoiceDelta, fr openai.FinishReason) {
		b, _ := json.Marshal(openai.ChatCompletionStreamResponse{
			ID: id, Object: "chat.completion.chunk", Created: time.Now().Unix(), Model: cr.Model,
			Choices: []openai.ChatCompletionStreamChoice{{Index: 0, Delta: d, FinishReason: fr}},
		})
		events = append(events, []byte("data: "+string(b)+"\n\n"))
	}
	nWords := 0
	if len(msg.ToolCalls) > 0 {
		chunk(openai.ChatCompletionStreamChoiceDelta{Role: "assistant", ToolCalls: msg.ToolCalls}, "")
	} else {
		// A word per chunk, each after TokenDelay; without a delay every
		// word is ready at once, and one chunk carries them all (as a server
		// sends what it has), which spares the client a decode per word.
		fields := []string{msg.Content}
		if o.TokenDelay > 0 {
			fields = strings.SplitAfter(msg.Content, " ")
		}
		nWords = len(fields)
		for i, f := range fields {
			d := openai.ChatCompletionStreamChoiceDelta{Content: f}
			if i == 0 {
				d.Role = "assistant"
			}
			chunk(d, "")
		}
	}
	chunk(openai.ChatCompletionStreamChoiceDelta{}, finish)
	// The usage, as OpenAI sends it in a last chunk without choices.
	usage, _ := json.Marshal(openai.ChatCompletionStreamResponse{ID: id, Object: "chat.completion.chunk", Created: time.Now().Unix(), Model: cr.Model,
		Choices: []openai.ChatCompletionStreamChoice{},
		Usage:   &openai.Usage{PromptTokens: words(cr.Messages), CompletionTokens: len(strings.Fields(msg.Content)), TotalTokens: words(cr.Messages) + len(strings.Fields(msg.Content))}})
	events = append(events, []byte("data: "+string(usage)+"\n\n"), []byte("data: [DONE]\n\n"))
	var body io.ReadCloser
	if o.TokenDelay <= 0 || nWords < 2 {
		body = io.NopCloser(bytes.NewReader(bytes.Join(events, nil)))
	} else {
		pr, pw := io.Pipe()
		go func() {
			for i, e := range events {
				if i > 0 && i < nWords { // a pause before each word but the first
					if err := sleep(req.Context(), o.TokenDelay); err != nil {
						pw.CloseWithError(err)
						return
					}
				}
				if _, err := pw.Write(e); err != nil {
					return
				}
			}
			pw.Close()
		}()
		body = pr
	}
	return &http.Response{
		StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": []string{"text/event-stream"}},
		Body:    body,
		Request: req,
	}
}

func find(re *regexp.Regexp, s, def string) string {
	if m := re.FindStringSubmatch(s); m != nil && strings.TrimSpace(m[1]) != "" {
		return strings.TrimSpace(m[1])
	}
	return def
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

func jsonResponse(req *http.Request, status int, v any) *http.Response {
	b, _ := json.Marshal(v)
	return &http.Response{
		StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": []string{"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(b)),
		ContentLength: int64(len(b)),
		Request:       req,
	}
}

// afterLastUser returns the last user message and the tool results that
// followed it.
func afterLastUser(convo []openai.ChatCompletionMessage) (openai.ChatCompletionMessage, []openai.ChatCompletionMessage) {
	for i := len(convo) - 1; i >= 0; i-- {
		if convo[i].Role == openai.ChatMessageRoleUser {
			var results []openai.ChatCompletionMessage
			for _, m := range convo[i+1:] {
				if m.Role == openai.ChatMessageRoleTool {
					results = append(results, m)
				}
			}
			return convo[i], results
		}
	}
	return openai.ChatCompletionMessage{}, nil
}

// nextCall is the next tool call the user's text asks for, given the
// results so far: the time (get_current_time), a unit conversion, a
// calculation, a note to keep, the notes to list — each when a tool of that
// name is offered (an MCP tool under its server's prefix too) — and then
// every "use <tool> with {json}" whose tool is offered under that name, in
// that order.
func nextCall(text string, tools []openai.Tool, results []openai.ChatCompletionMessage) (openai.ToolCall, bool) {
	offered := func(tool string) string {
		for _, t := range tools {
			if t.Function != nil && (t.Function.Name == tool || strings.HasSuffix(t.Function.Name, "_"+tool)) {
				return t.Function.Name
			}
		}
		return ""
	}
	type want struct{ tool, args string }
	var wants []want
	if timeRE.MatchString(text) {
		wants = append(wants, want{TimeTool.Name, "{}"})
	}
	if m := convertRE.FindStringSubmatch(text); m != nil {
		args, _ := json.Marshal(map[string]any{"value": json.Number(m[1]), "from": m[2], "to": m[3]})
		wants = append(wants, want{"convert_units", string(args)})
	}
	if m := calcRE.FindStringSubmatch(text); m != nil {
		args, _ := json.Marshal(map[string]string{"expression": strings.TrimSpace(m[1])})
		wants = append(wants, want{"calculate", string(args)})
	}
	if m := noteRE.FindStringSubmatch(text); m != nil {
		args, _ := json.Marshal(map[string]string{"text": strings.TrimSpace(m[1])})
		wants = append(wants, want{"create_note", string(args)})
	}
	if listRE.MatchString(text) {
		wants = append(wants, want{"list_notes", "{}"})
	}
	for _, m := range useRE.FindAllStringSubmatch(text, -1) {
		wants = append(wants, want{"=" + m[1], m[2]})
	}
	done := 0
	for _, w := range wants {
		name := offered(w.tool)
		if exact, ok := strings.CutPrefix(w.tool, "="); ok {
			name = ""
			for _, t := range tools {
				if t.Function != nil && t.Function.Name == exact {
					name = exact
				}
			}
		}
		if name == "" {
			continue
		}
		if done < len(results) {
			done++
			continue
		}
		return openai.ToolCall{ID: fmt.Sprintf("call_offline_%d", done+1), Type: openai.ToolTypeFunction,
			Function: openai.FunctionCall{Name: name, Arguments: w.args}}, true
	}
	return openai.ToolCall{}, false
}
