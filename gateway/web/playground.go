package web

import (
	"html"
	"io/fs"
	"net/http"

	gqlplayground "github.com/99designs/gqlgen/graphql/playground"
)

// The playground is GraphiQL (gqlgen's page) with its scripts and styles
// served from the gateway itself, so it works without internet access. The
// files (playground/) are the npm packages graphiql@4.1.2, react@18.2.0 and
// react-dom@18.2.0 (MIT, licences beside them); the browser checks each
// against the Subresource Integrity hash gqlgen pins for its CDN copy.

// AssetsPath is where the playground's files are served.
const AssetsPath = "/playground/assets/"

// Subresource Integrity hashes of the embedded files (the same as gqlgen's).
const (
	graphiqlJSSRI  = "sha256-hnImuor1znlJkD/FOTL3jayfS/xsyNoP04abi8bFJWs="
	graphiqlCSSSRI = "sha256-MEh+B2NdMSpj9kexQNN3QKc8UzMrCXW/Sx/phcpuyIU="
	reactSRI       = "sha256-S0lp+k7zWUMk2ixteM6HZvu8L9Eh//OVrt+ZfbCpmgY="
	reactDOMSRI    = "sha256-IXWO0ITNDjfnNXIu5POVfqlgYoop36bDzhodR6LW5Pc="
)

// Playground is the GraphiQL page for the GraphQL endpoint. The editor state
// (query, variables) is kept in the URL, so a link opens a ready query.
func Playground(title, endpoint string) http.Handler {
	return gqlplayground.Handler(title, endpoint,
		gqlplayground.WithGraphiqlVersion(AssetsPath+"graphiql.min.js", AssetsPath+"graphiql.min.css", graphiqlJSSRI, graphiqlCSSSRI),
		gqlplayground.WithGraphiqlReactVersion(AssetsPath+"react.production.min.js", AssetsPath+"react-dom.production.min.js", reactSRI, reactDOMSRI),
		gqlplayground.WithGraphiqlPersistStateInURL(true),
		gqlplayground.WithStoragePrefix("daca-"),
	)
}

// PlaygroundDisabled is the page on / when only trusted documents run
// (GRAPHQL_TRUSTED_DOCUMENTS=require): the playground's queries would all
// be refused, so it says why instead of failing strangely.
func PlaygroundDisabled(title string) http.Handler {
	page := []byte(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>` + html.EscapeString(title) + `</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>` + html.EscapeString(title) + `</h1>
<p>The GraphQL playground is disabled: this gateway runs only trusted documents (<code>GRAPHQL_TRUSTED_DOCUMENTS=require</code>) —
the operations its own clients were built with, by their <code>documentId</code>.</p>
<p>The <a href="` + ChatPath + `">chat page</a> works: its operations are trusted.</p>
</body></html>`)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		w.Write(page)
	})
}

// PlaygroundAssets serves the playground's files under AssetsPath.
func PlaygroundAssets() http.Handler {
	sub, err := fs.Sub(files, "playground")
	if err != nil {
		panic(err)
	}
	files := http.StripPrefix(AssetsPath, http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=86400")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}
