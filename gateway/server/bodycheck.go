package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// checkedBody runs a gqlgen transport that writes a body it cannot decode
// to the standard logger, body and all (SSE, MultipartMixed), on a body
// decoded here first: one it cannot decode is answered here, in the words
// the error presenter rewrites for every transport (bodyError), and is
// never logged.
type checkedBody struct{ graphql.Transport }

func (t checkedBody) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	b, err := io.ReadAll(r.Body)
	var gerr *gqlerror.Error
	if err != nil {
		gerr = gqlerror.Errorf("could not read request body: %v", err)
	} else if err = json.Unmarshal(b, &graphql.RawParams{}); err != nil {
		gerr = gqlerror.Errorf("json request body could not be decoded: %v", err)
	}
	if gerr != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		writeResponse(w, exec.DispatchError(r.Context(), gqlerror.List{gerr}))
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	t.Transport.Do(w, r, exec)
}
