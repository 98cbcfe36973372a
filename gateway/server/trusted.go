package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/daca-go/daca/gateway/trusted"
	"github.com/daca-go/daca/internal/logging"
)

// trustedDocuments runs the trusted documents (GRAPHQL_TRUSTED_DOCUMENTS):
// a request naming a document — GraphQL over HTTP's documentId, or
// Apollo's persisted query hash — gets its text from the manifest; under
// require a document that is not in it does not run (an id not listed,
// or a text sent whole that is not a listed one), and APQ registers
// nothing (the extension is not installed: graphQL); under log it runs and
// is logged (its operation name and hash, never its text).
type trustedDocuments struct {
	mode trusted.Mode
	m    *trusted.Manifest
	log  *slog.Logger
}

var (
	_ graphql.HandlerExtension          = trustedDocuments{}
	_ graphql.OperationParameterMutator = trustedDocuments{}
)

func (trustedDocuments) ExtensionName() string                   { return "TrustedDocuments" }
func (trustedDocuments) Validate(graphql.ExecutableSchema) error { return nil }

// documentIDExtension carries a request's documentId (documentIDs moves
// it there: gqlgen's request parameters have no field for it).
const documentIDExtension = "documentId"

func (t trustedDocuments) MutateOperationParameters(ctx context.Context, p *graphql.RawParams) *gqlerror.Error {
	id, apq := requestedDocument(p)
	if id != "" {
		doc, ok := t.m.Lookup(id)
		switch {
		case ok && p.Query == "":
			p.Query = doc
			return nil
		case ok && p.Query == doc:
			return nil
		case t.mode == trusted.Require:
			return notInList("the document is not one of this gateway's trusted documents")
		case !apq: // a documentId names a listed document or none
			return notFound("no trusted document has this documentId")
		}
		return nil // Apollo's APQ takes it (off, log)
	}
	if p.Query == "" || t.m.Trusts(p.Query) {
		return nil
	}
	switch t.mode {
	case trusted.Require:
		return notInList("only trusted documents run on this gateway: send a documentId (or Apollo's persisted query hash) from its manifest")
	case trusted.Log:
		logging.From(ctx, t.log).Warn("an operation that is not a trusted document ran", "operation", p.OperationName, "sha256", trusted.Hash(p.Query))
	}
	return nil
}

// requestedDocument is the id a request names: its documentId, or
// Apollo's persisted query hash (apq).
func requestedDocument(p *graphql.RawParams) (id string, apq bool) {
	if v, ok := p.Extensions[documentIDExtension].(string); ok && v != "" {
		return v, false
	}
	if pq, ok := p.Extensions["persistedQuery"].(map[string]any); ok {
		if h, ok := pq["sha256Hash"].(string); ok && h != "" {
			return h, true
		}
	}
	return "", false
}

func notInList(msg string) *gqlerror.Error {
	err := gqlerror.Errorf("%s", msg)
	err.Extensions = map[string]any{"code": "PERSISTED_QUERY_NOT_IN_LIST"}
	return err
}

func notFound(msg string) *gqlerror.Error {
	err := gqlerror.Errorf("%s", msg)
	err.Extensions = map[string]any{"code": "PERSISTED_QUERY_NOT_FOUND"}
	return err
}

// documentIDs moves a request's documentId (GraphQL over HTTP, persisted
// documents: a JSON body's "documentId", or GET's documentId parameter)
// into its extensions, where trustedDocuments reads it.
func documentIDs(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			q := r.URL.Query()
			if id := q.Get("documentId"); id != "" {
				ext := map[string]any{}
				if e := q.Get("extensions"); e != "" {
					json.Unmarshal([]byte(e), &ext)
				}
				ext[documentIDExtension] = id
				b, _ := json.Marshal(ext)
				q.Set("extensions", string(b))
				q.Del("documentId")
				r.URL.RawQuery = q.Encode()
			}
		case http.MethodPost:
			b, err := io.ReadAll(r.Body)
			if err != nil { // over the limit: the transport says so
				r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b), errReader{err}))
				break
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
			if !bytes.Contains(b, []byte(`"documentId"`)) {
				break
			}
			var body map[string]json.RawMessage
			var id string
			if json.Unmarshal(b, &body) != nil || json.Unmarshal(body["documentId"], &id) != nil || id == "" {
				break // the transport answers a body it cannot read
			}
			ext := map[string]any{}
			json.Unmarshal(body["extensions"], &ext)
			ext[documentIDExtension] = id
			body["extensions"], _ = json.Marshal(ext)
			delete(body, "documentId")
			nb, _ := json.Marshal(body)
			r.Body = io.NopCloser(bytes.NewReader(nb))
			r.ContentLength = int64(len(nb))
		}
		next.ServeHTTP(w, r)
	})
}

// errReader answers err: a body read again fails as the first read did.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
