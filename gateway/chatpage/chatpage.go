// Package chatpage serves a minimal chat page at /chat: type a message,
// watch the reply stream (chatStream), read earlier history pages on scroll
// (conversation with before), stop a turn (cancelChat). Plain HTML, CSS and
// JavaScript embedded in the gateway: no build step, no third-party code,
// nothing fetched from the internet.
package chatpage

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed assets
var assets embed.FS

// Path is where the page is served; its files are under Path+"/assets/".
const Path = "/chat"

// csp allows the page's own files and connections to its own origin only.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the page and its files.
func Handler() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err)
	}
	files := http.StripPrefix(Path+"/assets/", http.FileServerFS(sub))
	page, err := fs.ReadFile(sub, "chat.html")
	if err != nil {
		panic(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", csp)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		if r.URL.Path == Path || r.URL.Path == Path+"/" {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-cache")
			w.Write(page)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=300")
		files.ServeHTTP(w, r)
	})
}
