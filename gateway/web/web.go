// Package web is the gateway's pages for people: the GraphiQL playground
// on / (playground.go, files in playground/) and the chat page on /chat
// (chat.go, files in chat/), embedded in the gateway.
package web

import (
	"embed"

	"github.com/go-chi/chi/v5"
)

//go:embed playground chat
var files embed.FS

// Mount serves the playground of the GraphQL endpoint (titled title) on /
// (with playground false, a page that says it is disabled: only trusted
// documents run) and the chat page on ChatPath.
func Mount(r chi.Router, title, endpoint string, playground bool) {
	if !playground {
		r.Handle("/", PlaygroundDisabled(title))
	} else {
		r.Handle("/", Playground(title, endpoint))
	}
	r.Handle(AssetsPath+"*", PlaygroundAssets())
	chat := Chat()
	r.Handle(ChatPath, chat)
	r.Handle(ChatPath+"/*", chat)
}
