package web

import (
	"io/fs"
	"net/http"
	"path"
	"regexp"
)

// The chat page: type a message, watch the reply stream (chatStream), read
// earlier history pages on scroll (conversation with before), stop a turn
// (cancelChat). Plain HTML, CSS and JavaScript (chat/): no build step, no
// third-party code, nothing fetched from the internet.

// ChatPath is where the chat page is served; its files are under
// ChatChatPath+"/assets/".
const ChatPath = "/chat"

// csp allows the page's own files and connections to its own origin only.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Chat serves the chat page and its files.
func Chat() http.Handler {
	sub, err := fs.Sub(files, "chat")
	if err != nil {
		panic(err)
	}
	files := http.StripPrefix(ChatPath+"/assets/", http.FileServerFS(sub))
	page, err := fs.ReadFile(sub, "chat.html")
	if err != nil {
		panic(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", csp)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		if r.URL.Path == ChatPath || r.URL.Path == ChatPath+"/" {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-cache")
			w.Write(page)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=300")
		files.ServeHTTP(w, r)
	})
}

// operation is a GraphQL operation written as a template literal in
// chat.js (none has a ${} in it: ChatOperations' test checks).
var operation = regexp.MustCompile("`((?:query|mutation|subscription)\\b[^`]*)`")

// ChatOperations are the GraphQL documents the chat page sends, exactly as
// it sends them: the gateway trusts them (GRAPHQL_TRUSTED_DOCUMENTS), so
// the page works when only trusted documents run.
func ChatOperations() []string {
	b, err := fs.ReadFile(files, path.Join("chat", "chat.js"))
	if err != nil {
		panic(err)
	}
	var out []string
	for _, m := range operation.FindAllSubmatch(b, -1) {
		out = append(out, string(m[1]))
	}
	return out
}
